import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IPublishPacket, ISubackPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';
import { collect, connectClient, connectCollecting } from '../helpers/mqttjs.js';

let b: TestBroker;
beforeAll(async () => {
  b = await startBroker();
});
afterAll(() => b.stop());

let n = 0;
const uid = (p: string): string => `${p}-${++n}`;

async function subscribeAndSettle(c: RawClient, topic: string, qos: 0 | 1 | 2 = 0): Promise<IPublishPacket[]> {
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos }] });
  await c.next<ISubackPacket>('suback');
  await c.ping();
  return c.all<IPublishPacket>('publish');
}

describe('retained messages [MQTT-5-3.3.1-5] to [MQTT-5-3.3.1-7]', () => {
  it('set, replace, clear with an empty payload; delivered on subscribe with RETAIN 1', async () => {
    const topic = uid('r');
    const { client: p } = await RawClient.connect(b.port, { clientId: uid('p') });
    const before = b.server.broker.retainedCount();
    p.send({ cmd: 'publish', topic, payload: Buffer.from('v1'), qos: 0, retain: true, dup: false });
    await p.ping();
    expect(b.server.broker.retainedCount()).toBe(before + 1);

    const s1 = (await RawClient.connect(b.port, { clientId: uid('s') })).client;
    const got1 = await subscribeAndSettle(s1, topic);
    expect(got1.map((x) => [x.payload.toString(), x.retain])).toEqual([['v1', true]]);

    p.send({ cmd: 'publish', topic, payload: Buffer.from('v2'), qos: 1, messageId: 1, retain: true, dup: false });
    await p.next('puback');
    expect(b.server.broker.retainedCount()).toBe(before + 1); // replaced, not added
    const s2 = (await RawClient.connect(b.port, { clientId: uid('s') })).client;
    const got2 = await subscribeAndSettle(s2, topic, 2);
    expect(got2.map((x) => [x.payload.toString(), x.retain, x.qos])).toEqual([['v2', true, 1]]); // QoS min(message, subscription)

    p.send({ cmd: 'publish', topic, payload: Buffer.alloc(0), qos: 0, retain: true, dup: false });
    await p.ping();
    expect(b.server.broker.retainedCount()).toBe(before);
    const s3 = (await RawClient.connect(b.port, { clientId: uid('s') })).client;
    expect(await subscribeAndSettle(s3, topic)).toEqual([]);
    for (const c of [p, s1, s2, s3]) c.destroy();
  });

  it('the empty retained PUBLISH is itself forwarded to current subscribers', async () => {
    const topic = uid('rclear');
    const { client: s } = await RawClient.connect(b.port, { clientId: uid('s') });
    await subscribeAndSettle(s, topic);
    const { client: p } = await RawClient.connect(b.port, { clientId: uid('p') });
    p.send({ cmd: 'publish', topic, payload: Buffer.alloc(0), qos: 0, retain: true, dup: false });
    const got = await s.next<IPublishPacket>('publish');
    expect(got.payload.length).toBe(0);
    p.destroy();
    s.destroy();
  });

  it('wildcard subscriptions get every matching retained message, $-topics only for $ filters', async () => {
    const base = uid('rw');
    const { client: p } = await RawClient.connect(b.port, { clientId: uid('p') });
    for (const t of ['a', 'b/c', 'b/d/e']) p.send({ cmd: 'publish', topic: `${base}/${t}`, payload: Buffer.from(t), qos: 0, retain: true, dup: false });
    p.send({ cmd: 'publish', topic: `$${base}/hidden`, payload: Buffer.from('hidden'), qos: 0, retain: true, dup: false });
    await p.ping();
    const { client: s } = await RawClient.connect(b.port, { clientId: uid('s') });
    const all = await subscribeAndSettle(s, `${base}/#`);
    expect(all.map((x) => x.payload.toString()).sort()).toEqual(['a', 'b/c', 'b/d/e']);
    const { client: s2 } = await RawClient.connect(b.port, { clientId: uid('s') });
    const plus = await subscribeAndSettle(s2, `${base}/+/c`);
    expect(plus.map((x) => x.payload.toString())).toEqual(['b/c']);
    const { client: s3 } = await RawClient.connect(b.port, { clientId: uid('s') });
    const hash = await subscribeAndSettle(s3, '#');
    expect(hash.map((x) => x.payload.toString())).not.toContain('hidden');
    for (const c of [p, s, s2, s3]) c.destroy();
  });

  it('MQTT.js 3.1.1 and 5 clients receive retained messages with the retain flag', async () => {
    const topic = uid('rjs');
    const pub = await connectClient(b.port, { clientId: uid('p'), protocolVersion: 4 });
    await pub.publishAsync(topic, 'kept', { qos: 1, retain: true });
    for (const protocolVersion of [4, 5] as const) {
      const sub = await connectClient(b.port, { clientId: uid('s'), protocolVersion });
      const got = collect(sub);
      await sub.subscribeAsync(topic, { qos: 1 });
      const [m] = await got.wait(1);
      expect(m!.payload.toString()).toBe('kept');
      expect(m!.packet.retain).toBe(true);
      await sub.endAsync();
    }
    await pub.publishAsync(topic, '', { qos: 1, retain: true });
    await pub.endAsync();
  });

  it('a retained message with a Message Expiry Interval is not delivered once expired', async () => {
    const topic = uid('rexp');
    const { client: p } = await RawClient.connect(b.port, { clientId: uid('p') });
    p.send({ cmd: 'publish', topic, payload: Buffer.from('soon'), qos: 0, retain: true, dup: false, properties: { messageExpiryInterval: 1 } });
    await p.ping();
    const { client: s } = await RawClient.connect(b.port, { clientId: uid('s') });
    const fresh = await subscribeAndSettle(s, topic);
    expect(fresh.map((x) => x.payload.toString())).toEqual(['soon']);
    expect(fresh[0]!.properties?.messageExpiryInterval).toBe(1);
    await new Promise((r) => setTimeout(r, 1100));
    const { client: s2 } = await RawClient.connect(b.port, { clientId: uid('s') });
    expect(await subscribeAndSettle(s2, `${topic}/#`)).toEqual([]);
    for (const c of [p, s, s2]) c.destroy();
  });
});

describe('many retained messages', () => {
  it('a wildcard subscription gets every retained message, even more than the outbound queue bound', async () => {
    const own = await startBroker({ maxQueuedMessages: 100, maxQueuedBytes: 64 * 1024 });
    try {
      const N = 3000;
      const p = (await RawClient.connect(own.port, { clientId: 'many-p' }, 4)).client;
      const frames: Buffer[] = [];
      const { default: mqttPacket } = await import('mqtt-packet');
      for (let i = 0; i < N; i++) frames.push(mqttPacket.generate({ cmd: 'publish', topic: `many/${i}`, payload: Buffer.alloc(200, 1), qos: 0, retain: true, dup: false }, { protocolVersion: 4 }));
      p.sendBytes(Buffer.concat(frames));
      await p.ping();
      expect(own.server.broker.retainedCount()).toBe(N);
      for (const qos of [0, 1] as const) {
        const { client: sub, got } = await connectCollecting(own.port, { clientId: `many-s${qos}`, protocolVersion: 4 });
        await sub.subscribeAsync('many/#', { qos });
        const msgs = await got.wait(N, 10_000);
        expect(new Set(msgs.map((m) => m.topic)).size).toBe(N);
        expect(msgs.every((m) => m.packet.retain && m.payload.length === 200)).toBe(true);
        await sub.endAsync();
      }
      expect(own.server.broker.stats.dropped['queue_full'] ?? 0).toBe(0);
      p.destroy();
    } finally {
      await own.stop();
    }
  });
});
