// The spec's vectors (test/fixtures/vectors.json) against the WebAssembly engine and the
// reference interpreter, in process. The end-to-end version over MQTT is test/e2e.
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, test, vi } from 'vitest';

// compiling runs asc (seconds; much longer on a loaded shared machine)
vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });
import { parseDocumentText } from '../../src/rules/check.js';
import { RulesCompiler } from '../../src/rules/compiler.js';
import { ReferenceEngine } from '../../src/rules/reference.js';
import type { RuleOutput } from '../../src/rules/runtime.js';
import { vectors, type Vector } from '../helpers/vectors.js';

const compiler = new RulesCompiler();
afterAll(() => compiler.close());

function check(outputs: { after: number; out: RuleOutput }[], expected: Vector['output']): void {
  expect(outputs.map((o) => o.out.topic)).toEqual(expected.map((e) => e.topic));
  expected.forEach((e, i) => {
    const got = outputs[i]!;
    expect(got.after).toBe(e.after);
    if (e.json !== undefined) expect(JSON.parse(got.out.payload.toString('utf8'))).toEqual(e.json);
    else expect(got.out.payload.toString('utf8')).toBe(e.payload);
  });
}

describe('vectors.json', () => {
  vectors.forEach((v, n) => {
    test(`case ${n}: ${v.document}`, async () => {
      const doc = parseDocumentText(readFileSync(`test/fixtures/${v.document}`, 'utf8'));
      const { program } = await compiler.compileDocument(doc);
      const reference = new ReferenceEngine(doc);
      const wasm: { after: number; out: RuleOutput }[] = [];
      const ref: { after: number; out: RuleOutput }[] = [];
      v.input.forEach(([topic, payload], i) => {
        for (const out of program.process(topic, Buffer.from(payload))) wasm.push({ after: i, out });
        for (const out of reference.process(topic, Buffer.from(payload))) ref.push({ after: i, out });
      });
      check(wasm, v.output);
      check(ref, v.output);
      expect(program.counters()).toEqual(reference.counters);
    });
  });
});
