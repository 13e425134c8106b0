/**
 * Durable storage: a persistent session keeps a window of its messages in memory and reads the
 * rest of its backlog from the message log as its client acknowledges (storage/sessions.ts).
 * In process, real sockets, MQTT.js clients, a small window so that every path is crossed with
 * a few hundred messages: an offline backlog, a slow online subscriber whose queue fills, a
 * shared subscription's copies and retained copies while paged, a subscription made while
 * paged, and a generation dropped with unread messages. The 200,000-message drain and SIGKILL
 * in the middle of one are in test/fault/storage-backlog.test.ts.
 */
import { Writable } from 'node:stream';
import type { MqttClient } from 'mqtt';
import type { IPubcompPacket, IPublishPacket, IPubrecPacket } from 'mqtt-packet';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { testConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { startEdb, type EdbServer } from '../../src/server.js';
import type { DurableStorage } from '../../src/storage/durable.js';
import { registerStorageMetrics } from '../../src/storage/metrics.js';
import type { DurableSessionStore } from '../../src/storage/sessions.js';
import { closeAll, connectClient, connectCollecting } from '../helpers/mqttjs.js';
import { until } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';

const lines: Record<string, unknown>[] = [];
const logger = pino(
  { level: 'info' },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  }),
);

let server: EdbServer | undefined;
const clients: MqttClient[] = [];

async function start(over: Partial<Config> = {}): Promise<EdbServer> {
  server = await startEdb(testConfig({ storage: 'durable', storageSessionWindow: 20, maxQueuedMessages: 40, ...over }), logger);
  return server;
}

function stats(s: EdbServer) {
  return (s.broker.sessions as DurableSessionStore).sessionLog.pagingStats;
}

const persistent = { clean: false, properties: { sessionExpiryInterval: 3600 } } as const;

async function offlineSubscriber(port: number, clientId: string, filters: string[]): Promise<void> {
  const c = await connectClient(port, { clientId, ...persistent });
  for (const f of filters) await c.subscribeAsync(f, { qos: 1 });
  await c.endAsync();
}

async function publishAll(port: number, msgs: { topic: string; payload: string; retain?: boolean }[]): Promise<void> {
  const p = await connectClient(port, { clientId: `pub-${Math.random().toString(36).slice(2)}` });
  clients.push(p);
  await Promise.all(msgs.map((m) => p.publishAsync(m.topic, m.payload, { qos: 1, retain: m.retain ?? false })));
}

afterEach(async () => {
  await closeAll(...clients.splice(0));
  await server?.stop();
  server = undefined;
  lines.length = 0;
});

describe('durable storage: a session past its memory window reads its backlog from the log', () => {
  it('an offline backlog 25 times the window: everything delivered once, in order, none dropped; only the window in memory', async () => {
    const s = await start();
    const port = s.port('mqtt');
    await offlineSubscriber(port, 'off-1', ['t/#']);
    const msgs = Array.from({ length: 500 }, (_, i) => ({ topic: `t/${i % 5}`, payload: String(i) }));
    await publishAll(port, msgs);
    const session = s.broker.sessions.get('off-1')!;
    // the window, not the backlog, is in memory
    expect(session.queued).toBe(20);
    expect(s.broker.stats.dropped['offline_queue_full'] ?? 0).toBe(0);
    const { client, got } = await connectCollecting(port, { clientId: 'off-1', ...persistent });
    clients.push(client);
    await got.wait(500, 15_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(got.messages.map((m) => Number(m.payload.toString()))).toEqual(msgs.map((_, i) => i));
    expect(stats(s).messagesRead).toBe(480);
    // caught up: live again, the next message comes straight through
    await publishAll(port, [{ topic: 't/0', payload: 'live' }]);
    await got.wait(501);
    expect(got.messages[500]!.payload.toString()).toBe('live');
    expect(stats(s).messagesRead).toBe(480);
    const registry = new Registry();
    registerStorageMetrics(registry, s.storage, stats(s));
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/^edb_storage_session_reads_total 480$/m);
    expect(metrics).toMatch(/^edb_storage_session_skips_total 0$/m);
  });

  it('a slow online subscriber whose queue fills (EDB_QUEUE_FULL_POLICY=disconnect): nothing dropped, no disconnect, all in order', async () => {
    const s = await start({ queueFullPolicy: 'disconnect', maxQueuedMessages: 20, stallTimeoutMs: 100 });
    const port = s.port('mqtt');
    const { client: slow, got } = await connectCollecting(port, { clientId: 'slow-1', ...persistent });
    clients.push(slow);
    await slow.subscribeAsync('s/#', { qos: 1 });
    (slow.stream as unknown as { pause(): void }).pause();
    const msgs = Array.from({ length: 400 }, (_, i) => ({ topic: `s/${i % 3}`, payload: String(i) }));
    await publishAll(port, msgs);
    expect(s.broker.client('slow-1')).toBeDefined();
    expect(s.broker.stats.queueFullDisconnects).toBe(0);
    expect(s.broker.sessions.get('slow-1')!.queued).toBeLessThanOrEqual(20);
    (slow.stream as unknown as { resume(): void }).resume();
    await got.wait(400, 15_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(got.messages.map((m) => Number(m.payload.toString()))).toEqual(msgs.map((_, i) => i));
    expect(s.broker.stats.dropped['queue_full'] ?? 0).toBe(0);
    expect(stats(s).messagesRead).toBeGreaterThan(0);
  });

  it('a shared subscription and a plain one while paged: each copy once, in order; a subscription made while paged gets nothing stored before it', async () => {
    const s = await start();
    const port = s.port('mqtt');
    // alone in its group, offline: it is given every message of the group
    await offlineSubscriber(port, 'mix-1', ['$share/g/sh/#', 'pl/#']);
    const msgs = Array.from({ length: 300 }, (_, i) => ({ topic: i % 2 === 0 ? `sh/${i % 4}` : `pl/${i % 3}`, payload: String(i) }));
    await publishAll(port, msgs);
    // stored (for another persistent session) before the subscription below: not for this one
    await offlineSubscriber(port, 'mix-other', ['late/#']);
    await publishAll(port, [{ topic: 'late/x', payload: 'before' }, { topic: 'late/r', payload: 'retained', retain: true }]);
    // back, acknowledging nothing yet (Receive Maximum 5): its backlog is still in the log when it subscribes
    const connect = { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: false, keepalive: 0, clientId: 'mix-1', properties: { sessionExpiryInterval: 3600, receiveMaximum: 5 } } as const;
    const raw = (await RawClient.connect(port, connect)).client;
    raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'late/#', qos: 1 }] });
    await raw.next('suback');
    expect((s.broker.sessions.get('mix-1') as unknown as { readPosition: unknown }).readPosition).toBeDefined();
    await publishAll(port, [{ topic: 'late/x', payload: 'after' }]);
    // now it acknowledges every PUBLISH
    let acked = 0;
    const ack = (): void => {
      const pubs = raw.all<IPublishPacket>('publish');
      for (; acked < pubs.length; acked++) raw.send({ cmd: 'puback', messageId: pubs[acked]!.messageId! });
    };
    raw.socket.on('data', ack);
    ack();
    await until(() => raw.all('publish').length >= 302, 15_000, 'the backlog');
    await new Promise((r) => setTimeout(r, 300));
    raw.destroy();
    const got = { messages: raw.all<IPublishPacket>('publish') };
    const payloads = got.messages.map((m) => m.payload.toString());
    expect(payloads.filter((p) => /^\d+$/.test(p)).map(Number)).toEqual(msgs.map((_, i) => i));
    // the retained message comes as the subscription's (a direct copy), the later one live; the one stored before it never
    expect(payloads.filter((p) => !/^\d+$/.test(p)).sort()).toEqual(['after', 'retained']);
    expect(payloads.length).toBe(302);
  });

  it('a generation dropped by retention with messages the session had not read: it goes on at the oldest kept, counted and logged', async () => {
    const s = await start({ storageRetention: '1s', storageSessionWindow: 10 });
    const port = s.port('mqtt');
    const log = (s.storage as DurableStorage).messages;
    await offlineSubscriber(port, 'gone-1', ['g/#']);
    // three generations (closed by hand rather than by EDB_STORAGE_GENERATION's clock)
    await publishAll(port, Array.from({ length: 50 }, (_, i) => ({ topic: 'g/a', payload: `old-${i}` })));
    log.roll();
    await new Promise((r) => setTimeout(r, 1100));
    await publishAll(port, Array.from({ length: 50 }, (_, i) => ({ topic: 'g/a', payload: `mid-${i}` })));
    log.roll();
    await publishAll(port, Array.from({ length: 50 }, (_, i) => ({ topic: 'g/a', payload: `new-${i}` })));
    expect(log.sweep()).toBe(1); // the first generation (old-*): the second is less than 1 s older than the third
    expect(stats(s).sessionsSkipped).toBe(1);
    expect(lines.some((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes('had not read yet') && l['clientId'] === 'gone-1')).toBe(true);
    const { client, got } = await connectCollecting(port, { clientId: 'gone-1', ...persistent });
    clients.push(client);
    await until(() => got.messages.some((m) => m.payload.toString() === 'new-49'), 10_000, 'the last message');
    await new Promise((r) => setTimeout(r, 200));
    const payloads = got.messages.map((m) => m.payload.toString());
    // the window held in memory is delivered, then what the log still has, in order, nothing twice
    expect(payloads.slice(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) => `old-${i}`));
    expect(payloads.slice(-50)).toEqual(Array.from({ length: 50 }, (_, i) => `new-${i}`));
    expect(new Set(payloads).size).toBe(payloads.length);
    // what was in the dropped generation past the window is gone; the next one is all there
    expect(payloads).toEqual([...Array.from({ length: 10 }, (_, i) => `old-${i}`), ...Array.from({ length: 50 }, (_, i) => `mid-${i}`), ...Array.from({ length: 50 }, (_, i) => `new-${i}`)]);
  });
});

describe('durable storage: a QoS 2 PUBLISH waiting for its packet id to be on disk', () => {
  it('is not resent by a reconnect before its packet id is stored (a crash then would deliver it twice)', async () => {
    const s = await start();
    const port = s.port('mqtt');
    const connect = { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: false, keepalive: 0, clientId: 'q2-hold', properties: { sessionExpiryInterval: 300 } } as const;
    const first = (await RawClient.connect(port, connect)).client;
    first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'q2/t', qos: 2 }] });
    await first.next('suback');
    const pub = (await RawClient.connect(port, { clientId: 'q2-pub' })).client;
    // every QoS 2 PUBLISH the subscriber gets: was its packet id on disk (the iterator's `sent`) when it arrived?
    const early: string[] = [];
    const delivered = new Set<string>();
    const watch = (c: RawClient): void => {
      let seen = 0;
      c.socket.on('data', () => {
        const pubs = c.all<IPublishPacket>('publish');
        for (; seen < pubs.length; seen++) {
          const p = pubs[seen]!;
          delivered.add(p.payload.toString());
          const it = s.storage.iterator('q2-hold');
          const stored = it?.sent?.some((x) => x.id === p.messageId) || it?.pubrel.includes(p.messageId!);
          if (!stored) early.push(`${p.payload.toString()} id ${p.messageId}${p.dup ? ' dup' : ''}`);
        }
      });
    };
    watch(first);
    const rounds = 30;
    let current = first;
    for (let i = 1; i <= rounds; i++) {
      // the next connection is open; its CONNECT (a takeover) goes right behind the PUBLISH
      const next = await RawClient.open(port, 5);
      watch(next);
      pub.send({ cmd: 'publish', topic: 'q2/t', payload: Buffer.from(`m${i}`), qos: 2, messageId: i, retain: false, dup: false });
      next.send(connect);
      await next.next('connack');
      await current.waitClosed();
      current = next;
      const rec = await pub.next<IPubrecPacket>('pubrec', (p) => p.messageId === i);
      pub.send({ cmd: 'pubrel', messageId: rec.messageId });
      await pub.next('pubcomp', (p) => (p as IPubcompPacket).messageId === i);
    }
    // each held one is sent by the connection that took over, once its id is on disk
    await until(() => delivered.size === rounds, 5000, 'every message');
    expect(early).toEqual([]);
    current.destroy();
    pub.destroy();
  });
});
