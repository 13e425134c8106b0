/**
 * Switching EDB_STORAGE on one data folder (issue 10, section 3): durable -> memory starts from
 * the durable data once (the folder is then moved aside and the backup takes over);
 * memory -> durable imports the pending backup (and deletes it). Real brokers on port 0, real
 * clients, the same folder throughout.
 */
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import { testConfig } from '../../src/config/load.js';
import { startEdb, type EdbServer } from '../../src/server.js';
import { silentLogger } from '../../src/log.js';
import { StateStoreClient } from '../../src/state/client.js';
import { formatHlc } from '../../src/state/hlc.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function start(dataDir: string, storage: 'durable' | 'memory'): Promise<EdbServer> {
  return startEdb(testConfig({ host: '127.0.0.1', dataDir, storage, backupEnabled: true, shutdownTimeoutMs: 500 }), silentLogger());
}

/** Connects the persistent subscriber 'keeper' and collects what it is sent for `ms`. */
async function drainKeeper(port: number, ms = 600): Promise<string[]> {
  const got: string[] = [];
  const c = mqtt.connect({ port, protocolVersion: 5, clientId: 'keeper', clean: false, properties: { sessionExpiryInterval: 3600 }, reconnectPeriod: 0 });
  c.on('message', (_t, p) => got.push(p.toString()));
  await new Promise<void>((resolve, reject) => c.once('connect', () => resolve()).once('error', reject));
  await sleep(ms);
  await c.endAsync();
  return got;
}

async function publishAll(port: number, payloads: string[], retained?: [string, string]): Promise<void> {
  const p = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `pub-${Math.random()}`, reconnectPeriod: 0 });
  for (const x of payloads) await p.publishAsync('keep/x', x, { qos: 1 });
  if (retained) await p.publishAsync(retained[0], retained[1], { qos: 1, retain: true });
  await p.endAsync();
}

async function retainedValue(port: number, topic: string): Promise<string | undefined> {
  const c = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `r-${Math.random()}`, reconnectPeriod: 0 });
  let v: string | undefined;
  c.on('message', (_t, p, packet) => {
    if (packet.retain) v = p.toString();
  });
  await c.subscribeAsync(topic, { qos: 1 });
  await sleep(200);
  await c.endAsync();
  return v;
}

async function withState<T>(port: number, fn: (s: StateStoreClient) => Promise<T>): Promise<T> {
  const m = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `s-${Math.random()}`, reconnectPeriod: 0 });
  const s = await StateStoreClient.create(m);
  try {
    return await fn(s);
  } finally {
    await s.close();
    await m.endAsync();
  }
}

describe('switching EDB_STORAGE on one data folder', () => {
  it('durable -> memory starts from the durable data once; memory -> durable imports the pending backup', { timeout: 120_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-switch-'));
    const backupFile = join(dataDir, 'backup', 'snapshot.edb');

    // ---- durable: a persistent session with queued messages, a retained message, a key
    let srv = await start(dataDir, 'durable');
    let port = srv.port('mqtt');
    const k = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: 'keeper', clean: false, properties: { sessionExpiryInterval: 3600 }, reconnectPeriod: 0 });
    await k.subscribeAsync('keep/#', { qos: 1 });
    await k.endAsync();
    await publishAll(port, ['d1', 'd2', 'd3'], ['cfg/a', 'from durable']);
    const v1 = await withState(port, async (s) => formatHlc((await s.set('site', 'durable-value')).version!));
    await srv.stop();
    expect(existsSync(backupFile)).toBe(false); // durable writes no backup

    // ---- memory: everything from the durable folder, which is then moved aside
    srv = await start(dataDir, 'memory');
    port = srv.port('mqtt');
    expect(existsSync(join(dataDir, 'storage'))).toBe(false);
    expect(readdirSync(dataDir).filter((n) => n.startsWith('storage.moved-to-memory-'))).toHaveLength(1);
    expect(await retainedValue(port, 'cfg/a')).toBe('from durable');
    const got = await withState(port, async (s) => s.get('site'));
    expect([got.value?.toString(), formatHlc(got.version!)]).toEqual(['durable-value', v1]);
    expect(await drainKeeper(port)).toEqual(['d1', 'd2', 'd3']);
    // changes in memory mode, kept by its backup on the graceful stop
    await publishAll(port, ['m1', 'm2'], ['cfg/a', 'from memory']);
    await withState(port, (s) => s.set('site', 'memory-value'));
    await srv.stop();
    expect(existsSync(backupFile)).toBe(true);

    // ---- memory again: from the backup, not from the durable data a second time
    srv = await start(dataDir, 'memory');
    port = srv.port('mqtt');
    expect(readdirSync(dataDir).filter((n) => n.startsWith('storage'))).toHaveLength(1);
    expect(await retainedValue(port, 'cfg/a')).toBe('from memory');
    expect((await withState(port, (s) => s.get('site'))).value?.toString()).toBe('memory-value');
    await publishAll(port, ['m3']);
    await srv.stop();

    // ---- durable: the pending backup is imported (and deleted); it is durable from then on
    srv = await start(dataDir, 'durable');
    port = srv.port('mqtt');
    expect(existsSync(backupFile)).toBe(false);
    expect(await retainedValue(port, 'cfg/a')).toBe('from memory');
    expect((await withState(port, (s) => s.get('site'))).value?.toString()).toBe('memory-value');
    await srv.stop();
    srv = await start(dataDir, 'durable');
    port = srv.port('mqtt');
    expect(await drainKeeper(port)).toEqual(['m1', 'm2', 'm3']);
    expect(await retainedValue(port, 'cfg/a')).toBe('from memory');
    expect((await withState(port, (s) => s.get('site'))).value?.toString()).toBe('memory-value');
    await srv.stop();
  });
});
