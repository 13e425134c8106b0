import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqttPacket, { type IDisconnectPacket, type Packet } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';
import { connectClient } from '../helpers/mqttjs.js';

let b: TestBroker;
beforeAll(async () => {
  b = await startBroker({ maxPacketSize: 1024, maxInflight: 2, topicAliasMaximum: 2 });
});
afterAll(() => b.stop());

let n = 0;
const uid = (p: string): string => `${p}-${++n}`;
const v5 = (p: Packet): Buffer => mqttPacket.generate(p, { protocolVersion: 5 });
const pub = (topic: string, extra: Record<string, unknown> = {}): Buffer =>
  v5({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 0, retain: false, dup: false, ...extra } as Packet);

/** `packet` with the first "ZZ" replaced by two other bytes (lengths stay right). */
const patch = (packet: Buffer, bytes: [number, number]): Buffer => {
  const at = packet.indexOf('ZZ');
  if (at < 0) throw new Error('no marker');
  const out = Buffer.from(packet);
  out[at] = bytes[0];
  out[at + 1] = bytes[1];
  return out;
};
const ILL_FORMED: [number, number] = [0xc3, 0x28]; // a lead byte followed by no continuation byte

/** Bytes a connected v5 client sends, and the DISCONNECT reason code the broker must answer with. */
const cases: [string, Buffer[], number][] = [
  ['remaining length over 4 bytes', [Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])], 0x81],
  ['topic length past the end of the packet', [Buffer.from([0x30, 0x03, 0x00, 0x05, 0x61])], 0x81],
  ['PUBLISH with both QoS bits set', [Buffer.from([0x36, 0x04, 0x00, 0x01, 0x61, 0x00])], 0x81],
  ['SUBSCRIBE with reserved header flags 0000 instead of 0010', [Buffer.from([0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61, 0x00])], 0x81],
  ['PUBREL with header flags 0000', [Buffer.from([0x60, 0x02, 0x00, 0x01])], 0x81],
  ['a reserved packet type (0)', [Buffer.from([0x00, 0x00])], 0x81],
  ['an invalid DISCONNECT reason code', [Buffer.from([0xe0, 0x01, 0x03])], 0x81],
  ['subscription options with reserved bits set [MQTT-5-3.8.3-5]', [Buffer.from([0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61, 0xc0])], 0x81],
  ['Retain Handling 3', [Buffer.from([0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61, 0x30])], 0x81],
  ['a topic name that is not valid UTF-8 [MQTT-5-1.5.4-1]', [Buffer.from([0x30, 0x05, 0x00, 0x02, 0xc3, 0x28, 0x00])], 0x81],
  ['a topic name with a UTF-16 surrogate encoded [MQTT-5-1.5.4-1]', [Buffer.from([0x30, 0x06, 0x00, 0x03, 0xed, 0xa0, 0x80, 0x00])], 0x81],
  ['a user property value that is not valid UTF-8 [MQTT-5-1.5.4-1]', [patch(pub('t', { properties: { userProperties: { k: 'aZZb' } } }), ILL_FORMED)], 0x81],
  ['a user property name that is not valid UTF-8 [MQTT-5-1.5.4-1]', [patch(pub('t', { properties: { userProperties: { kZZ: 'v' } } }), ILL_FORMED)], 0x81],
  ['U+0000 in a user property name [MQTT-5-1.5.4-2]', [patch(pub('t', { properties: { userProperties: { kZZ: 'v' } } }), [0x00, 0x61])], 0x81],
  ['a Response Topic that is not valid UTF-8 [MQTT-5-1.5.4-1]', [patch(pub('t', { properties: { responseTopic: 'rZZ' } }), ILL_FORMED)], 0x81],
  ['a Content Type that is not valid UTF-8 [MQTT-5-1.5.4-1]', [patch(pub('t', { properties: { contentType: 'text/ZZ' } }), ILL_FORMED)], 0x81],
  ['a topic filter that is not valid UTF-8 [MQTT-5-1.5.4-1]', [patch(v5({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'aZZ', qos: 0 }] }), ILL_FORMED)], 0x81],
  ['an UNSUBSCRIBE filter that is not valid UTF-8 [MQTT-5-1.5.4-1]', [patch(v5({ cmd: 'unsubscribe', messageId: 1, unsubscriptions: ['aZZ'] }), ILL_FORMED)], 0x81],
  ['U+0000 in a topic name [MQTT-5-4.7.3-2]', [Buffer.from([0x30, 0x05, 0x00, 0x02, 0x61, 0x00, 0x00])], 0x90],
  // a property other than User Property may not repeat; mqtt-packet gives an array (found by fuzzing:
  // a repeated Response Topic reached topic validation as an array, an internal error 0x83)
  ['a Response Topic twice', [Buffer.from([0x30, 0x0c, 0x00, 0x01, 0x61, 0x08, 0x08, 0x00, 0x01, 0x72, 0x08, 0x00, 0x01, 0x73])], 0x82],
  ['a Content Type twice', [Buffer.from([0x30, 0x0c, 0x00, 0x01, 0x61, 0x08, 0x03, 0x00, 0x01, 0x72, 0x03, 0x00, 0x01, 0x73])], 0x82],
  ['Correlation Data twice', [Buffer.from([0x30, 0x0c, 0x00, 0x01, 0x61, 0x08, 0x09, 0x00, 0x01, 0x72, 0x09, 0x00, 0x01, 0x73])], 0x82],
  ['a Message Expiry Interval twice', [Buffer.from([0x30, 0x0e, 0x00, 0x01, 0x61, 0x0a, 0x02, 0, 0, 0, 5, 0x02, 0, 0, 0, 6])], 0x82],
  ['a Payload Format Indicator twice', [Buffer.from([0x30, 0x08, 0x00, 0x01, 0x61, 0x04, 0x01, 0x01, 0x01, 0x00])], 0x82],
  // a string or binary property cut short: mqtt-packet reads it as null (found by fuzzing: a retained
  // message holding a null Content Type made every later subscriber's delivery an internal error)
  ['Correlation Data cut short (a retained QoS 1 PUBLISH)', [Buffer.from('332a0003612f620007110101020000000a2300b408000172090041012600016b0001760300016368656c6c6f', 'hex')], 0x81],
  ['a user property value cut short', [Buffer.from('332a0003612f6217071d0101020000000a23000108000172090001012600016b0001762600016368656c6c6f', 'hex')], 0x81],
  // property blocks read strictly (src/mqtt/properties.ts): mqtt-packet reads these leniently
  ['a Response Topic cut short (mqtt-packet reads null)', [Buffer.from([0x30, 0x09, 0x00, 0x01, 0x61, 0x04, 0x08, 0x00, 0x09, 0x61, 0x62])], 0x81],
  ['a Topic Alias cut short by its block, running into the payload', [Buffer.from([0x30, 0x08, 0x00, 0x01, 0x61, 0x02, 0x23, 0x00, 0x01, 0x78])], 0x81],
  ['a Payload Format Indicator of 2', [Buffer.from([0x30, 0x07, 0x00, 0x01, 0x61, 0x02, 0x01, 0x02, 0x78])], 0x82],
  ['a Session Expiry Interval in a PUBLISH', [Buffer.from([0x30, 0x09, 0x00, 0x01, 0x61, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01])], 0x81],
  ['an unknown property identifier', [Buffer.from([0x30, 0x07, 0x00, 0x01, 0x61, 0x02, 0x7f, 0x00, 0x78])], 0x81],
  ['a Content Type that is not UTF-8', [Buffer.from([0x30, 0x09, 0x00, 0x01, 0x61, 0x04, 0x03, 0x00, 0x01, 0xfe, 0x78])], 0x81],
  ['a PUBACK with bytes after its properties', [Buffer.from([0x40, 0x05, 0x00, 0x01, 0x10, 0x00, 0x99])], 0x81],
  // control characters in topic names [MQTT-5-1.5.4]: libmosquitto drops a connection that receives one
  ['a topic name with U+000F', [pub('fz\u000f55')], 0x90],
  ['a topic name with U+0016 in a level', [pub('fz/\u0016')], 0x90],
  ['a topic name with U+007F', [pub('a\u007fb')], 0x90],
  ['a topic name with U+0085 (a C1 control)', [pub('a/\u0085')], 0x90],
  ['SUBSCRIBE without a topic filter [MQTT-5-3.8.3-2]', [Buffer.from([0x82, 0x03, 0x00, 0x01, 0x00])], 0x82],
  ['UNSUBSCRIBE without a topic filter [MQTT-5-3.10.3-2]', [Buffer.from([0xa2, 0x03, 0x00, 0x01, 0x00])], 0x82],
  ['QoS 1 PUBLISH with packet identifier 0 [MQTT-5-2.2.1-3]', [Buffer.from([0x32, 0x06, 0x00, 0x01, 0x61, 0x00, 0x00, 0x00])], 0x82],
  // found by the robustness fuzz test in CI: mqtt-packet reads the cut identifier as -1, and the broker answered it
  ['QoS 2 PUBLISH cut short in its packet identifier', [Buffer.from([0x34, 0x04, 0x00, 0x01, 0x78, 0x00])], 0x81],
  ['QoS 1 PUBLISH cut short in its packet identifier', [Buffer.from([0x32, 0x04, 0x00, 0x01, 0x78, 0x00])], 0x81],
  ['SUBSCRIBE with packet identifier 0', [Buffer.from([0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, 0x61, 0x00])], 0x82],
  ['UNSUBSCRIBE with packet identifier 0', [Buffer.from([0xa2, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, 0x61])], 0x82],
  ['PUBACK with packet identifier 0', [Buffer.from([0x40, 0x02, 0x00, 0x00])], 0x82],
  ['PUBREL cut short before its packet identifier', [Buffer.from([0x62, 0x00])], 0x81],
  ['a PINGRESP from a client', [Buffer.from([0xd0, 0x00])], 0x82],
  ['a PUBLISH carrying a Subscription Identifier [MQTT-5-3.3.4-6]', [pub('t', { properties: { subscriptionIdentifier: 5 } })], 0x82],
  ['a Response Topic with a wildcard [MQTT-5-3.3.2-14]', [pub('t', { properties: { responseTopic: 'reply/+' } })], 0x82],
  ['a second CONNECT', [v5({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'again' })], 0x82],
  ['AUTH without an authentication method', [v5({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'x' } })], 0x82],
  ['a CONNACK from a client', [Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00])], 0x82],
  ['an unknown topic alias with an empty topic', [pub('', { properties: { topicAlias: 1 } })], 0x82],
  ['topic alias 0', [pub('t', { properties: { topicAlias: 0 } })], 0x94],
  ['topic alias over the maximum', [pub('t', { properties: { topicAlias: 3 } })], 0x94],
  ['a packet over Maximum Packet Size', [pub('t', { payload: Buffer.alloc(2000) })], 0x95],
  [
    'a third unacknowledged QoS 2 PUBLISH with Receive Maximum 2',
    [1, 2, 3].map((messageId) => pub('t', { qos: 2, messageId })),
    0x93,
  ],
];

describe('DISCONNECT from the broker with a reason code, then close', () => {
  it.each(cases.map(([name, chunks, code]) => ({ name, chunks, code: `0x${code.toString(16)}`, value: code })))('$name -> $code', async ({ chunks, value: code }) => {
    const id = uid('c');
    const { client } = await RawClient.connect(b.port, { clientId: id });
    for (const c of chunks) client.sendBytes(c);
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(code);
    await client.waitClosed();
    expect(b.server.broker.client(id)).toBeUndefined();
  });

  it('strings with a real U+FFFD (well-formed UTF-8) are accepted', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('fffd') });
    client.sendBytes(pub('t', { qos: 1, messageId: 9, properties: { contentType: 'x\uFFFD', userProperties: { 'k\uFFFD': 'v\uFFFD' }, responseTopic: 'r/\uFFFD' } }));
    expect((await client.next('puback')).messageId).toBe(9);
    client.destroy();
  });

  it('a CONNECT with a client identifier that is not valid UTF-8 is closed without CONNACK [MQTT-5-1.5.4-1]', async () => {
    const client = await RawClient.open(b.port, 5);
    client.sendBytes(patch(v5({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'idZZ' }), ILL_FORMED));
    await client.waitClosed();
    expect(client.all('connack')).toHaveLength(0);
  });

  it('admin disconnect through the BrokerApi carries its code and reason string', async () => {
    const id = uid('admin');
    const { client } = await RawClient.connect(b.port, { clientId: id });
    expect(b.server.broker.disconnectClient(id, 0x98, 'maintenance')).toBe(true);
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x98);
    expect(d.properties?.reasonString).toBe('maintenance');
    await client.waitClosed();
    expect(b.server.broker.disconnectClient(id, 0x98)).toBe(false);
  });

  it('3.1.1 clients are closed without a DISCONNECT (there is none from a server)', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('v4') }, 4);
    client.sendBytes([0x30, 0x03, 0x00, 0x05, 0x61]);
    await client.waitClosed();
    expect(client.packets.map((p) => p.cmd)).toEqual(['connack']);
  });

  it('MQTT.js sees the reason code', async () => {
    const c = await connectClient(b.port, { clientId: uid('js') });
    const seen = new Promise<number | undefined>((resolve) => c.once('disconnect', (p) => resolve(p.reasonCode)));
    b.server.broker.disconnectClient(c.options.clientId!, 0x8b);
    expect(await seen).toBe(0x8b);
    c.end(true);
  });
});

describe('DISCONNECT from the client', () => {
  it('0x00 ends the connection cleanly; the broker counts no protocol error', async () => {
    const before = { ...b.server.broker.stats.protocolErrors };
    const { client } = await RawClient.connect(b.port, { clientId: uid('bye') });
    client.send({ cmd: 'disconnect', reasonCode: 0 });
    await client.waitClosed();
    expect(client.packets.map((p) => p.cmd)).toEqual(['connack']);
    expect(b.server.broker.stats.protocolErrors).toEqual(before);
  });
});

describe('graceful stop', () => {
  it('v5 clients receive DISCONNECT 0x8B, 3.1.1 clients are closed, new connections refused', async () => {
    const own = await startBroker();
    const raw5 = (await RawClient.connect(own.port, { clientId: 'r5' })).client;
    const raw4 = (await RawClient.connect(own.port, { clientId: 'r4' }, 4)).client;
    const js = await connectClient(own.port, { clientId: 'js5' });
    const jsSeen = new Promise<number | undefined>((resolve) => js.once('disconnect', (p) => resolve(p.reasonCode)));
    await own.stop();
    expect((await raw5.next<IDisconnectPacket>('disconnect')).reasonCode).toBe(0x8b);
    await raw5.waitClosed();
    await raw4.waitClosed();
    expect(raw4.packets.map((p) => p.cmd)).toEqual(['connack']);
    expect(await jsSeen).toBe(0x8b);
    js.end(true);
    await expect(RawClient.open(own.port)).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe('control characters in topics are never stored or forwarded [MQTT-5-1.5.4]', () => {
  it('v5: a filter with one gets 0x8F in the SUBACK and subscribes nothing; the connection lives', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('ctl-sub') });
    client.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'a/\u0001', qos: 1 }, { topic: 'ok/#', qos: 1 }] });
    const suback = await client.next('suback');
    expect((suback as unknown as { granted: number[] }).granted).toEqual([0x8f, 1]);
    await client.ping();
    client.destroy();
  });

  it('3.1.1: a SUBSCRIBE or UNSUBSCRIBE with one is malformed: closed without an answer', async () => {
    for (const packet of [
      { cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'x/\u001f/#', qos: 0 }] },
      { cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['x/\u009f'] },
    ] as Packet[]) {
      const { client } = await RawClient.connect(b.port, { clientId: uid('ctl-v4') }, 4);
      client.send(packet);
      await client.waitClosed();
      expect(client.packets.map((p) => p.cmd)).toEqual(['connack']);
    }
  });

  it('3.1.1: a PUBLISH with one closes the connection, and nothing is retained', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('ctl-pub4') }, 4);
    client.send({ cmd: 'publish', topic: 'ctl/\u0007bell', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: true, dup: false }, 4);
    await client.waitClosed();
    expect(client.packets.map((p) => p.cmd)).toEqual(['connack']);
    const watcher = (await RawClient.connect(b.port, { clientId: uid('ctl-watch') })).client;
    watcher.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'ctl/#', qos: 1 }] });
    await watcher.next('suback');
    await watcher.ping();
    expect(watcher.all('publish')).toHaveLength(0);
    watcher.destroy();
  });

  it('v5: a will topic with one is refused with CONNACK 0x90', async () => {
    const client = await RawClient.open(b.port, 5);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: uid('ctl-will'), will: { topic: 'w/\u0002', payload: Buffer.from('x'), qos: 0, retain: true } } as Packet);
    const connack = await client.next('connack');
    expect((connack as unknown as { reasonCode: number }).reasonCode).toBe(0x90);
    await client.waitClosed();
  });
});
