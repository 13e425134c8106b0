/**
 * The counters mean what their names say: edb_messages_received_total counts PUBLISH from
 * clients only; $SYS updates and rule outputs have their own series
 * (edb_messages_published_by_broker_total{origin}); edb_retained_messages and the status
 * page's retained count leave the $SYS topics out.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { collect, connectClient } from '../helpers/mqttjs.js';

let b: TestBroker;
let http: string;
beforeAll(async () => {
  b = await startBroker({ sysInterval: 1, httpPort: 0 });
  http = `http://127.0.0.1:${b.server.port('http')}`;
});
afterAll(() => b?.stop());

function series(metrics: string, name: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`no ${name} in /metrics`);
  return Number(line.slice(name.length + 1));
}

describe('message and retained counts', () => {
  it('client publishes apart from $SYS and rule outputs; retained without $SYS', async () => {
    const stats = b.server.broker.stats;
    // $SYS has published (retained) at least once
    await until(() => (stats.messagesPublishedByBroker['sys'] ?? 0) > 0 && b.server.broker.retained.size > 0, 5000, '$SYS updates');
    expect(stats.messagesReceived).toBe(0);
    expect(b.server.broker.retainedCount()).toBe(0);

    // a rule: every message on plant/+ is republished under plant/+/seen/
    const doc = { filters: [{ topic: 'plant/+', subtopic: 'seen/', statements: [{ condition: '$t > 0', new_payload: '' }] }], rules: [] };
    const res = await fetch(`${http}/rules`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(doc) });
    expect(res.status).toBe(200);

    const sub = await connectClient(b.port, { clientId: 'counts-sub' });
    const got = collect(sub);
    await sub.subscribeAsync('plant/#', { qos: 1 });
    const pub = await connectClient(b.port, { clientId: 'counts-pub' });
    await pub.publishAsync('plant/1', '{"t": 5}', { qos: 1, retain: true });
    await pub.publishAsync('plant/2', '{"t": 7}', { qos: 1 });
    await pub.publishAsync('other', 'x', { qos: 1 });
    // two inputs and their two outputs arrive
    await until(() => got.messages.length === 4, 5000, 'the messages and the rule outputs');
    expect(got.messages.map((m) => m.topic).sort()).toEqual(['plant/1', 'plant/1/seen/', 'plant/2', 'plant/2/seen/']);

    expect(stats.messagesReceived).toBe(3); // the three PUBLISH of the client, nothing else
    expect(stats.messagesPublishedByBroker['rules']).toBe(2);
    const retainedAll = b.server.broker.retained.size;
    // plant/1 and its retained output plant/1/seen/ (a rule output keeps the retain flag); $SYS left out
    expect(b.server.broker.retainedCount()).toBe(2);
    expect(retainedAll).toBeGreaterThan(2);

    const metrics = await (await fetch(`${http}/metrics`)).text();
    expect(series(metrics, 'edb_messages_received_total')).toBe(3);
    expect(series(metrics, 'edb_retained_messages')).toBe(2);
    expect(series(metrics, 'edb_messages_published_by_broker_total{origin="rules"}')).toBe(2);
    expect(series(metrics, 'edb_messages_published_by_broker_total{origin="sys"}')).toBeGreaterThan(0);
    const status = (await (await fetch(`${http}/api/status`)).json()) as { retained: number; totals: { messagesReceived: number } };
    expect(status.retained).toBe(2);
    expect(status.totals.messagesReceived).toBe(3);
    await sub.endAsync();
    await pub.endAsync();
  });
});
