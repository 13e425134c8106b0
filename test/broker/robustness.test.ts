import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';
import { frameLength } from '../../src/broker/framing.js';
import { collect, connectClient } from '../helpers/mqttjs.js';

/** `count` QoS 0 PUBLISH packets on `topic` in one buffer; payload = 4-byte sequence number + filler. */
function burst(topic: string, from: number, count: number, size: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = from; i < from + count; i++) {
    const payload = Buffer.alloc(size, 0x61);
    payload.writeUInt32BE(i, 0);
    parts.push(mqttPacket.generate({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, { protocolVersion: 4 }));
  }
  return Buffer.concat(parts);
}

/** The bytes split exactly into whole MQTT frames (none announces more than what follows). */
function wholeFrames(data: Buffer): boolean {
  let offset = 0;
  const out = { remaining: 0 };
  while (offset < data.length) {
    const len = frameLength(data, offset, out);
    if (len < 0 || offset + len > data.length) return false;
    offset += len;
  }
  return true;
}

const seqs = (c: RawClient): number[] => c.all<IPublishPacket>('publish').map((p) => Buffer.from(p.payload).readUInt32BE(0));

describe('hostile input affects only its own connection', () => {
  let b: TestBroker;
  beforeAll(async () => {
    b = await startBroker({ maxPacketSize: 4096 });
  });
  afterAll(() => b.stop());

  it('random bytes, before and after CONNECT, while two clients keep exchanging', async () => {
    const sub = await connectClient(b.port, { clientId: 'steady-sub' });
    const got = collect(sub);
    await sub.subscribeAsync('steady/#', { qos: 1 });
    const pub = await connectClient(b.port, { clientId: 'steady-pub', protocolVersion: 4 });
    let sent = 0;

    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.boolean(), fc.constantFrom<4 | 5>(4, 5), async (bytes, connectFirst, version) => {
        const c = await RawClient.open(b.port, version);
        if (connectFirst) {
          c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: 0, clientId: '' });
          await c.next('connack');
        }
        c.sendBytes(Buffer.from(bytes));
        // either the broker answers/ignores and the connection lives, or it is closed; never anything else
        await new Promise((r) => setTimeout(r, 5));
        c.destroy();
        await pub.publishAsync(`steady/${sent}`, String(sent), { qos: 1 });
        sent++;
      }),
      { numRuns: 60 },
    );
    const msgs = await got.wait(sent);
    expect(msgs.map((m) => m.payload.toString())).toEqual(Array.from({ length: sent }, (_, i) => String(i)));
    await until(() => b.server.broker.connections.size === 2, 3000, 'hostile connections to be cleaned up');
    // every bad input was answered as a protocol matter, none reached an internal error (0x83)
    expect(b.server.broker.stats.protocolErrors['implementation_specific_error']).toBeUndefined();
    await pub.endAsync();
    await sub.endAsync();
  });

  it('mutated valid packets (bit flips, truncation, splices) never cause an internal error', async () => {
    const v5 = (p: Packet): Buffer => mqttPacket.generate(p, { protocolVersion: 5 });
    const seeds: Buffer[] = [
      v5({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('hello'), qos: 1, messageId: 7, retain: true, dup: false, properties: { payloadFormatIndicator: true, messageExpiryInterval: 10, topicAlias: 1, responseTopic: 'r', correlationData: Buffer.from([1]), userProperties: { k: 'v' }, contentType: 'c' } }),
      v5({ cmd: 'publish', topic: 'x', payload: Buffer.from('q2'), qos: 2, messageId: 9, retain: false, dup: false }),
      v5({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'a/+', qos: 2, nl: true, rap: true, rh: 1 }, { topic: '$share/g/b/#', qos: 1 }], properties: { subscriptionIdentifier: 5, userProperties: { a: 'b' } } }),
      v5({ cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['a/+', 'b'] }),
      v5({ cmd: 'pubrel', messageId: 9, reasonCode: 0x92 }),
      v5({ cmd: 'puback', messageId: 1, reasonCode: 0x10 }),
      v5({ cmd: 'disconnect', reasonCode: 0x04, properties: { sessionExpiryInterval: 0, reasonString: 'bye' } }),
      v5({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'm', authenticationData: Buffer.from([1]) } }),
    ];
    const mutation = fc.record({
      seed: fc.nat({ max: seeds.length - 1 }),
      flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
      cut: fc.option(fc.nat()),
    });
    // FUZZ_RUNS=6000 for a longer hunt (CI runs 150)
    const numRuns = Number(process.env['FUZZ_RUNS'] ?? 150);
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(mutation, async ({ seed, flips, cut }) => {
        const bytes = Buffer.from(seeds[seed]!);
        for (const [at, value] of flips) bytes[1 + (at % (bytes.length - 1))] = value; // keep the packet type
        const data = cut === null ? bytes : bytes.subarray(0, 1 + (cut % bytes.length));
        const { client } = await RawClient.connect(b.port, { clientId: '', properties: { topicAliasMaximum: 5 } });
        client.sendBytes(data);
        if (wholeFrames(data)) {
          // the broker has every byte it was promised: it must answer the next packet or have closed
          client.send({ cmd: 'pingreq' });
          await Promise.race([client.next('pingresp', () => true, 2000), client.closedPromise]);
          if (!client.closed) expect(client.all('pingresp')).toHaveLength(1);
        }
        client.destroy();
        runs++;
      }),
      { numRuns },
    );
    expect(runs).toBe(numRuns);
    expect(b.server.broker.stats.protocolErrors['implementation_specific_error']).toBeUndefined();
    // and the broker still serves
    const { client, connack } = await RawClient.connect(b.port, { clientId: 'after-fuzz' });
    expect(connack.reasonCode).toBe(0);
    await client.ping();
    client.destroy();
  });

  it('truncated packets, oversize announcements and abrupt closes mid-packet', async () => {
    const sub = await connectClient(b.port, { clientId: 'steady-sub2' });
    const got = collect(sub);
    await sub.subscribeAsync('steady2', { qos: 0 });
    const valid = mqttPacket.generate({ cmd: 'publish', topic: 'steady2', payload: Buffer.from('ok'), qos: 1, messageId: 1, retain: false, dup: false }, { protocolVersion: 5 });
    const hostile: Buffer[] = [
      valid.subarray(0, valid.length - 1), // then closed mid-packet
      Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), // 256 MB announced
      Buffer.from([0x82]), // a lone header byte
      Buffer.alloc(10_000, 0xff),
    ];
    for (const bytes of hostile) {
      const { client } = await RawClient.connect(b.port, { clientId: '' });
      client.sendBytes(bytes);
      client.destroy();
    }
    const pub = (await RawClient.connect(b.port, { clientId: 'steady-pub2' })).client;
    pub.sendBytes(valid);
    await pub.next('puback');
    const [m] = await got.wait(1);
    expect(m!.payload.toString()).toBe('ok');
    pub.destroy();
    await sub.endAsync();
  });
});

describe('reading while a CONNECT is being authenticated', () => {
  it('the broker stops reading until the hook answers, then serves everything sent meanwhile, in order', async () => {
    const b = await startBroker({ maxQueuedMessages: 100 });
    let admit: () => void = () => undefined;
    const admitted = new Promise<void>((resolve) => (admit = resolve));
    b.server.broker.addHooks({
      async authenticate(req) {
        if (req.clientId === 'slow-auth') await admitted; // e.g. password hashing, a remote check
        return { ok: true };
      },
    });
    try {
      const sub = (await RawClient.connect(b.port, { clientId: 'auth-sub' }, 4)).client;
      sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'early', qos: 0 }] });
      await sub.next('suback');
      const N = 4000;
      const c = await RawClient.open(b.port, 4);
      const before = b.server.broker.stats.bytesReceived;
      c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'slow-auth' });
      c.sendBytes(burst('early', 0, N, 1024)); // 4 MB pipelined behind the CONNECT
      await new Promise((r) => setTimeout(r, 300));
      // unauthenticated bytes are not read into memory without bound
      expect(b.server.broker.stats.bytesReceived - before).toBeLessThan(512 * 1024);
      admit();
      await c.next('connack');
      await until(() => sub.all('publish').length >= N, 10_000, 'the pipelined messages');
      expect(seqs(sub).every((v, i) => v === i)).toBe(true);
      c.destroy();
      sub.destroy();
    } finally {
      admit();
      await b.stop();
    }
  });
});

describe('bounded outbound queue', () => {
  it('a subscriber that never reads: QoS 0 dropped and counted, queue within bounds, publisher and others unaffected', async () => {
    const b = await startBroker({ maxQueuedMessages: 50, maxQueuedBytes: 64 * 1024, stallTimeoutMs: 200 });
    try {
      const slow = (await RawClient.connect(b.port, { clientId: 'never-reads' }, 4)).client;
      slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood', qos: 0 }] });
      await slow.next('suback');
      slow.socket.pause();
      const fast = await connectClient(b.port, { clientId: 'fast-reader' });
      const fastGot = collect(fast);
      await fast.subscribeAsync('flood', { qos: 0 });
      const pub = (await RawClient.connect(b.port, { clientId: 'flooder' }, 4)).client;
      const session = b.server.broker.sessions.get('never-reads')!;
      let sent = 0;
      let maxQueued = 0;
      // flood until the broker has to drop (kernel socket buffers absorb the first megabytes)
      while ((b.server.broker.stats.dropped['queue_full'] ?? 0) === 0 && sent < 40_000) {
        pub.sendBytes(burst('flood', sent, 1000, 1024));
        sent += 1000;
        await pub.ping(5000);
        maxQueued = Math.max(maxQueued, session.queued);
        expect(session.queued).toBeLessThanOrEqual(50);
        expect(session.queueBytes).toBeLessThanOrEqual(64 * 1024 + 1100);
      }
      const dropped = b.server.broker.stats.dropped['queue_full'] ?? 0;
      expect(dropped).toBeGreaterThan(0);
      expect(maxQueued).toBeGreaterThan(0);
      // the reader that keeps up got everything, in order
      const all = await fastGot.wait(sent, 10_000);
      expect(all.length).toBe(sent);
      expect(all.every((m, i) => m.payload.readUInt32BE(0) === i)).toBe(true);
      // the slow one, once it reads again, gets an in-order subset with the drops missing
      slow.socket.resume();
      // PINGRESP may overtake queued messages, so wait for the count instead
      await until(() => seqs(slow).length + dropped >= sent, 10_000, 'the queue to drain').catch(() => undefined);
      const got = seqs(slow);
      expect(got.length).toBeLessThan(sent);
      expect(got.length).toBeGreaterThan(0);
      expect(got.every((v, i) => i === 0 || v > got[i - 1]!)).toBe(true);
      expect(got.length + dropped).toBe(sent);
      pub.destroy();
      slow.destroy();
      await fast.endAsync();
    } finally {
      await b.stop();
    }
  });

  // memory storage: durable storage leaves a full persistent session's messages in the log instead
  // (test/e2e/storage-paging.test.ts)
  it('EDB_QUEUE_FULL_POLICY=disconnect: a QoS 1 message for a full queue disconnects the client (0x97) and stays in its session', async () => {
    const b = await startBroker({ maxQueuedMessages: 20, maxQueuedBytes: 64 * 1024, stallTimeoutMs: 200, queueFullPolicy: 'disconnect', storage: 'memory' });
    try {
      const slow = (await RawClient.connect(b.port, { clientId: 'slow-q1', clean: false, properties: { sessionExpiryInterval: 300 } })).client;
      slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'q1', qos: 1 }] });
      await slow.next('suback');
      slow.socket.pause();
      const pub = (await RawClient.connect(b.port, { clientId: 'q1-pub' }, 4)).client;
      let sent = 0;
      while (b.server.broker.client('slow-q1') && sent < 40_000) {
        const parts: Buffer[] = [];
        for (let i = sent; i < sent + 500; i++) {
          const payload = Buffer.alloc(1024, 0x61);
          payload.writeUInt32BE(i, 0);
          parts.push(mqttPacket.generate({ cmd: 'publish', topic: 'q1', payload, qos: 1, messageId: (i % 65535) + 1, retain: false, dup: false }, { protocolVersion: 4 }));
        }
        pub.sendBytes(Buffer.concat(parts));
        sent += 500;
        await pub.ping(5000);
      }
      expect(b.server.broker.client('slow-q1')).toBeUndefined();
      expect(b.server.broker.stats.queueFullDisconnects).toBe(1);
      expect(b.server.broker.stats.dropped['queue_full'] ?? 0).toBe(0);
      // the session kept what the connection could not take, the message that overflowed included
      const session = b.server.broker.sessions.get('slow-q1')!;
      expect(session.queued).toBeGreaterThan(20);
      // the reconnect gets it, in order, after whatever the old socket still had
      slow.socket.resume();
      const before = seqs(slow);
      const again = (await RawClient.connect(b.port, { clientId: 'slow-q1', clean: false, properties: { sessionExpiryInterval: 300 } })).client;
      // (no PUBACKs from this raw client: the first Receive Maximum's worth is enough to look at)
      await until(() => seqs(again).length > 20, 10_000, 'the session queue to arrive');
      const after = seqs(again);
      expect(after.length).toBeGreaterThan(20);
      expect(after.every((v, i) => i === 0 || v > after[i - 1]!)).toBe(true);
      if (before.length > 0) expect(after[0]!).toBeGreaterThan(before[0]!);
      again.destroy();
      pub.destroy();
      slow.destroy();
    } finally {
      await b.stop();
    }
  });

  it('a held publisher is released when the congested subscriber goes away', async () => {
    const b = await startBroker({ maxQueuedMessages: 20, stallTimeoutMs: 60_000 });
    try {
      const slow = (await RawClient.connect(b.port, { clientId: 'stuck' }, 4)).client;
      slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'hold', qos: 0 }] });
      await slow.next('suback');
      slow.socket.pause();
      const pub = (await RawClient.connect(b.port, { clientId: 'held' }, 4)).client;
      const publisher = b.server.broker.online.get('held')!;
      const subscriber = b.server.broker.online.get('stuck')!;
      let sent = 0;
      while (!subscriber.out.blockedPublishers.has(publisher) && sent < 40_000) {
        pub.sendBytes(burst('hold', sent, 500, 1024));
        sent += 500;
        // either the broker read it all (the ping is answered) or it holds the publisher back
        pub.send({ cmd: 'pingreq' });
        await Promise.race([pub.next('pingresp', () => true, 5000), until(() => subscriber.out.blockedPublishers.has(publisher), 5000)]);
      }
      expect(subscriber.out.blockedPublishers.has(publisher)).toBe(true);
      // the publisher is paused: a ping is not answered while the subscriber is stuck
      pub.send({ cmd: 'pingreq' });
      await expect(pub.next('pingresp', () => true, 300)).rejects.toThrow(/timed out/);
      slow.destroy();
      await pub.next('pingresp', () => true, 5000);
      expect(b.server.broker.stats.dropped['queue_full'] ?? 0).toBe(0);
      pub.destroy();
    } finally {
      await b.stop();
    }
  });
});

describe('flow control and keep alive', () => {
  it('a publisher held back by the broker is not disconnected for keep alive: the broker was not reading', async () => {
    const b = await startBroker({ maxQueuedMessages: 20, stallTimeoutMs: 60_000 });
    try {
      const slow = (await RawClient.connect(b.port, { clientId: 'stuck-ka' }, 4)).client;
      slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'hold-ka', qos: 0 }] });
      await slow.next('suback');
      slow.socket.pause();
      const pub = (await RawClient.connect(b.port, { clientId: 'held-ka', keepalive: 1 })).client;
      const publisher = b.server.broker.online.get('held-ka')!;
      const subscriber = b.server.broker.online.get('stuck-ka')!;
      let sent = 0;
      while (!subscriber.out.blockedPublishers.has(publisher) && sent < 40_000) {
        pub.sendBytes(burst('hold-ka', sent, 500, 1024));
        sent += 500;
        pub.send({ cmd: 'pingreq' });
        await Promise.race([pub.next('pingresp', () => true, 5000), until(() => subscriber.out.blockedPublishers.has(publisher), 5000)]);
      }
      expect(subscriber.out.blockedPublishers.has(publisher)).toBe(true);
      // the publisher keeps pinging, but the broker holds its socket paused for 2.5 keep-alive periods
      const pinger = setInterval(() => pub.send({ cmd: 'pingreq' }), 400);
      await new Promise((r) => setTimeout(r, 2500));
      clearInterval(pinger);
      expect(pub.all('disconnect')).toEqual([]);
      expect(pub.closed).toBe(false);
      slow.destroy();
      await pub.next('pingresp', () => true, 5000);
      await pub.ping();
      expect(pub.closed).toBe(false);
      pub.destroy();
    } finally {
      await b.stop();
    }
  });


  it.each([
    ['message bound', { maxQueuedMessages: 100 }],
    ['byte bound below the message high-water mark', { maxQueuedMessages: 1000, maxQueuedBytes: 64 * 1024 }],
  ])('a burst to a slow but reading subscriber is delivered completely (%s)', async (_name, limits) => {
    const b = await startBroker({ ...limits, stallTimeoutMs: 5000 });
    try {
      const N = 6000;
      const sub = (await RawClient.connect(b.port, { clientId: 'slow-reader' }, 4)).client;
      sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'burst', qos: 0 }] });
      await sub.next('suback');
      // read slowly: 64 KB at most every 2 ms
      sub.socket.on('data', () => {
        sub.socket.pause();
        setTimeout(() => sub.socket.resume(), 2);
      });
      const pub = (await RawClient.connect(b.port, { clientId: 'fast-writer' }, 4)).client;
      pub.sendBytes(burst('burst', 0, N, 1024));
      await pub.ping(20_000);
      await until(() => sub.all('publish').length >= N, 20_000, 'the whole burst').catch((err: Error) => {
        throw new Error(`${err.message}: got ${sub.all('publish').length} of ${N}, dropped ${JSON.stringify(b.server.broker.stats.dropped)}`);
      });
      const got = seqs(sub);
      expect(got.length).toBe(N);
      expect(got.every((v, i) => v === i)).toBe(true);
      expect(b.server.broker.stats.dropped['queue_full'] ?? 0).toBe(0);
      pub.destroy();
      sub.destroy();
    } finally {
      await b.stop();
    }
  }, 30_000);
});
