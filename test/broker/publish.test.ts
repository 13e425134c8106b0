import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IDisconnectPacket, IPubackPacket, IPubcompPacket, IPublishPacket, IPubrecPacket, IPubrelPacket, ISubackPacket } from 'mqtt-packet';
import { startBroker, delay, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';
import { collect, connectClient } from '../helpers/mqttjs.js';

let b: TestBroker;
beforeAll(async () => {
  b = await startBroker({ maxInflight: 3, topicAliasMaximum: 4, maxPacketSize: 2048 });
});
afterAll(() => b.stop());

let n = 0;
const uid = (p: string): string => `${p}-${++n}`;

async function subscriber(clientId: string, filter: string, qos: 0 | 1 | 2, extra: Parameters<typeof RawClient.connect>[1] = {}, version: 4 | 5 = 5): Promise<RawClient> {
  const { client } = await RawClient.connect(b.port, { clientId, ...extra }, version);
  client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos }] });
  const suback = await client.next<ISubackPacket>('suback');
  expect(suback.granted).toEqual([qos]);
  return client;
}

describe('PUBLISH from a client', () => {
  it('QoS 0: delivered, no acknowledgement', async () => {
    const topic = uid('q0');
    const sub = await subscriber(uid('s'), topic, 2);
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from([0, 1, 2, 255]), qos: 0, retain: false, dup: false });
    const got = await sub.next<IPublishPacket>('publish');
    expect(got.qos).toBe(0);
    expect(got.messageId).toBeUndefined();
    expect(Buffer.from(got.payload)).toEqual(Buffer.from([0, 1, 2, 255]));
    await pub.ping();
    expect(pub.packets.map((p) => p.cmd)).toEqual(['connack', 'pingresp']);
    pub.destroy();
    sub.destroy();
  });

  it('QoS 1: PUBACK with the same packet id; v5 0x10 when nobody matched', async () => {
    const topic = uid('q1');
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 1, messageId: 42, retain: false, dup: false });
    const none = await pub.next<IPubackPacket>('puback');
    expect(none.messageId).toBe(42);
    expect(none.reasonCode).toBe(0x10); // No matching subscribers
    const sub = await subscriber(uid('s'), topic, 1);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('y'), qos: 1, messageId: 43, retain: false, dup: false });
    const ack = await pub.next<IPubackPacket>('puback');
    expect(ack.messageId).toBe(43);
    expect(ack.reasonCode).toBe(0);
    const got = await sub.next<IPublishPacket>('publish');
    expect(got.qos).toBe(1);
    expect(got.payload.toString()).toBe('y');
    pub.destroy();
    sub.destroy();
  });

  it('QoS 1 from a 3.1.1 client is acknowledged even with no subscriber', async () => {
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') }, 4);
    pub.send({ cmd: 'publish', topic: uid('none'), payload: Buffer.from('x'), qos: 1, messageId: 9, retain: false, dup: false });
    const ack = await pub.next<IPubackPacket>('puback');
    expect(ack.messageId).toBe(9);
    pub.destroy();
  });

  it('QoS 2: PUBREC, PUBREL, PUBCOMP; a resent PUBLISH is not delivered twice [MQTT-5-4.3.3]', async () => {
    const topic = uid('q2');
    const sub = await subscriber(uid('s'), topic, 2);
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('once'), qos: 2, messageId: 7, retain: false, dup: false });
    const rec = await pub.next<IPubrecPacket>('pubrec');
    expect(rec.messageId).toBe(7);
    expect(rec.reasonCode).toBe(0);
    // the sender did not see the PUBREC and resends with DUP
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('once'), qos: 2, messageId: 7, retain: false, dup: true });
    expect((await pub.next<IPubrecPacket>('pubrec')).messageId).toBe(7);
    pub.send({ cmd: 'pubrel', messageId: 7 });
    const comp = await pub.next<IPubcompPacket>('pubcomp');
    expect(comp.messageId).toBe(7);
    expect(comp.reasonCode).toBe(0);
    // the packet id is free again: a new message with id 7 is a new message
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('again'), qos: 2, messageId: 7, retain: false, dup: false });
    await pub.next('pubrec');
    pub.send({ cmd: 'pubrel', messageId: 7 });
    await pub.next('pubcomp');
    const first = await sub.next<IPublishPacket>('publish');
    const second = await sub.next<IPublishPacket>('publish');
    expect([first.payload.toString(), second.payload.toString()]).toEqual(['once', 'again']);
    await sub.ping();
    expect(sub.all('publish')).toHaveLength(2);
    pub.destroy();
    sub.destroy();
  });

  it('QoS 2 state survives a reconnect of a persistent session: the resent PUBLISH is not delivered twice', async () => {
    const topic = uid('q2persist');
    const id = uid('p');
    const sub = await subscriber(uid('s'), topic, 2);
    const first = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    first.client.send({ cmd: 'publish', topic, payload: Buffer.from('exactly-once'), qos: 2, messageId: 11, retain: false, dup: false });
    await first.client.next('pubrec');
    first.client.destroy(); // lost before PUBREL
    await first.client.closedPromise;
    const again = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    expect(again.connack.sessionPresent).toBe(true);
    again.client.send({ cmd: 'publish', topic, payload: Buffer.from('exactly-once'), qos: 2, messageId: 11, retain: false, dup: true });
    expect((await again.client.next<IPubrecPacket>('pubrec')).messageId).toBe(11);
    again.client.send({ cmd: 'pubrel', messageId: 11 });
    const comp = await again.client.next<IPubcompPacket>('pubcomp');
    expect(comp.reasonCode).toBe(0);
    await sub.ping();
    expect(sub.all<IPublishPacket>('publish').map((p) => p.payload.toString())).toEqual(['exactly-once']);
    again.client.destroy();
    sub.destroy();
  });

  it('PUBREL for an unknown packet id: PUBCOMP 0x92 in v5', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('p') });
    client.send({ cmd: 'pubrel', messageId: 99 });
    const comp = await client.next<IPubcompPacket>('pubcomp');
    expect(comp.messageId).toBe(99);
    expect(comp.reasonCode).toBe(0x92);
    client.destroy();
  });

  it('v5: Payload Format Indicator 1 with invalid UTF-8 is refused with 0x99', async () => {
    const topic = uid('pfi');
    const sub = await subscriber(uid('s'), topic, 1);
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from([0xff, 0xfe]), qos: 1, messageId: 3, retain: false, dup: false, properties: { payloadFormatIndicator: true } });
    const ack = await pub.next<IPubackPacket>('puback');
    expect(ack.reasonCode).toBe(0x99);
    await sub.ping();
    expect(sub.all('publish')).toHaveLength(0);
    pub.destroy();
    sub.destroy();
  });

  it('a topic with a real U+FFFD (valid UTF-8) is accepted and delivered unchanged', async () => {
    const topic = `${uid('fffd')}/\uFFFD`;
    const sub = await subscriber(uid('s'), topic, 0);
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('ok'), qos: 0, retain: false, dup: false });
    const got = await sub.next<IPublishPacket>('publish');
    expect(got.topic).toBe(topic);
    pub.destroy();
    sub.destroy();
  });

  it('a wildcard in a PUBLISH topic is refused (v5 DISCONNECT 0x90)', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('p') });
    // mqtt-packet generates it; the broker must refuse it [MQTT-5-3.3.2-2]
    client.send({ cmd: 'publish', topic: 'a/+', payload: Buffer.from('x'), qos: 0, retain: false, dup: false });
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x90);
    await client.waitClosed();
  });
});

describe('PUBLISH to a client', () => {
  it('QoS 1 and 2 flows, distinct non-zero packet ids, QoS downgraded to the subscription', async () => {
    const topic = uid('out');
    const subId = uid('s');
    const sub = await subscriber(subId, topic, 2, { properties: { receiveMaximum: 10 } });
    const sub1 = await subscriber(uid('s1'), topic, 1);
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('a'), qos: 2, messageId: 1, retain: false, dup: false });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('b'), qos: 1, messageId: 2, retain: false, dup: false });
    await pub.next('pubrec');
    pub.send({ cmd: 'pubrel', messageId: 1 });
    await pub.next('pubcomp');
    const a = await sub.next<IPublishPacket>('publish');
    const bb = await sub.next<IPublishPacket>('publish');
    expect([a.qos, bb.qos]).toEqual([2, 1]);
    expect(a.messageId).toBeGreaterThan(0);
    expect(bb.messageId).toBeGreaterThan(0);
    expect(a.messageId).not.toBe(bb.messageId);
    // subscriber side of QoS 2
    sub.send({ cmd: 'pubrec', messageId: a.messageId! });
    const rel = await sub.next<IPubrelPacket>('pubrel');
    expect(rel.messageId).toBe(a.messageId);
    sub.send({ cmd: 'pubcomp', messageId: a.messageId! });
    sub.send({ cmd: 'puback', messageId: bb.messageId! });
    await sub.ping();
    expect(b.server.broker.sessions.get(subId)!.inflight.size).toBe(0);
    // the QoS 1 subscriber gets QoS 1 at most
    const low = await sub1.next<IPublishPacket>('publish');
    expect(low.qos).toBe(1);
    pub.destroy();
    sub.destroy();
    sub1.destroy();
  });

  it('QoS 1 unacknowledged: redelivered with DUP and the same packet id on reconnect [MQTT-5-4.4.0-1]', async () => {
    const topic = uid('redeliver');
    const id = uid('s');
    const sub = await subscriber(id, topic, 1, { clean: false, properties: { sessionExpiryInterval: 60 } });
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('r1'), qos: 1, messageId: 1, retain: false, dup: false });
    const first = await sub.next<IPublishPacket>('publish');
    expect(first.dup).toBe(false);
    sub.destroy(); // no PUBACK
    await sub.closedPromise;
    const again = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    expect(again.connack.sessionPresent).toBe(true);
    const redelivered = await again.client.next<IPublishPacket>('publish');
    expect(redelivered.dup).toBe(true);
    expect(redelivered.messageId).toBe(first.messageId);
    expect(redelivered.payload.toString()).toBe('r1');
    again.client.send({ cmd: 'puback', messageId: redelivered.messageId! });
    await again.client.ping();
    expect(b.server.broker.sessions.get(id)!.inflight.size).toBe(0);
    again.client.destroy();
    pub.destroy();
  });

  it('on takeover, the new connection gets the unacknowledged messages of the old one with DUP', async () => {
    const topic = uid('takeover-inflight');
    const id = uid('s');
    const old = await subscriber(id, topic, 1, { clean: false, properties: { sessionExpiryInterval: 60 } });
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('t1'), qos: 1, messageId: 1, retain: false, dup: false });
    const first = await old.next<IPublishPacket>('publish');
    const fresh = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    expect(fresh.connack.sessionPresent).toBe(true);
    await old.waitClosed();
    const again = await fresh.client.next<IPublishPacket>('publish');
    expect([again.payload.toString(), again.dup, again.messageId]).toEqual(['t1', true, first.messageId]);
    fresh.client.destroy();
    pub.destroy();
  });

  it('QoS 2 after PUBREC: PUBREL is resent on reconnect, not the PUBLISH', async () => {
    const topic = uid('redeliver2');
    const id = uid('s');
    const sub = await subscriber(id, topic, 2, { clean: false, properties: { sessionExpiryInterval: 60 } });
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('r2'), qos: 1, messageId: 1, retain: false, dup: false });
    const first = await sub.next<IPublishPacket>('publish');
    expect(first.qos).toBe(1);
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('r3'), qos: 2, messageId: 2, retain: false, dup: false });
    const q2 = await sub.next<IPublishPacket>('publish', (p) => p.qos === 2);
    sub.send({ cmd: 'pubrec', messageId: q2.messageId! });
    await sub.next('pubrel');
    sub.destroy();
    await sub.closedPromise;
    const again = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    const rel = await again.client.next<IPubrelPacket>('pubrel');
    expect(rel.messageId).toBe(q2.messageId);
    const dup = await again.client.next<IPublishPacket>('publish');
    expect(dup.payload.toString()).toBe('r2');
    expect(dup.dup).toBe(true);
    await again.client.ping();
    expect(again.client.all('publish')).toHaveLength(1); // r3 is not resent
    again.client.send({ cmd: 'pubcomp', messageId: q2.messageId! });
    again.client.send({ cmd: 'puback', messageId: dup.messageId! });
    await again.client.ping();
    expect(b.server.broker.sessions.get(id)!.inflight.size).toBe(0);
    again.client.destroy();
    pub.destroy();
  });

  it("Receive Maximum: never more unacknowledged QoS 1 messages than the client's limit [MQTT-5-3.3.4-9]", async () => {
    const topic = uid('rm');
    const sub = await subscriber(uid('s'), topic, 1, { properties: { receiveMaximum: 2 } });
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    for (let i = 1; i <= 5; i++) pub.send({ cmd: 'publish', topic, payload: Buffer.from(String(i)), qos: 1, messageId: i, retain: false, dup: false });
    for (let i = 1; i <= 5; i++) await pub.next('puback');
    await sub.ping();
    expect(sub.all<IPublishPacket>('publish').map((p) => p.payload.toString())).toEqual(['1', '2']);
    const [p1] = sub.all<IPublishPacket>('publish');
    sub.send({ cmd: 'puback', messageId: p1!.messageId! });
    const p3 = await sub.next<IPublishPacket>('publish', (p) => p.payload.toString() === '3');
    expect(p3.qos).toBe(1);
    await sub.ping();
    expect(sub.all('publish')).toHaveLength(3);
    for (const p of sub.all<IPublishPacket>('publish').slice(1)) sub.send({ cmd: 'puback', messageId: p.messageId! });
    await sub.next('publish', (p) => (p as IPublishPacket).payload.toString() === '5');
    pub.destroy();
    sub.destroy();
  });

  it('maxInflight also bounds messages in flight to a client, 3.1.1 included (which announces no Receive Maximum)', async () => {
    const topic = uid('cap');
    const sub = await subscriber(uid('s'), topic, 1, {}, 4);
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    for (let i = 1; i <= 6; i++) pub.send({ cmd: 'publish', topic, payload: Buffer.from(String(i)), qos: 1, messageId: i, retain: false, dup: false });
    for (let i = 1; i <= 6; i++) await pub.next('puback');
    await sub.ping();
    expect(sub.all<IPublishPacket>('publish').map((p) => p.payload.toString())).toEqual(['1', '2', '3']); // maxInflight: 3
    for (const p of sub.all<IPublishPacket>('publish')) sub.send({ cmd: 'puback', messageId: p.messageId! });
    await sub.next('publish', (p) => (p as IPublishPacket).payload.toString() === '6');
    pub.destroy();
    sub.destroy();
  });

  it('Receive Maximum of the broker: one QoS 2 PUBLISH too many is DISCONNECT 0x93', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('p') });
    const topic = uid('rmx');
    for (let i = 1; i <= 3; i++) client.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 2, messageId: i, retain: false, dup: false });
    for (let i = 1; i <= 3; i++) await client.next('pubrec');
    client.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 2, messageId: 4, retain: false, dup: false });
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x93);
    await client.waitClosed();
  });
});

describe('topic aliases', () => {
  it('client to broker: alias set, then used with an empty topic', async () => {
    const topic = uid('alias-in');
    const sub = await subscriber(uid('s'), topic, 0);
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('1'), qos: 0, retain: false, dup: false, properties: { topicAlias: 4 } });
    pub.send({ cmd: 'publish', topic: '', payload: Buffer.from('2'), qos: 0, retain: false, dup: false, properties: { topicAlias: 4 } });
    const a = await sub.next<IPublishPacket>('publish');
    const c = await sub.next<IPublishPacket>('publish');
    expect([a.topic, c.topic]).toEqual([topic, topic]);
    expect([a.payload.toString(), c.payload.toString()]).toEqual(['1', '2']);
    pub.destroy();
    sub.destroy();
  });

  it('an alias may be set again to another topic', async () => {
    const base = uid('realias');
    const sub = await subscriber(uid('s'), `${base}/#`, 0);
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic: `${base}/a`, payload: Buffer.from('1'), qos: 0, retain: false, dup: false, properties: { topicAlias: 1 } });
    pub.send({ cmd: 'publish', topic: `${base}/b`, payload: Buffer.from('2'), qos: 0, retain: false, dup: false, properties: { topicAlias: 1 } });
    pub.send({ cmd: 'publish', topic: '', payload: Buffer.from('3'), qos: 0, retain: false, dup: false, properties: { topicAlias: 1 } });
    const got: string[] = [];
    for (let i = 0; i < 3; i++) {
      const p = await sub.next<IPublishPacket>('publish');
      got.push(`${p.topic}=${p.payload.toString()}`);
    }
    expect(got).toEqual([`${base}/a=1`, `${base}/b=2`, `${base}/b=3`]);
    pub.destroy();
    sub.destroy();
  });

  it.each([
    [0, 0x94],
    [5, 0x94], // over the broker's Topic Alias Maximum (4)
  ])('alias %i is DISCONNECT 0x%s', async (alias, code) => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('p') });
    client.send({ cmd: 'publish', topic: 'x', payload: Buffer.from('1'), qos: 0, retain: false, dup: false, properties: { topicAlias: alias } });
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(code);
    await client.waitClosed();
  });

  it('an empty topic with an alias never set is a protocol error', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('p') });
    client.send({ cmd: 'publish', topic: '', payload: Buffer.from('1'), qos: 0, retain: false, dup: false, properties: { topicAlias: 2 } });
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x82);
    await client.waitClosed();
  });

  it("broker to client: aliases up to the client's Topic Alias Maximum", async () => {
    const base = uid('alias-out');
    const sub = await subscriber(uid('s'), `${base}/#`, 0, { properties: { topicAliasMaximum: 2 } });
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    for (const t of ['a', 'a', 'b', 'c', 'b']) pub.send({ cmd: 'publish', topic: `${base}/${t}`, payload: Buffer.from(t), qos: 0, retain: false, dup: false });
    await pub.ping();
    const got: IPublishPacket[] = [];
    for (let i = 0; i < 5; i++) got.push(await sub.next<IPublishPacket>('publish'));
    expect(got.map((p) => [p.topic, p.properties?.topicAlias, p.payload.toString()])).toEqual([
      [`${base}/a`, 1, 'a'], // alias announced with the topic
      ['', 1, 'a'], // then the alias alone
      [`${base}/b`, 2, 'b'],
      [`${base}/c`, undefined, 'c'], // no alias left
      ['', 2, 'b'],
    ]);
    pub.destroy();
    sub.destroy();
  });

  it('MQTT.js resolves the aliases the broker sends', async () => {
    const base = uid('alias-js');
    const sub = await connectClient(b.port, { clientId: uid('s'), properties: { topicAliasMaximum: 5 } });
    const got = collect(sub);
    await sub.subscribeAsync(`${base}/#`, { qos: 1 });
    const pub = await connectClient(b.port, { clientId: uid('p') });
    for (let i = 0; i < 3; i++) await pub.publishAsync(`${base}/t`, `m${i}`, { qos: 1 });
    const msgs = await got.wait(3);
    expect(msgs.map((m) => [m.topic, m.payload.toString()])).toEqual([
      [`${base}/t`, 'm0'],
      [`${base}/t`, 'm1'],
      [`${base}/t`, 'm2'],
    ]);
    await pub.endAsync();
    await sub.endAsync();
  });
});

describe('Maximum Packet Size', () => {
  it('inbound: a PUBLISH over the broker limit is DISCONNECT 0x95', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('p') });
    client.send({ cmd: 'publish', topic: 'big', payload: Buffer.alloc(3000, 1), qos: 0, retain: false, dup: false });
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x95);
    await client.waitClosed();
    expect(b.server.broker.stats.protocolErrors['packet_too_large']).toBeGreaterThan(0);
  });

  it('inbound: refused from the fixed header alone, before the body arrives', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('p') });
    // PUBLISH announcing 100 MB: 0x30, remaining length 100_000_000 as a variable byte integer
    client.sendBytes([0x30, 0x80, 0xc2, 0xd7, 0x2f]);
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x95);
    await client.waitClosed();
  });

  it("outbound: messages over the client's Maximum Packet Size are not sent [MQTT-5-3.1.2-25]", async () => {
    const topic = uid('mps');
    const subId = uid('s');
    const sub = await subscriber(subId, topic, 1, { properties: { maximumPacketSize: 200 } });
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    const before = b.server.broker.stats.dropped['too_large'] ?? 0;
    pub.send({ cmd: 'publish', topic, payload: Buffer.alloc(500, 7), qos: 1, messageId: 1, retain: false, dup: false });
    pub.send({ cmd: 'publish', topic, payload: Buffer.alloc(100, 8), qos: 0, retain: false, dup: false });
    pub.send({ cmd: 'publish', topic, payload: Buffer.alloc(500, 9), qos: 0, retain: false, dup: false });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('last'), qos: 1, messageId: 2, retain: false, dup: false });
    const got1 = await sub.next<IPublishPacket>('publish');
    const got2 = await sub.next<IPublishPacket>('publish');
    expect([got1.payload.length, got2.payload.toString()]).toEqual([100, 'last']);
    await sub.ping();
    expect(sub.all('publish')).toHaveLength(2);
    expect(b.server.broker.stats.dropped['too_large']).toBe(before + 2);
    // the dropped QoS 1 message does not hold an inflight slot
    sub.send({ cmd: 'puback', messageId: got2.messageId! });
    await sub.ping();
    expect(b.server.broker.clients().find((c) => c.clientId === subId)!.inflight).toBe(0);
    pub.destroy();
    sub.destroy();
  });
});

describe('message properties [MQTT-5-3.3.2]', () => {
  it('Payload Format Indicator, Content Type, Response Topic, Correlation Data and User Properties pass through unchanged', async () => {
    const topic = uid('props');
    const sub = await connectClient(b.port, { clientId: uid('s') });
    const got = collect(sub);
    await sub.subscribeAsync(topic, { qos: 1 });
    const pub = await connectClient(b.port, { clientId: uid('p') });
    const properties = {
      payloadFormatIndicator: true,
      contentType: 'application/json; charset=utf-8',
      responseTopic: 'reply/to/me',
      correlationData: Buffer.from([1, 2, 3, 0, 255]),
      userProperties: { a: '1', multi: ['x', 'y'], 'caf\u00e9': '\u6e29' },
    };
    await pub.publishAsync(topic, '{"t":21.5}', { qos: 1, properties });
    const [m] = await got.wait(1);
    expect(m!.payload.toString()).toBe('{"t":21.5}');
    const p = m!.packet.properties!;
    expect(p.payloadFormatIndicator).toBe(true);
    expect(p.contentType).toBe(properties.contentType);
    expect(p.responseTopic).toBe('reply/to/me');
    expect(Buffer.from(p.correlationData!)).toEqual(properties.correlationData);
    expect(p.userProperties).toEqual(properties.userProperties);
    await pub.endAsync();
    await sub.endAsync();
  });

  it('a 3.1.1 publisher reaches a v5 subscriber and the other way round', async () => {
    const topic = uid('cross');
    const v5 = await connectClient(b.port, { clientId: uid('s5') });
    const v4 = await connectClient(b.port, { clientId: uid('s4'), protocolVersion: 4 });
    const got5 = collect(v5);
    const got4 = collect(v4);
    await v5.subscribeAsync(topic, { qos: 1 });
    await v4.subscribeAsync(topic, { qos: 1 });
    await v4.publishAsync(topic, 'from4', { qos: 1 });
    await v5.publishAsync(topic, 'from5', { qos: 1, properties: { userProperties: { k: 'v' } } });
    expect((await got5.wait(2)).map((m) => m.payload.toString())).toEqual(['from4', 'from5']);
    expect((await got4.wait(2)).map((m) => m.payload.toString())).toEqual(['from4', 'from5']);
    await v4.endAsync();
    await v5.endAsync();
  });
});

describe('Message Expiry Interval [MQTT-5-3.3.2-5] [MQTT-5-3.3.2-6]', () => {
  it('expired messages are not delivered to a session that was offline; the rest carry the remaining lifetime', async () => {
    const topic = uid('expiry');
    const id = uid('s');
    const sub = await subscriber(id, topic, 1, { clean: false, properties: { sessionExpiryInterval: 60 } });
    sub.send({ cmd: 'disconnect', reasonCode: 0 });
    await sub.waitClosed();
    const { client: pub } = await RawClient.connect(b.port, { clientId: uid('p') });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('short'), qos: 1, messageId: 1, retain: false, dup: false, properties: { messageExpiryInterval: 1 } });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('long'), qos: 1, messageId: 2, retain: false, dup: false, properties: { messageExpiryInterval: 100 } });
    pub.send({ cmd: 'publish', topic, payload: Buffer.from('forever'), qos: 1, messageId: 3, retain: false, dup: false });
    for (let i = 0; i < 3; i++) await pub.next('puback');
    await delay(1100);
    const again = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    const a = await again.client.next<IPublishPacket>('publish');
    const c = await again.client.next<IPublishPacket>('publish');
    expect([a.payload.toString(), c.payload.toString()]).toEqual(['long', 'forever']);
    expect(a.properties?.messageExpiryInterval).toBeGreaterThanOrEqual(98);
    expect(a.properties?.messageExpiryInterval).toBeLessThanOrEqual(99);
    expect(c.properties?.messageExpiryInterval).toBeUndefined();
    await again.client.ping();
    expect(again.client.all('publish')).toHaveLength(2);
    expect(b.server.broker.stats.dropped['expired']).toBeGreaterThanOrEqual(1);
    again.client.destroy();
    pub.destroy();
  });
});

describe('MQTT.js clients, every version and QoS combination', () => {
  const combos: [4 | 5, 4 | 5, 0 | 1 | 2, 0 | 1 | 2][] = [];
  for (const pv of [4, 5] as const) for (const sv of [4, 5] as const) for (const pq of [0, 1, 2] as const) for (const sq of [0, 1, 2] as const) combos.push([pv, sv, pq, sq]);
  it.each(combos)('publisher v%i -> subscriber v%i, publish QoS %i, subscription QoS %i', async (pv, sv, pq, sq) => {
    const topic = uid(`m-${pv}${sv}${pq}${sq}`);
    const sub = await connectClient(b.port, { clientId: uid('s'), protocolVersion: sv });
    const got = collect(sub);
    const granted = await sub.subscribeAsync(topic, { qos: sq });
    expect(granted[0]!.qos).toBe(sq);
    const pub = await connectClient(b.port, { clientId: uid('p'), protocolVersion: pv });
    for (let i = 0; i < 5; i++) await pub.publishAsync(topic, Buffer.from([i, 0xff]), { qos: pq });
    const msgs = await got.wait(5);
    expect(msgs.map((m) => [...m.payload])).toEqual([0, 1, 2, 3, 4].map((i) => [i, 0xff]));
    expect(msgs.every((m) => m.packet.qos === Math.min(pq, sq))).toBe(true);
    await pub.endAsync();
    await sub.endAsync();
  });
});
