import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IDisconnectPacket, IPubackPacket, IPublishPacket, IPubrecPacket, ISubackPacket } from 'mqtt-packet';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';
import { collect, connectClient } from '../helpers/mqttjs.js';
import type { ClientInfo, ConnectRequest } from '../../src/broker/hooks.js';
import type { Message } from '../../src/mqtt/message.js';

let b: TestBroker;
const events: string[] = [];
const consumed: Message[] = [];

beforeAll(async () => {
  b = await startBroker();
  b.server.broker.addHooks({
    async authenticate(req: ConnectRequest) {
      await new Promise((r) => setTimeout(r, 5)); // async, like password hashing
      if (req.username === 'boom') throw new Error('hook failure');
      if (req.username === 'wrong') return { ok: false, reasonCode: 0x86 };
      if (req.username === 'banned') return { ok: false, reasonCode: 0x87, reasonString: 'go away' };
      if (req.username === 'alice') return req.password?.toString() === 's3cret' ? { ok: true, username: 'alice@example' } : { ok: false, reasonCode: 0x86 };
      return { ok: true };
    },
    authorizePublish(client: ClientInfo, message: Message) {
      if (message.topic === 'hook/throws') throw new Error('a buggy hook');
      return message.topic.startsWith('readonly/') ? 0x87 : 0;
    },
    authorizeSubscribe(_client: ClientInfo, filter: string, qos) {
      if (filter.startsWith('secret/')) return 0x87;
      if (filter.startsWith('limited/')) return 0;
      return qos;
    },
    authorizeDelivery(client: ClientInfo, message: Message) {
      return !(client.clientId.startsWith('picky') && message.payload.toString() === 'not-for-picky');
    },
    onPublish(message: Message) {
      if (message.topic.startsWith('svc/')) {
        consumed.push(message);
        return true;
      }
      return undefined;
    },
    onConnect(client: ClientInfo) {
      if (client.clientId.startsWith('throws-')) throw new Error('a buggy lifecycle hook');
      if (client.clientId.startsWith('ev-')) events.push(`connect ${client.clientId} ${client.username ?? '-'}`);
    },
    onDisconnect(client: ClientInfo, graceful: boolean) {
      if (client.clientId.startsWith('throws-')) throw new Error('a buggy lifecycle hook');
      if (client.clientId.startsWith('ev-')) events.push(`disconnect ${client.clientId} ${graceful}`);
    },
    onSubscribe(client: ClientInfo, filter: string, qos) {
      if (client.clientId.startsWith('ev-')) events.push(`subscribe ${client.clientId} ${filter} ${qos}`);
    },
  });
  // a second set of hooks: the first refusal wins, later hooks still run for allowed ones
  b.server.broker.addHooks({
    authorizePublish(_c: ClientInfo, message: Message) {
      return message.topic === 'quota/x' ? 0x97 : 0;
    },
  });
});
afterAll(() => b.stop());

let n = 0;
const uid = (p: string): string => `${p}-${++n}`;

describe('authenticate', () => {
  it.each([
    ['wrong', 0x86, 4],
    ['banned', 0x87, 5],
    ['boom', 0x88, 3], // a failing hook: server unavailable, never a crash
  ])('%s: v5 CONNACK reason code %i, 3.1.1 return code %i', async (username, v5code, v3code) => {
    const five = await RawClient.connect(b.port, { clientId: uid('a'), username });
    expect(five.connack.reasonCode).toBe(v5code);
    await five.client.waitClosed();
    const four = await RawClient.connect(b.port, { clientId: uid('a'), username }, 4);
    expect(four.connack.returnCode).toBe(v3code);
    await four.client.waitClosed();
  });

  it('the refusal carries the hook reason string (v5)', async () => {
    const { connack } = await RawClient.connect(b.port, { clientId: uid('a'), username: 'banned' });
    expect(connack.properties?.reasonString).toBe('go away');
  });

  it('accepts good credentials and takes the identity the hook returns', async () => {
    const id = uid('alice');
    const c = await connectClient(b.port, { clientId: id, username: 'alice', password: 's3cret' });
    expect(b.server.broker.client(id)?.username).toBe('alice@example');
    await c.endAsync();
    await expect(connectClient(b.port, { clientId: id, username: 'alice', password: 'nope' })).rejects.toThrow(/Bad User Name or Password/i);
  });

  it('packets sent while the hook runs are processed after it, in order', async () => {
    const topic = uid('early');
    const s = await connectClient(b.port, { clientId: uid('s') });
    const got = collect(s);
    await s.subscribeAsync(topic, { qos: 1 });
    const c = await RawClient.open(b.port);
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: uid('e') });
    c.send({ cmd: 'publish', topic, payload: Buffer.from('p1'), qos: 1, messageId: 1, retain: false, dup: false });
    c.send({ cmd: 'publish', topic, payload: Buffer.from('p2'), qos: 0, retain: false, dup: false });
    await c.next('connack');
    expect((await c.next<IPubackPacket>('puback')).messageId).toBe(1);
    expect((await got.wait(2)).map((m) => m.payload.toString())).toEqual(['p1', 'p2']);
    c.destroy();
    await s.endAsync();
  });
});

describe('authorizePublish', () => {
  it('v5: a denied QoS 1 PUBLISH gets PUBACK 0x87 and is not delivered; QoS 2 gets PUBREC 0x87', async () => {
    const s = (await RawClient.connect(b.port, { clientId: uid('s') })).client;
    s.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'readonly/#', qos: 2 }] });
    await s.next('suback');
    const p = (await RawClient.connect(b.port, { clientId: uid('p') })).client;
    p.send({ cmd: 'publish', topic: 'readonly/a', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false });
    expect((await p.next<IPubackPacket>('puback')).reasonCode).toBe(0x87);
    p.send({ cmd: 'publish', topic: 'readonly/a', payload: Buffer.from('x'), qos: 2, messageId: 2, retain: false, dup: false });
    expect((await p.next<IPubrecPacket>('pubrec')).reasonCode).toBe(0x87);
    p.send({ cmd: 'publish', topic: 'quota/x', payload: Buffer.from('x'), qos: 1, messageId: 3, retain: false, dup: false });
    expect((await p.next<IPubackPacket>('puback')).reasonCode).toBe(0x97); // from the second hook set
    await p.ping();
    await s.ping();
    expect(s.all('publish')).toHaveLength(0);
    expect(b.server.broker.stats.dropped['not_authorized']).toBeGreaterThanOrEqual(3);
    p.destroy();
    s.destroy();
  });

  it('3.1.1: a denied PUBLISH is acknowledged normally and silently dropped', async () => {
    const s = (await RawClient.connect(b.port, { clientId: uid('s') })).client;
    s.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'readonly/#', qos: 1 }] });
    await s.next('suback');
    const p = (await RawClient.connect(b.port, { clientId: uid('p') }, 4)).client;
    p.send({ cmd: 'publish', topic: 'readonly/b', payload: Buffer.from('x'), qos: 1, messageId: 5, retain: false, dup: false });
    const ack = await p.next<IPubackPacket>('puback');
    expect(ack.messageId).toBe(5);
    p.send({ cmd: 'publish', topic: 'readonly/b', payload: Buffer.from('x'), qos: 0, retain: false, dup: false });
    await p.ping();
    await s.ping();
    expect(s.all('publish')).toHaveLength(0);
    expect(p.closed).toBe(false);
    p.destroy();
    s.destroy();
  });

  it('a will to a denied topic is not published', async () => {
    const s = (await RawClient.connect(b.port, { clientId: uid('s') })).client;
    s.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'readonly/will', qos: 0 }] });
    await s.next('suback');
    const id = uid('c');
    const c = (await RawClient.connect(b.port, { clientId: id, will: { topic: 'readonly/will', payload: Buffer.from('w'), qos: 0, retain: false } })).client;
    const denied = b.server.broker.stats.dropped['not_authorized'] ?? 0;
    c.destroy();
    await until(() => b.server.broker.client(id) === undefined, 2000, 'the client to be gone');
    expect(b.server.broker.stats.dropped['not_authorized']).toBe(denied + 1);
    await s.ping();
    expect(s.all('publish')).toHaveLength(0);
    s.destroy();
  });
});

describe('a hook that throws', () => {
  it('ends only the connection being served (DISCONNECT 0x83); the broker and other clients go on', async () => {
    const topic = uid('after-throw');
    const s = await connectClient(b.port, { clientId: uid('s') });
    const got = collect(s);
    await s.subscribeAsync(topic, { qos: 1 });
    const c = (await RawClient.connect(b.port, { clientId: uid('thrower') })).client;
    c.send({ cmd: 'publish', topic: 'hook/throws', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false });
    const d = await c.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x83);
    await c.waitClosed();
    const p = await connectClient(b.port, { clientId: uid('p') });
    await p.publishAsync(topic, 'still here', { qos: 1 });
    expect((await got.wait(1))[0]!.payload.toString()).toBe('still here');
    await p.endAsync();
    await s.endAsync();
  });
});

describe('lifecycle hooks that throw', () => {
  it('are logged and ignored: the client connects, works and disconnects', async () => {
    const c = (await RawClient.connect(b.port, { clientId: 'throws-1' })).client;
    await c.ping();
    c.destroy();
    await until(() => b.server.broker.client('throws-1') === undefined, 2000, 'the client to be gone');
    const again = await RawClient.connect(b.port, { clientId: 'throws-1' });
    expect(again.connack.reasonCode).toBe(0);
    again.client.send({ cmd: 'disconnect', reasonCode: 0 });
    await again.client.waitClosed();
  });
});

describe('authorizeSubscribe: a verdict per filter', () => {
  it('v5: refused filters get their code, others the granted (possibly lowered) QoS', async () => {
    const c = (await RawClient.connect(b.port, { clientId: uid('s') })).client;
    c.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'open/#', qos: 2 }, { topic: 'secret/#', qos: 1 }, { topic: 'limited/x', qos: 2 }] });
    const ack = await c.next<ISubackPacket>('suback');
    expect(ack.granted).toEqual([2, 0x87, 0]);
    c.destroy();
  });

  it('3.1.1: a refused filter is 0x80', async () => {
    const c = (await RawClient.connect(b.port, { clientId: uid('s') }, 4)).client;
    c.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'secret/a', qos: 0 }, { topic: 'open/a', qos: 1 }] });
    expect((await c.next<ISubackPacket>('suback')).granted).toEqual([0x80, 1]);
    c.destroy();
  });

  it('a refused filter receives nothing', async () => {
    const c = (await RawClient.connect(b.port, { clientId: uid('s') })).client;
    c.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'secret/a', qos: 0 }] });
    await c.next('suback');
    const p = (await RawClient.connect(b.port, { clientId: uid('p') })).client;
    p.send({ cmd: 'publish', topic: 'secret/a', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false });
    expect((await p.next<IPubackPacket>('puback')).reasonCode).toBe(0x10);
    await c.ping();
    expect(c.all('publish')).toHaveLength(0);
    c.destroy();
    p.destroy();
  });
});

describe('authorizeDelivery, onPublish, lifecycle hooks', () => {
  it('authorizeDelivery filters per subscriber', async () => {
    const topic = uid('deliv');
    const picky = (await RawClient.connect(b.port, { clientId: uid('picky') })).client;
    const easy = (await RawClient.connect(b.port, { clientId: uid('easy') })).client;
    for (const c of [picky, easy]) {
      c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] });
      await c.next('suback');
    }
    const p = (await RawClient.connect(b.port, { clientId: uid('p') })).client;
    for (const payload of ['a', 'not-for-picky', 'b']) p.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, retain: false, dup: false });
    await p.ping();
    await picky.ping();
    await easy.ping();
    expect(picky.all<IPublishPacket>('publish').map((x) => x.payload.toString())).toEqual(['a', 'b']);
    expect(easy.all<IPublishPacket>('publish').map((x) => x.payload.toString())).toEqual(['a', 'not-for-picky', 'b']);
    for (const c of [picky, easy, p]) c.destroy();
  });

  it('onPublish may consume a message: it is not routed', async () => {
    const s = (await RawClient.connect(b.port, { clientId: uid('s') })).client;
    s.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'svc/#', qos: 0 }] });
    await s.next('suback');
    const id = uid('p');
    const p = (await RawClient.connect(b.port, { clientId: id })).client;
    p.send({ cmd: 'publish', topic: 'svc/req', payload: Buffer.from('req'), qos: 1, messageId: 1, retain: false, dup: false, properties: { responseTopic: 'r' } });
    expect((await p.next<IPubackPacket>('puback')).reasonCode).toBe(0);
    await s.ping();
    expect(s.all('publish')).toHaveLength(0);
    const m = consumed.at(-1)!;
    expect([m.topic, m.payload.toString(), m.senderId, m.properties?.responseTopic]).toEqual(['svc/req', 'req', id, 'r']);
    p.destroy();
    s.destroy();
  });

  it('broker.publish() from a service reaches subscribers', async () => {
    const topic = uid('internal');
    const c = await connectClient(b.port, { clientId: uid('s') });
    const got = collect(c);
    await c.subscribeAsync(topic, { qos: 1 });
    b.server.broker.publish({ topic, payload: Buffer.from('from-service'), qos: 1, retain: false, origin: 'rules', properties: { contentType: 'text/plain' } });
    const [m] = await got.wait(1);
    expect(m!.payload.toString()).toBe('from-service');
    expect(m!.packet.properties?.contentType).toBe('text/plain');
    await c.endAsync();
  });

  it('onConnect, onSubscribe and onDisconnect (graceful or not)', async () => {
    events.length = 0;
    const a = (await RawClient.connect(b.port, { clientId: 'ev-a', username: 'u1' })).client;
    a.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 't/#', qos: 2 }, { topic: 'secret/x', qos: 0 }] });
    await a.next('suback');
    a.send({ cmd: 'disconnect', reasonCode: 0 });
    await a.waitClosed();
    const c = (await RawClient.connect(b.port, { clientId: 'ev-b' })).client;
    c.destroy();
    await until(() => events.length === 5, 2000, 'events');
    expect(events).toEqual(['connect ev-a u1', 'subscribe ev-a t/# 2', 'disconnect ev-a true', 'connect ev-b -', 'disconnect ev-b false']);
  });
});
