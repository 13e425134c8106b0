// The runtime matches each topic once and keeps the result in the module under a slot
// (src/rules/runtime.ts, assembly/rules/engine.ts). These tests push far more distinct
// topics than the cache holds, so slots are reused many times, and check every message
// against the reference interpreter, with rules that buffer per concrete topic.
import { afterAll, describe, expect, test, vi } from 'vitest';
import { checkDocument } from '../../src/rules/check.js';
import { RulesCompiler } from '../../src/rules/compiler.js';
import { ReferenceEngine } from '../../src/rules/reference.js';
import { TOPIC_CACHE } from '../../src/rules/runtime.js';

vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });
const compiler = new RulesCompiler();
afterAll(() => compiler.close());

const document = {
  filters: [
    { topic: 'plant/+/temp', subtopic: 'hot', statements: [{ condition: '$v > 50', new_payload: '' }] },
    { topic: 'plant/#', subtopic: 'any', statements: [{ condition: '$v < 0', new_payload: 'cold' }] },
  ],
  rules: [
    {
      statements: [
        { id: 1, topic: 'line/+/a', payload_type: 'int', condition: '$v > 10' },
        { id: 2, topic: 'line/+/b', payload_type: 'int', condition: '$v > 20' },
      ],
      logic: [{ operations: '$1 and $2', new_topic: 'line/alarm', new_payload: '' }],
    },
  ],
};

const topicFor = (i: number): string => {
  switch (i % 5) {
    case 0:
      return `plant/${i}/temp`;
    case 1:
      return `plant/${i}/deep/level`;
    case 2:
      return `line/${i % 997}/a`;
    case 3:
      return `line/${(i - 1) % 997}/b`;
    default:
      return `other/${i}`;
  }
};

const outputs = (list: readonly { topic: string; payload: Buffer }[]): string[] => list.map((o) => `${o.topic} ${o.payload.toString()}`);

describe('topic cache', () => {
  test('reuses its slots over three times as many topics as it holds (each seen twice), agreeing with the reference', async () => {
    const checked = checkDocument(document);
    const { program } = await compiler.compileDocument(checked);
    const reference = new ReferenceEngine(checked);
    const memory = (program as unknown as { exports: { memory: { buffer: ArrayBuffer } } }).exports.memory;
    let fired = 0;
    let sizeAfterFirstWrap = 0;
    for (let i = 0; i < 3 * TOPIC_CACHE + 500; i++) {
      const topic = topicFor(i);
      const payload = Buffer.from(JSON.stringify({ v: (i * 37) % 101 - 20 }));
      // a new topic, then the same again from its slot: as many hits as topics, so slots are reused
      for (const pass of ['new', 'again']) {
        const got = outputs(program.process(topic, payload));
        expect(got, `message ${i} (${pass}) on ${topic}`).toEqual(outputs(reference.process(topic, payload)));
        fired += got.length;
      }
      if (i === TOPIC_CACHE + 10) sizeAfterFirstWrap = memory.buffer.byteLength;
    }
    expect(fired).toBeGreaterThan(1000);
    // the blocks of forgotten topics are freed when their slots are reused
    expect(memory.buffer.byteLength).toBe(sizeAfterFirstWrap);
  });

  test('a new topic on every message: it stops keeping them for a while, and still agrees with the reference', async () => {
    const checked = checkDocument(document);
    const { program } = await compiler.compileDocument(checked);
    const reference = new ReferenceEngine(checked);
    const internals = program as unknown as { bypass: number; topics: Map<string, unknown> };
    let bypassed = false;
    for (let i = 0; i < 2 * TOPIC_CACHE + 500; i++) {
      const topic = topicFor(i);
      const payload = Buffer.from(JSON.stringify({ v: (i * 37) % 101 - 20 }));
      expect(outputs(program.process(topic, payload)), `message ${i} on ${topic}`).toEqual(outputs(reference.process(topic, payload)));
      if (internals.bypass > 0) bypassed = true;
    }
    expect(bypassed).toBe(true);
    expect(internals.topics.size).toBe(0); // nothing kept meanwhile
  });
});
