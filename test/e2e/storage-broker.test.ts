/**
 * Durable storage inside a running broker (in process, real sockets, MQTT.js): store-once
 * fan-out, `edb storage show` against the live folder, metrics, refusing when full.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { testConfig } from '../../src/config/load.js';
import { startEdb, type EdbServer } from '../../src/server.js';
import type { DurableStorage } from '../../src/storage/durable.js';
import { registerStorageMetrics } from '../../src/storage/metrics.js';
import { CLI } from '../helpers/process.js';

const run = promisify(execFile);
const silent = pino({ level: 'silent' });

async function durableServer(over: Parameters<typeof testConfig>[0] = {}): Promise<EdbServer> {
  return startEdb(testConfig({ storage: 'durable', ...over }), silent);
}

async function persistentSubscribers(port: number, n: number, filter: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    const c = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `keeper-${i}`, clean: false, properties: { sessionExpiryInterval: 3600 }, reconnectPeriod: 0 });
    await c.subscribeAsync(filter, { qos: 1 });
    await c.endAsync();
  }
}

/** Bytes this process has had written to storage (Linux /proc/self/io: page cache dirtied, LMDB and log alike). */
function diskWritten(): number | undefined {
  try {
    return Number(/write_bytes: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
  } catch {
    return undefined;
  }
}

/**
 * Bytes per message for `messages` QoS 1 publishes to offline persistent sessions: appended to
 * the log, and written to disk in all (the log, LMDB's session records and iterators).
 */
async function bytesPerMessage(subscribers: number, messages: number): Promise<{ log: number; disk: number | undefined }> {
  const srv = await durableServer();
  try {
    const port = srv.port('mqtt');
    await persistentSubscribers(port, subscribers, 'fan/#');
    await srv.storage.flushed();
    await new Promise((r) => setTimeout(r, 200)); // the subscribers' own records written first
    const log = (srv.storage as DurableStorage).messages;
    const before = log.metrics.bytesAppended;
    const diskBefore = diskWritten();
    const pub = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: 'fan-pub', reconnectPeriod: 0 });
    for (let i = 0; i < messages; i++) await pub.publishAsync(`fan/${i}`, Buffer.alloc(100, i & 0xff), { qos: 1 });
    await new Promise((r) => setTimeout(r, 200)); // what the last turn wrote
    const diskAfter = diskWritten();
    await pub.endAsync();
    // every subscriber has every message queued: nothing was dropped on the way
    for (let i = 0; i < subscribers; i++) expect(srv.broker.sessions.get(`keeper-${i}`)!.queued).toBe(messages);
    return { log: (log.metrics.bytesAppended - before) / messages, disk: diskBefore === undefined ? undefined : (diskAfter! - diskBefore) / messages };
  } finally {
    await srv.stop();
  }
}

describe('durable storage in a running broker', () => {
  it('stores each message once: bytes per message with 50 persistent subscribers = with 1 in the log, at most 1.2x on disk', { timeout: 90_000 }, async () => {
    const one = await bytesPerMessage(1, 100);
    const fifty = await bytesPerMessage(50, 100);
    expect(one.log).toBeGreaterThan(100); // the payload is in there
    expect(fifty.log).toBe(one.log);
    // on disk in all (the bound: at most 1.2x); only where the kernel counts this
    // process's writes to a block device (not on tmpfs, not outside Linux)
    if (one.disk !== undefined && one.disk >= 100) {
      console.log(`bytes written to disk per message: ${Math.round(one.disk)} with 1 persistent subscriber, ${Math.round(fifty.disk!)} with 50 (log: ${one.log})`);
      expect(fifty.disk! / one.disk).toBeLessThanOrEqual(1.2);
    } else console.log(`bytes written to disk per message not counted here (/proc/self/io: ${one.disk}); the log's bytes checked only`);
  });

  it('edb storage show reads the live folder: generations, sessions and their lag; metrics count commits', { timeout: 60_000 }, async () => {
    const srv = await durableServer();
    try {
      const port = srv.port('mqtt');
      await persistentSubscribers(port, 2, 'show/#');
      const pub = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: 'show-pub', reconnectPeriod: 0 });
      for (let i = 0; i < 20; i++) await pub.publishAsync('show/x', `m${i}`, { qos: 1 });
      await pub.publishAsync('show/kept', 'r', { qos: 1, retain: true });
      await pub.endAsync();
      await new Promise((r) => setTimeout(r, 50)); // iterators are written at the end of the turn
      const { stdout } = await run(process.execPath, [CLI, 'storage', 'show', '--json', '--data-dir', srv.config.dataDir], { timeout: 20_000 });
      const report = JSON.parse(stdout) as { generations: { valid: boolean }[]; retained: number; sessions: { clientId: string; lagBytes: number }[]; oldestStoredAt: number };
      expect(report.generations.length).toBeGreaterThanOrEqual(1);
      expect(report.generations.every((g) => g.valid)).toBe(true);
      expect(report.retained).toBe(1);
      expect(report.sessions.map((s) => s.clientId).sort()).toEqual(['keeper-0', 'keeper-1']);
      for (const s of report.sessions) expect(s.lagBytes).toBeGreaterThan(20 * 20);
      expect(report.oldestStoredAt).toBeGreaterThan(0);
      const text = (await run(process.execPath, [CLI, 'storage', 'show', '--data-dir', srv.config.dataDir], { timeout: 20_000 })).stdout;
      expect(text).toMatch(/GENERATION/);
      expect(text).toMatch(/keeper-0/);

      const registry = new Registry();
      registerStorageMetrics(registry, srv.storage);
      const metrics = await registry.metrics();
      expect(metrics).toMatch(/edb_storage_messages_total \d+/);
      const commits = Number(/edb_storage_commits_total (\d+)/.exec(metrics)![1]);
      const messages = Number(/edb_storage_messages_total (\d+)/.exec(metrics)![1]);
      expect(messages).toBe(21); // the retained one too: persistent sessions want it
      expect(commits).toBeGreaterThan(0);
      expect(commits).toBeLessThanOrEqual(messages);
    } finally {
      await srv.stop();
    }
  });

  it('edb storage show on a folder without durable storage: exit code 2', async () => {
    const dir = testConfig().dataDir;
    await expect(run(process.execPath, [CLI, 'storage', 'show', '--data-dir', dir], { timeout: 20_000 })).rejects.toMatchObject({ code: 2 });
  });

  it('at the size cap: QoS 1 for a persistent session gets 0x97 (v5) and no ack (3.1.1); QoS 0 and non-persistent traffic flow', { timeout: 60_000 }, async () => {
    const srv = await durableServer({ storageMaxBytes: 20_000, storageGeneration: '1h' });
    try {
      const port = srv.port('mqtt');
      await persistentSubscribers(port, 1, 'cap/#');
      const pub = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: 'cap-pub', reconnectPeriod: 0 });
      let refusedCode: number | undefined;
      for (let i = 0; i < 100 && refusedCode === undefined; i++) {
        try {
          await pub.publishAsync('cap/x', Buffer.alloc(1000, 1), { qos: 1 });
        } catch (err) {
          refusedCode = (err as { code?: number }).code;
        }
      }
      expect(refusedCode).toBe(0x97);
      expect(srv.storage.full).toBe(true);
      // a topic no persistent session wants: acknowledged as ever
      await pub.publishAsync('elsewhere/x', 'fine', { qos: 1 });
      // QoS 0 keeps flowing to an online subscriber
      const live = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: 'live', reconnectPeriod: 0 });
      await live.subscribeAsync('cap/#', { qos: 1 });
      const got = new Promise<string>((resolve) => live.on('message', (_t, p) => resolve(p.toString())));
      await pub.publishAsync('cap/zero', 'qos0', { qos: 0 });
      expect(await got).toBe('qos0');
      // 3.1.1: no PUBACK at all
      const v3 = await mqtt.connectAsync({ port, protocolVersion: 4, clientId: 'cap-v3', reconnectPeriod: 0 });
      const acked = await Promise.race([v3.publishAsync('cap/x', 'x', { qos: 1 }).then(() => true), new Promise((r) => setTimeout(() => r(false), 1000))]);
      expect(acked).toBe(false);
      v3.end(true);
      await live.endAsync();
      await pub.endAsync();
    } finally {
      await srv.stop();
    }
  });
});
