// Rules memory after kill -9 (fault injection): durable storage (the default) checkpoints
// the rules section every second, so windows, prev and deadband built before the kill are
// there after the start; what "no restart" gives is asked of POST /test over the sequence.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const DOC = {
  filters: [
    {
      topic: 'line/+/v',
      subtopic: 'report',
      statements: [
        { condition: 'deadband($v, 2)', new_payload: { v: '{{ $v }}', prev: '{{ prev($v) }}', avg3: '{{ avg($v, 3) }}', max5: '{{ max($v, 5) }}', n: '{{ count(4) }}', changed: '{{ changed($s) }}' } },
        { condition: 'delta($v) < -3', new_payload: 'drop {{ delta($v) }} on {{ topic(2) }}' },
      ],
    },
  ],
};
const running: BrokerProcess[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((b) => b.stop('SIGKILL')));
});

async function start(dataDir: string): Promise<BrokerProcess> {
  const b = await startBrokerProcess({ EDB_DATA_DIR: dataDir, EDB_RULES_PORT: '0' }, ['mqtt', 'rules'], 120_000);
  running.push(b);
  return b;
}

async function publishAll(b: BrokerProcess, messages: [string, string][]): Promise<{ topic: string; payload: string }[]> {
  const sub = await mqtt.connectAsync({ port: b.ports['mqtt']!, host: '127.0.0.1', reconnectPeriod: 0 });
  const got: { topic: string; payload: string }[] = [];
  sub.on('message', (topic, payload) => got.push({ topic, payload: payload.toString() }));
  await sub.subscribeAsync(['line/+/v/report'], { qos: 1 });
  const pub = await mqtt.connectAsync({ port: b.ports['mqtt']!, host: '127.0.0.1', reconnectPeriod: 0 });
  for (const [topic, payload] of messages) await pub.publishAsync(topic, payload, { qos: 1 });
  // a marker message on its own subscription: everything before it has been delivered
  await sub.subscribeAsync('marker', { qos: 1 });
  const done = new Promise<void>((resolve) => sub.on('message', (t) => t === 'marker' && resolve()));
  await pub.publishAsync('marker', 'x', { qos: 1 });
  await done;
  await pub.endAsync();
  await sub.endAsync();
  return got.filter((g) => g.topic !== 'marker');
}

describe('fr_script memory after kill -9', () => {
  it('durable storage (the default): after kill -9 the memory comes back from the checkpoint taken every second', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-rules-memory-kill-'));
    const first = await start(dataDir);
    const up = await fetch(`http://127.0.0.1:${first.ports['rules']}/`, { method: 'POST', body: JSON.stringify(DOC), headers: { 'content-type': 'application/json' } });
    expect(up.status).toBe(200);
    const v = (topic: string, value: number, s = 'a'): [string, string] => [topic, JSON.stringify({ v: value, s })];
    const before: [string, string][] = [v('line/1/v', 10), v('line/1/v', 11), v('line/1/v', 13, 'b'), v('line/1/v', 12)];
    const after: [string, string][] = [v('line/1/v', 14, 'b'), v('line/1/v', 8)];
    await publishAll(first, before);
    await new Promise((r) => setTimeout(r, 2500)); // past the next checkpoint (every second)
    await first.stop('SIGKILL');
    running.splice(running.indexOf(first), 1);

    const second = await start(dataDir);
    const got2 = await publishAll(second, after);
    const all = [...before, ...after];
    const res = await fetch(`http://127.0.0.1:${second.ports['rules']}/test`, { method: 'POST', body: JSON.stringify({ messages: all.map(([topic, payload]) => ({ topic, payload })) }), headers: { 'content-type': 'application/json' } });
    const expected = ((await res.json()) as { outputs: { after: number; topic: string; payload: string }[] }).outputs;
    expect(got2).toEqual(expected.filter((o) => o.after >= before.length).map(({ topic, payload }) => ({ topic, payload })));
    // 14 is within 2 of the reference 13 kept from before the kill: only 8 reports, with the window from before, and drops by 6
    expect(got2).toEqual([
      { topic: 'line/1/v/report', payload: JSON.stringify({ v: 8, prev: 14, avg3: (12 + 14 + 8) / 3, max5: 14, n: 4, changed: true }) },
      { topic: 'line/1/v/report', payload: 'drop -6 on 1' },
    ]);
  }, 300_000);
});
