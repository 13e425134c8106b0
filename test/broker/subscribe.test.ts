import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IDisconnectPacket, IPublishPacket, ISubackPacket, IUnsubackPacket, ISubscription } from 'mqtt-packet';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';

let b: TestBroker;
beforeAll(async () => {
  b = await startBroker();
});
afterAll(() => b.stop());

let n = 0;
const uid = (p: string): string => `${p}-${++n}`;
let mid = 0;

async function raw(version: 4 | 5 = 5, clientId = uid('c')): Promise<RawClient> {
  return (await RawClient.connect(b.port, { clientId }, version)).client;
}

async function subscribe(c: RawClient, subs: ISubscription[], properties?: { subscriptionIdentifier?: number }): Promise<number[]> {
  const messageId = ++mid;
  c.send({ cmd: 'subscribe', messageId, subscriptions: subs, ...(properties ? { properties } : {}) });
  const ack = await c.next<ISubackPacket>('suback', (p) => p.messageId === messageId);
  return ack.granted as number[];
}

function pub(c: RawClient, topic: string, payload: string, opts: { qos?: 0 | 1 | 2; retain?: boolean } = {}): void {
  const qos = opts.qos ?? 0;
  c.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, retain: opts.retain ?? false, dup: false, ...(qos > 0 ? { messageId: ++mid } : {}) });
}

/** Publishes from `p`, then proves with a ping that `subs` have been sent everything routed. */
async function settle(p: RawClient, ...subs: RawClient[]): Promise<void> {
  await p.ping();
  for (const s of subs) await s.ping();
}

const payloads = (c: RawClient): string[] => c.all<IPublishPacket>('publish').map((p) => p.payload.toString());

describe('wildcards', () => {
  it('+ matches one level, # matches the rest and the parent', async () => {
    const base = uid('w');
    const plus = await raw();
    const hash = await raw();
    const exact = await raw();
    expect(await subscribe(plus, [{ topic: `${base}/+/x`, qos: 0 }])).toEqual([0]);
    expect(await subscribe(hash, [{ topic: `${base}/#`, qos: 0 }])).toEqual([0]);
    expect(await subscribe(exact, [{ topic: `${base}/a/x`, qos: 0 }])).toEqual([0]);
    const p = await raw();
    for (const t of ['', '/a/x', '/b/x', '/a/y', '/a/x/z', '/a', '//x']) pub(p, `${base}${t}`, t || 'parent');
    await settle(p, plus, hash, exact);
    expect(payloads(plus)).toEqual(['/a/x', '/b/x', '//x']);
    expect(payloads(hash)).toEqual(['parent', '/a/x', '/b/x', '/a/y', '/a/x/z', '/a', '//x']);
    expect(payloads(exact)).toEqual(['/a/x']);
    for (const c of [plus, hash, exact, p]) c.destroy();
  });

  it('[MQTT-5-4.7.2-1] leading wildcards do not match topics starting with $', async () => {
    const all = await raw();
    const plus = await raw();
    const dollar = await raw();
    await subscribe(all, [{ topic: '#', qos: 0 }]);
    await subscribe(plus, [{ topic: '+/x', qos: 0 }]);
    await subscribe(dollar, [{ topic: '$app/#', qos: 0 }]);
    const p = await raw();
    pub(p, '$app/x', 'dollar');
    pub(p, 'app/x', 'plain');
    await settle(p, all, plus, dollar);
    expect(payloads(all).filter((x) => x === 'dollar' || x === 'plain')).toEqual(['plain']);
    expect(payloads(plus)).toEqual(['plain']);
    expect(payloads(dollar)).toEqual(['dollar']);
    for (const c of [all, plus, dollar, p]) c.destroy();
  });

  it('clients may not publish to $SYS (v5 PUBACK 0x87)', async () => {
    const p = await raw();
    const watcher = await raw();
    await subscribe(watcher, [{ topic: '$SYS/#', qos: 0 }]);
    p.send({ cmd: 'publish', topic: '$SYS/broker/fake', payload: Buffer.from('x'), qos: 1, messageId: 5, retain: false, dup: false });
    const ack = await p.next('puback');
    expect((ack as { reasonCode?: number }).reasonCode).toBe(0x87);
    await watcher.ping();
    expect(payloads(watcher)).not.toContain('x');
    p.destroy();
    watcher.destroy();
  });
});

describe('SUBACK / UNSUBACK reason codes, one per filter', () => {
  it('v5: granted QoS or 0x8F per filter, in order', async () => {
    const id = uid('c');
    const c = await raw(5, id);
    const codes = await subscribe(c, [
      { topic: 'ok/a', qos: 2 },
      { topic: 'bad/#/x', qos: 1 },
      { topic: 'ok/b', qos: 1 },
      { topic: 'bad+', qos: 0 },
      { topic: '$share/g', qos: 0 },
      { topic: '$share//x', qos: 0 },
      { topic: 'ok/c', qos: 0 },
    ]);
    expect(codes).toEqual([2, 0x8f, 1, 0x8f, 0x8f, 0x8f, 0]);
    expect([...b.server.broker.sessions.get(id)!.subscriptions.keys()]).toEqual(['ok/a', 'ok/b', 'ok/c']);
    c.destroy();
  });

  it('3.1.1: 0x80 for a refused filter', async () => {
    const c = await raw(4);
    expect(await subscribe(c, [{ topic: 'ok', qos: 1 }, { topic: 'a/#/b', qos: 1 }])).toEqual([1, 0x80]);
    c.destroy();
  });

  it('UNSUBACK: 0x00 for a subscription removed, 0x11 when none existed; no delivery after', async () => {
    const topic = uid('u');
    const c = await raw();
    await subscribe(c, [{ topic, qos: 0 }]);
    c.send({ cmd: 'unsubscribe', messageId: 77, unsubscriptions: [topic, 'never/subscribed'] });
    const ack = await c.next<IUnsubackPacket>('unsuback');
    expect(ack.messageId).toBe(77);
    expect(ack.granted).toEqual([0x00, 0x11]);
    const p = await raw();
    pub(p, topic, 'after');
    await settle(p, c);
    expect(payloads(c)).toEqual([]);
    c.destroy();
    p.destroy();
  });

  it('3.1.1: UNSUBACK carries the packet id only', async () => {
    const c = await raw(4);
    c.send({ cmd: 'unsubscribe', messageId: 5, unsubscriptions: ['x'] });
    const ack = await c.next<IUnsubackPacket>('unsuback');
    expect(ack.messageId).toBe(5);
    c.destroy();
  });

  it('[MQTT-5-3.8.4-3] subscribing again to the same filter replaces the subscription', async () => {
    const topic = uid('replace');
    const c = await raw();
    await subscribe(c, [{ topic, qos: 0 }]);
    await subscribe(c, [{ topic, qos: 1 }]);
    const p = await raw();
    pub(p, topic, 'one', { qos: 1 });
    await p.next('puback');
    await settle(p, c);
    const got = c.all<IPublishPacket>('publish');
    expect(got.map((x) => [x.payload.toString(), x.qos])).toEqual([['one', 1]]);
    c.destroy();
    p.destroy();
  });
});

describe('v5 subscription options', () => {
  it('overlapping subscriptions: one copy at the highest QoS with every Subscription Identifier [MQTT-5-3.3.4-2] to [MQTT-5-3.3.4-5]', async () => {
    const base = uid('ov');
    const c = await raw();
    await subscribe(c, [{ topic: `${base}/#`, qos: 0 }], { subscriptionIdentifier: 11 });
    await subscribe(c, [{ topic: `${base}/+`, qos: 2 }], { subscriptionIdentifier: 22 });
    await subscribe(c, [{ topic: `${base}/x`, qos: 1 }]);
    const p = await raw();
    pub(p, `${base}/x`, 'm', { qos: 1 });
    await p.next('puback');
    await settle(p, c);
    const got = c.all<IPublishPacket>('publish');
    expect(got).toHaveLength(1);
    expect(got[0]!.qos).toBe(1);
    const ids = got[0]!.properties?.subscriptionIdentifier;
    expect((Array.isArray(ids) ? ids : [ids]).sort()).toEqual([11, 22]);
    c.destroy();
    p.destroy();
  });

  it('No Local on one of two overlapping subscriptions: the other still delivers, with only its identifier', async () => {
    const base = uid('nlov');
    const c = await raw();
    await subscribe(c, [{ topic: `${base}/#`, qos: 0, nl: true }], { subscriptionIdentifier: 1 });
    await subscribe(c, [{ topic: `${base}/+`, qos: 0 }], { subscriptionIdentifier: 2 });
    pub(c, `${base}/x`, 'self');
    const got = await c.next<IPublishPacket>('publish');
    expect(got.properties?.subscriptionIdentifier).toBe(2);
    await c.ping();
    expect(c.all('publish')).toHaveLength(1);
    c.destroy();
  });

  it('overlapping subscriptions: RETAIN kept if any of them has Retain As Published', async () => {
    const base = uid('rapov');
    const c = await raw();
    await subscribe(c, [{ topic: `${base}/#`, qos: 0, rh: 2 }, { topic: `${base}/+`, qos: 0, rap: true, rh: 2 }]);
    const p = await raw();
    pub(p, `${base}/x`, 'r', { retain: true });
    const got = await c.next<IPublishPacket>('publish');
    expect(got.retain).toBe(true);
    pub(p, `${base}/x`, '', { retain: true });
    c.destroy();
    p.destroy();
  });

  it('a single Subscription Identifier is sent as a number', async () => {
    const topic = uid('sid');
    const c = await raw();
    await subscribe(c, [{ topic, qos: 0 }], { subscriptionIdentifier: 268435455 });
    const p = await raw();
    pub(p, topic, 'x');
    const got = await c.next<IPublishPacket>('publish');
    expect(got.properties?.subscriptionIdentifier).toBe(268435455);
    c.destroy();
    p.destroy();
  });

  it('Subscription Identifier 0 is a protocol error', async () => {
    const c = await raw();
    // mqtt-packet will not encode 0 as a variable byte integer property, so patch the bytes
    const { default: mqttPacket } = await import('mqtt-packet');
    const bytes = mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'x', qos: 0 }], properties: { subscriptionIdentifier: 1 } }, { protocolVersion: 5 });
    const at = bytes.indexOf(0x0b); // property id 11, value follows
    expect(bytes[at + 1]).toBe(1);
    bytes[at + 1] = 0;
    c.sendBytes(bytes);
    const d = await c.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x82);
    await c.waitClosed();
  });

  it('[MQTT-5-3.8.3-3] No Local: not sent back to the publisher', async () => {
    const topic = uid('nl');
    const me = await raw();
    const other = await raw();
    await subscribe(me, [{ topic, qos: 0, nl: true }]);
    await subscribe(other, [{ topic, qos: 0, nl: true }]);
    pub(me, topic, 'from-me');
    pub(other, topic, 'from-other');
    await settle(me, other);
    await settle(other, me);
    expect(payloads(me)).toEqual(['from-other']);
    expect(payloads(other)).toEqual(['from-me']);
    me.destroy();
    other.destroy();
  });

  it('Retain As Published keeps the RETAIN flag on forwarded messages; otherwise it is cleared [MQTT-5-3.3.1-12] [MQTT-5-3.3.1-13]', async () => {
    const topic = uid('rap');
    const rap = await raw();
    const plain = await raw();
    const v4 = await raw(4);
    await subscribe(rap, [{ topic, qos: 0, rap: true }]);
    await subscribe(plain, [{ topic, qos: 0, rap: false }]);
    await subscribe(v4, [{ topic, qos: 0 }]);
    const p = await raw();
    pub(p, topic, 'kept', { retain: true });
    pub(p, topic, 'not-retained');
    await settle(p, rap, plain, v4);
    expect(rap.all<IPublishPacket>('publish').map((x) => x.retain)).toEqual([true, false]);
    expect(plain.all<IPublishPacket>('publish').map((x) => x.retain)).toEqual([false, false]);
    expect(v4.all<IPublishPacket>('publish').map((x) => x.retain)).toEqual([false, false]); // [MQTT-5-3.3.1-9] 3.1.1
    pub(p, topic, '', { retain: true }); // clean up
    for (const c of [rap, plain, v4, p]) c.destroy();
  });

  it('Retain Handling 0 sends retained messages on every subscribe, 1 only on a new subscription, 2 never [MQTT-5-3.3.1-9] to [MQTT-5-3.3.1-11]', async () => {
    const topic = uid('rh');
    const p = await raw();
    pub(p, topic, 'stored', { retain: true });
    await p.ping();
    const rh0 = await raw();
    const rh1 = await raw();
    const rh2 = await raw();
    for (let round = 0; round < 2; round++) {
      await subscribe(rh0, [{ topic, qos: 0, rh: 0 }]);
      await subscribe(rh1, [{ topic, qos: 0, rh: 1 }]);
      await subscribe(rh2, [{ topic, qos: 0, rh: 2 }]);
    }
    await settle(p, rh0, rh1, rh2);
    expect(payloads(rh0)).toEqual(['stored', 'stored']);
    expect(payloads(rh1)).toEqual(['stored']);
    expect(payloads(rh2)).toEqual([]);
    expect(rh0.all<IPublishPacket>('publish').every((x) => x.retain)).toBe(true);
    pub(p, topic, '', { retain: true });
    for (const c of [rh0, rh1, rh2, p]) c.destroy();
  });
});

describe('shared subscriptions $share/{group}/{filter} [MQTT-5-4.8.2]', () => {
  it('each message goes to exactly one member of a group; every group and plain subscriber gets it', async () => {
    const base = uid('sh');
    const g1 = [await raw(), await raw(), await raw()];
    const g2 = [await raw(), await raw()];
    const plain = await raw();
    for (const c of g1) expect(await subscribe(c, [{ topic: `$share/one/${base}/#`, qos: 1 }])).toEqual([1]);
    for (const c of g2) expect(await subscribe(c, [{ topic: `$share/two/${base}/+`, qos: 0 }])).toEqual([0]);
    await subscribe(plain, [{ topic: `${base}/#`, qos: 0 }]);
    const p = await raw();
    const sent: string[] = [];
    for (let i = 0; i < 12; i++) {
      sent.push(`m${i}`);
      pub(p, `${base}/t`, `m${i}`, { qos: 1 });
    }
    for (let i = 0; i < 12; i++) await p.next('puback');
    await settle(p, ...g1, ...g2, plain);
    const got1 = g1.map(payloads);
    const got2 = g2.map(payloads);
    expect(got1.flat().sort()).toEqual([...sent].sort());
    expect(got2.flat().sort()).toEqual([...sent].sort());
    // round robin: spread over the members, none starved
    for (const list of got1) expect(list.length).toBe(4);
    for (const list of got2) expect(list.length).toBe(6);
    expect(payloads(plain)).toEqual(sent);
    for (const c of [...g1, ...g2, plain, p]) c.destroy();
  });

  it('a client with a shared and a plain subscription matching gets a copy from each [MQTT-5-4.8.2]', async () => {
    const topic = uid('shp');
    const both = await raw();
    await subscribe(both, [{ topic: `$share/g/${topic}`, qos: 0 }], { subscriptionIdentifier: 1 });
    await subscribe(both, [{ topic, qos: 0 }], { subscriptionIdentifier: 2 });
    const p = await raw();
    pub(p, topic, 'm');
    await settle(p, both);
    const got = both.all<IPublishPacket>('publish');
    expect(got.map((x) => x.properties?.subscriptionIdentifier).sort()).toEqual([1, 2]);
    both.destroy();
    p.destroy();
  });

  it('a client in two groups gets one copy per group', async () => {
    const topic = uid('sh2');
    const c = await raw();
    await subscribe(c, [{ topic: `$share/a/${topic}`, qos: 0 }, { topic: `$share/b/${topic}`, qos: 0 }]);
    const p = await raw();
    pub(p, topic, 'm');
    await settle(p, c);
    expect(payloads(c)).toEqual(['m', 'm']);
    c.destroy();
    p.destroy();
  });

  it('messages go to connected members; an offline member of a persistent session gets them only when nobody else is connected', async () => {
    const topic = uid('sho');
    const offId = uid('off');
    const onId = uid('on');
    const offline = (await RawClient.connect(b.port, { clientId: offId, clean: false, properties: { sessionExpiryInterval: 60 } })).client;
    await subscribe(offline, [{ topic: `$share/g/${topic}`, qos: 1 }]);
    offline.send({ cmd: 'disconnect', reasonCode: 0 });
    await offline.waitClosed();
    const online = await raw(5, onId);
    await subscribe(online, [{ topic: `$share/g/${topic}`, qos: 1 }]);
    const p = await raw();
    for (let i = 0; i < 4; i++) pub(p, topic, `m${i}`, { qos: 1 });
    for (let i = 0; i < 4; i++) await p.next('puback');
    await settle(p, online);
    expect(payloads(online)).toEqual(['m0', 'm1', 'm2', 'm3']);
    expect(b.server.broker.sessions.get(offId)!.queued).toBe(0);
    online.destroy();
    await until(() => b.server.broker.client(onId) === undefined, 2000, 'the online member to leave');
    pub(p, topic, 'queued', { qos: 1 });
    await p.next('puback');
    expect(b.server.broker.sessions.get(offId)!.queued).toBe(1);
    p.destroy();
  });

  it('a shared subscription gets no retained messages on subscribe', async () => {
    const topic = uid('shr');
    const p = await raw();
    pub(p, topic, 'retained', { retain: true });
    await p.ping();
    const c = await raw();
    await subscribe(c, [{ topic: `$share/g/${topic}`, qos: 0 }]);
    await c.ping();
    expect(payloads(c)).toEqual([]);
    pub(p, topic, '', { retain: true });
    c.destroy();
    p.destroy();
  });

  it('unsubscribing a member leaves the others receiving everything', async () => {
    const topic = uid('shu');
    const a = await raw();
    const c = await raw();
    await subscribe(a, [{ topic: `$share/g/${topic}`, qos: 0 }]);
    await subscribe(c, [{ topic: `$share/g/${topic}`, qos: 0 }]);
    a.send({ cmd: 'unsubscribe', messageId: 9, unsubscriptions: [`$share/g/${topic}`] });
    expect((await a.next<IUnsubackPacket>('unsuback')).granted).toEqual([0]);
    const p = await raw();
    for (let i = 0; i < 4; i++) pub(p, topic, `m${i}`);
    await settle(p, a, c);
    expect(payloads(a)).toEqual([]);
    expect(payloads(c)).toEqual(['m0', 'm1', 'm2', 'm3']);
    for (const x of [a, c, p]) x.destroy();
  });

  it('[MQTT-5-3.8.3-4] No Local on a shared subscription is a protocol error', async () => {
    const c = await raw();
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$share/g/x', qos: 0, nl: true }] });
    const d = await c.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x82);
    await c.waitClosed();
  });
});
