import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IConnackPacket, IDisconnectPacket, IPublishPacket, ISubackPacket } from 'mqtt-packet';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';
import { connectClient, connectCollecting } from '../helpers/mqttjs.js';

let b: TestBroker;
beforeAll(async () => {
  b = await startBroker({ maxKeepAlive: 1, maxSessionExpiry: 100 });
});
afterAll(() => b.stop());

let n = 0;
const uid = (p: string): string => `${p}-${++n}`;

describe.concurrent('keep alive [MQTT-5-3.1.2-22]', () => {
  it('v5: no packet for 1.5 x keep alive is DISCONNECT 0x8D', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('ka'), keepalive: 1 });
    const t0 = Date.now();
    const d = await client.next<IDisconnectPacket>('disconnect', () => true, 4000);
    const elapsed = Date.now() - t0;
    expect(d.reasonCode).toBe(0x8d);
    expect(elapsed).toBeGreaterThanOrEqual(1400);
    expect(elapsed).toBeLessThan(3500);
    await client.waitClosed();
  });

  it('3.1.1: the connection is closed', async () => {
    const id = uid('ka4');
    const { client } = await RawClient.connect(b.port, { clientId: id, keepalive: 1 }, 4);
    await client.waitClosed(4000);
    expect(client.packets.map((p) => p.cmd)).toEqual(['connack']);
    expect(b.server.broker.client(id)).toBeUndefined();
  });

  it('a client that pings in time stays connected', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('alive'), keepalive: 1 });
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 500));
      await client.ping();
    }
    expect(client.closed).toBe(false);
    client.destroy();
  });

  it('Server Keep Alive: v5 keep alive 0 or over maxKeepAlive is replaced [MQTT-5-3.2.2-21]', async () => {
    const cases: [number, number | undefined][] = [
      [0, 1],
      [600, 1],
      [1, undefined],
    ];
    for (const [asked, server] of cases) {
      const { client, connack } = await RawClient.connect(b.port, { clientId: uid('ska'), keepalive: asked });
      expect(connack.properties?.serverKeepAlive).toBe(server);
      client.destroy();
    }
  });

  it('the Server Keep Alive is enforced', async () => {
    const { client, connack } = await RawClient.connect(b.port, { clientId: uid('ska-enf'), keepalive: 0 });
    expect(connack.properties?.serverKeepAlive).toBe(1);
    const d = await client.next<IDisconnectPacket>('disconnect', () => true, 4000);
    expect(d.reasonCode).toBe(0x8d);
  });
});

describe('session takeover [MQTT-5-3.1.4-3]', () => {
  it('v5: the old connection gets DISCONNECT 0x8E and is closed; the new one works', async () => {
    const id = uid('take');
    const old = (await RawClient.connect(b.port, { clientId: id })).client;
    const fresh = await RawClient.connect(b.port, { clientId: id });
    expect(fresh.connack.reasonCode).toBe(0);
    const d = await old.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x8e);
    await old.waitClosed();
    await fresh.client.ping();
    expect(b.server.broker.clients().filter((c) => c.clientId === id)).toHaveLength(1);
    fresh.client.destroy();
  });

  it('3.1.1: the old connection is closed; subscriptions carry over without clean session', async () => {
    const id = uid('take4');
    const old = (await RawClient.connect(b.port, { clientId: id, clean: false }, 4)).client;
    const topic = uid('t');
    old.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await old.next('suback');
    const fresh = await RawClient.connect(b.port, { clientId: id, clean: false }, 4);
    expect(fresh.connack.sessionPresent).toBe(true);
    await old.waitClosed();
    const { client: p } = await RawClient.connect(b.port, { clientId: uid('p') }, 4);
    p.send({ cmd: 'publish', topic, payload: Buffer.from('after'), qos: 1, messageId: 1, retain: false, dup: false });
    const got = await fresh.client.next<IPublishPacket>('publish');
    expect(got.payload.toString()).toBe('after');
    fresh.client.destroy();
    p.destroy();
  });
});

describe('Clean Start and Session Expiry Interval', () => {
  it('expiry 0: the session ends with the connection', async () => {
    const id = uid('e0');
    const { client } = await RawClient.connect(b.port, { clientId: id, clean: false });
    expect(b.server.broker.sessions.has(id)).toBe(true);
    client.send({ cmd: 'disconnect', reasonCode: 0 });
    await client.waitClosed();
    await until(() => !b.server.broker.sessions.has(id), 1000, 'session to end');
    const again = await RawClient.connect(b.port, { clientId: id, clean: false });
    expect(again.connack.sessionPresent).toBe(false);
    again.client.destroy();
  });

  it('expiry 1: the session is kept for one second, then discarded', async () => {
    const id = uid('e1');
    const { client } = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 1 } });
    client.send({ cmd: 'disconnect', reasonCode: 0 });
    await client.waitClosed();
    const quick = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 1 } });
    expect(quick.connack.sessionPresent).toBe(true);
    quick.client.destroy();
    await quick.client.closedPromise;
    await until(() => !b.server.broker.sessions.has(id), 2500, 'session to expire');
    const late = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 1 } });
    expect(late.connack.sessionPresent).toBe(false);
    late.client.destroy();
  });

  it('an interval over maxSessionExpiry is capped and announced in CONNACK', async () => {
    const { client, connack } = await RawClient.connect(b.port, { clientId: uid('cap'), properties: { sessionExpiryInterval: 5000 } });
    expect(connack.properties?.sessionExpiryInterval).toBe(100);
    client.destroy();
  });

  it('[MQTT-5-3.14.2-2] DISCONNECT may not set an expiry when CONNECT had 0', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: uid('dx') });
    client.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 30 } });
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x82);
    await client.waitClosed();
  });

  it('DISCONNECT may shorten the expiry to 0, ending the session', async () => {
    const id = uid('dshort');
    const { client } = await RawClient.connect(b.port, { clientId: id, properties: { sessionExpiryInterval: 60 } });
    client.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await client.waitClosed();
    await until(() => !b.server.broker.sessions.has(id), 1000, 'session to end');
  });
});

describe('persistent sessions keep subscriptions and QoS 1/2 messages while offline', () => {
  it('v5: queued QoS 1 and 2 in order, QoS 0 not kept', async () => {
    const id = uid('persist');
    const topic = uid('pt');
    const { client: s } = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    s.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 2 }] });
    await s.next<ISubackPacket>('suback');
    s.send({ cmd: 'disconnect', reasonCode: 0 });
    await s.waitClosed();
    const { client: p } = await RawClient.connect(b.port, { clientId: uid('p') });
    p.send({ cmd: 'publish', topic, payload: Buffer.from('q0'), qos: 0, retain: false, dup: false });
    p.send({ cmd: 'publish', topic, payload: Buffer.from('q1'), qos: 1, messageId: 1, retain: false, dup: false });
    p.send({ cmd: 'publish', topic, payload: Buffer.from('q2'), qos: 2, messageId: 2, retain: false, dup: false });
    const ack = await p.next<IConnackPacket & { reasonCode?: number }>('puback');
    expect(ack.reasonCode).toBe(0); // an offline persistent subscriber is a match
    await p.next('pubrec');
    expect(b.server.broker.sessions.get(id)!.queued).toBe(2);
    expect(b.server.broker.queuedMessages()).toBeGreaterThanOrEqual(2);
    const again = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    expect(again.connack.sessionPresent).toBe(true);
    const m1 = await again.client.next<IPublishPacket>('publish');
    const m2 = await again.client.next<IPublishPacket>('publish');
    expect([m1.payload.toString(), m1.qos, m2.payload.toString(), m2.qos]).toEqual(['q1', 1, 'q2', 2]);
    await again.client.ping();
    expect(again.client.all('publish')).toHaveLength(2);
    again.client.destroy();
    p.destroy();
  });

  it('Clean Start on reconnect discards subscriptions and queued messages', async () => {
    const id = uid('discard');
    const topic = uid('dt');
    const { client: s } = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    s.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await s.next('suback');
    s.send({ cmd: 'disconnect', reasonCode: 0 });
    await s.waitClosed();
    const { client: p } = await RawClient.connect(b.port, { clientId: uid('p') });
    p.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false });
    await p.next('puback');
    const again = await RawClient.connect(b.port, { clientId: id, clean: true, properties: { sessionExpiryInterval: 60 } });
    expect(again.connack.sessionPresent).toBe(false);
    p.send({ cmd: 'publish', topic, payload: Buffer.from('y'), qos: 1, messageId: 2, retain: false, dup: false });
    await p.next('puback');
    await again.client.ping();
    expect(again.client.all('publish')).toHaveLength(0);
    expect(b.server.broker.sessions.get(id)!.subscriptions.size).toBe(0);
    again.client.destroy();
    p.destroy();
  });

  it('MQTT.js 3.1.1 with clean: false gets what was published while it was away', async () => {
    const id = uid('js4');
    const topic = uid('jt');
    const s = await connectClient(b.port, { clientId: id, clean: false, protocolVersion: 4 });
    await s.subscribeAsync(topic, { qos: 1 });
    await s.endAsync();
    const p = await connectClient(b.port, { clientId: uid('p'), protocolVersion: 4 });
    for (let i = 0; i < 5; i++) await p.publishAsync(topic, `m${i}`, { qos: 1 });
    const { client: again, got } = await connectCollecting(b.port, { clientId: id, clean: false, protocolVersion: 4 });
    const msgs = await got.wait(5);
    expect(msgs.map((m) => m.payload.toString())).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
    await again.endAsync();
    await p.endAsync();
  });
});

describe('offline queue bound for all sessions together (maxQueuedBytesTotal)', () => {
  it('many persistent sessions cannot queue past the total: the rest is dropped and counted', async () => {
    // memory storage: durable storage leaves an offline session's backlog in the log (test/e2e/storage-paging.test.ts)
    const own = await startBroker({ maxQueuedBytesTotal: 20_000, storage: 'memory' });
    try {
      // ten persistent sessions under ten ids, each subscribed and gone offline
      for (let i = 0; i < 10; i++) {
        const { client: s } = await RawClient.connect(own.port, { clientId: `hoard-${i}`, clean: false, properties: { sessionExpiryInterval: 60 } });
        s.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'hoard/#', qos: 1 }] });
        await s.next('suback');
        s.send({ cmd: 'disconnect', reasonCode: 0 });
        await s.waitClosed();
      }
      const { client: p } = await RawClient.connect(own.port, { clientId: 'hoard-pub' });
      const payload = Buffer.alloc(1000, 0x61);
      for (let i = 1; i <= 20; i++) p.send({ cmd: 'publish', topic: 'hoard/t', payload, qos: 1, messageId: i, retain: false, dup: false });
      for (let i = 1; i <= 20; i++) await p.next('puback');
      const account = own.server.broker.queueAccount.bytes;
      // the bound is checked before each copy: at most one copy (1,007 bytes) past it
      expect(account).toBeGreaterThanOrEqual(20_000);
      expect(account).toBeLessThan(20_000 + 1007);
      expect(own.server.broker.stats.dropped['offline_queue_full']).toBe(10 * 20 - Math.ceil(20_000 / 1007));
      // a session that reconnects gets what it holds, and its queue leaves the total
      const again = await RawClient.connect(own.port, { clientId: 'hoard-0', clean: false, properties: { sessionExpiryInterval: 60 } });
      await again.client.next('publish');
      again.client.send({ cmd: 'disconnect', reasonCode: 0 });
      await again.client.waitClosed();
      expect(own.server.broker.queueAccount.bytes).toBeLessThan(account);
      p.destroy();
    } finally {
      await own.stop();
    }
  });
});

describe('offline queue bound (maxOfflineMessages)', () => {
  it('keeps the first messages up to the bound and counts the rest as dropped', async () => {
    // memory storage (durable storage has no count bound per session: test/e2e/storage-paging.test.ts)
    const own = await startBroker({ maxOfflineMessages: 3, storage: 'memory' });
    try {
      const { client: s } = await RawClient.connect(own.port, { clientId: 'off', clean: false, properties: { sessionExpiryInterval: 60 } });
      s.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'off/t', qos: 1 }] });
      await s.next('suback');
      s.send({ cmd: 'disconnect', reasonCode: 0 });
      await s.waitClosed();
      const { client: p } = await RawClient.connect(own.port, { clientId: 'offp' });
      for (let i = 1; i <= 5; i++) p.send({ cmd: 'publish', topic: 'off/t', payload: Buffer.from(`m${i}`), qos: 1, messageId: i, retain: false, dup: false });
      for (let i = 1; i <= 5; i++) await p.next('puback');
      expect(own.server.broker.stats.dropped['offline_queue_full']).toBe(2);
      const again = await RawClient.connect(own.port, { clientId: 'off', clean: false, properties: { sessionExpiryInterval: 60 } });
      for (let i = 1; i <= 3; i++) expect((await again.client.next<IPublishPacket>('publish')).payload.toString()).toBe(`m${i}`);
      await again.client.ping();
      expect(again.client.all('publish')).toHaveLength(3);
      again.client.destroy();
      p.destroy();
    } finally {
      await own.stop();
    }
  });
});
