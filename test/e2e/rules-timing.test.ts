/**
 * Time spent per filter and per rule (issue 13 §2): a document uploaded over HTTP, messages
 * from a real MQTT client, the histograms read from /metrics and the console's
 * /api/rules/parts. One message in 32 is timed (the first included) and weighted by 32.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { closeAll, connectClient } from '../helpers/mqttjs.js';

const DOC = {
  filters: [
    { topic: 'plant/+/temp', subtopic: 'alert', statements: [{ condition: "avg($c, '10m') > 30", new_payload: 'hot' }, { condition: 'deadband($c, 2)', new_payload: '' }] },
    { topic: 'never/matched', subtopic: 'x', statements: [{ condition: '$c > 1' }] },
  ],
  rules: [
    {
      statements: [{ id: 1, topic: 'plant/+/temp', payload_type: 'float', condition: '$c > 30' }],
      logic: [{ operations: '$1', new_topic: 'hot', new_payload: 'x' }],
    },
  ],
};

/** The samples of one histogram series: bucket (le -> cumulative count), sum, count. */
function series(metrics: string, name: string, labels: string): { buckets: [string, number][]; sum: number; count: number } {
  const lines = metrics.split('\n');
  const value = (line: string | undefined): number => Number(line?.split(' ').pop());
  const buckets = lines
    .filter((l) => l.startsWith(`${name}_bucket{${labels}`) || (labels === '' && l.startsWith(`${name}_bucket{le=`)))
    .map((l): [string, number] => [/le="([^"]+)"/.exec(l)![1]!, value(l)]);
  const one = (suffix: string): number => value(lines.find((l) => l.startsWith(`${name}_${suffix}${labels === '' ? ' ' : `{${labels}}`}`)));
  return { buckets, sum: one('sum'), count: one('count') };
}

describe('time spent per filter and per rule', () => {
  let dir: string;
  let server: EdbServer;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edb-rules-timing-'));
    server = await startEdb(testConfig({ httpPort: 0, rulesPort: 0, dataDir: dir }), silentLogger());
  }, 120_000);
  afterAll(async () => {
    await closeAll(...clients);
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('histograms on /metrics and in the console\'s live counts, counts estimating the evaluations', async () => {
    const up = await fetch(`http://127.0.0.1:${server.port('rules')}/`, { method: 'POST', body: JSON.stringify(DOC) });
    expect(up.status, await up.text()).toBe(200);
    const pub = await connectClient(server.port('mqtt'), { clientId: 'timing-pub' });
    clients.push(pub);
    // 64 messages: messages 1 and 33 are timed, each standing for 32
    for (let i = 0; i < 64; i++) await pub.publishAsync(`plant/${i % 4}/temp`, JSON.stringify({ c: 25 + (i % 10) }), { qos: 1 });
    const http = `http://127.0.0.1:${server.port('http')}`;
    // QoS 1 acknowledged: the engine has run on every message (its hook runs before the PUBACK)
    const metrics = await (await fetch(`${http}/metrics`)).text();
    expect(metrics).toMatch(/^edb_rules_messages_total 64$/m);
    expect(metrics).toContain('# TYPE edb_rules_part_seconds histogram');

    const f0 = series(metrics, 'edb_rules_part_seconds', 'part="filters/0",topic="plant/+/temp"');
    expect(f0.count).toBe(64);
    expect(f0.sum).toBeGreaterThan(0);
    expect(f0.buckets.at(-1)).toEqual(['+Inf', 64]);
    expect(f0.buckets.length).toBe(13);
    for (let b = 1; b < f0.buckets.length; b++) expect(f0.buckets[b]![1]).toBeGreaterThanOrEqual(f0.buckets[b - 1]![1]);
    const r0 = series(metrics, 'edb_rules_part_seconds', 'part="rules/0",topic="plant/+/temp"');
    expect(r0.count).toBe(64);
    expect(r0.sum).toBeGreaterThan(0);
    // a filter whose topic never matched spent nothing
    const f1 = series(metrics, 'edb_rules_part_seconds', 'part="filters/1",topic="never/matched"');
    expect(f1).toMatchObject({ count: 0, sum: 0 });
    // the whole message: at least what its parts took
    const message = series(metrics, 'edb_rules_message_seconds', '');
    expect(message.count).toBe(64);
    expect(message.sum).toBeGreaterThanOrEqual(f0.sum + r0.sum);

    // the console's live counts carry the same figures
    const parts = (await (await fetch(`${http}/api/rules/parts`)).json()) as { part: string; evaluations: number; seconds: { counts: number[]; sum: number } }[];
    const p0 = parts.find((p) => p.part === 'filters/0')!;
    expect(p0.evaluations).toBe(128); // two statements, 64 messages
    expect(p0.seconds.counts.reduce((a, b) => a + b, 0)).toBe(64);
    expect(p0.seconds.sum).toBeCloseTo(f0.sum, 12);
  }, 120_000); // the first non-empty document compiles with asc
});
