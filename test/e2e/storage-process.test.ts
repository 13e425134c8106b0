/**
 * Durable storage with a real `edb start` process: folders it cannot use, and (below) what
 * survives a SIGKILL.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from '../helpers/process.js';

async function runStart(env: Record<string, string>): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn(process.execPath, [CLI, 'start'], {
    env: { ...process.env, EDB_MQTT_PORT: '0', EDB_MQTTS_PORT: '-1', EDB_WS_PORT: '-1', EDB_WSS_PORT: '-1', EDB_HTTP_PORT: '-1', EDB_RULES_PORT: '-1', EDB_LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stderr, stdout };
}

describe('edb start with EDB_STORAGE=durable', () => {
  it('a storage folder it cannot open: a clear error naming it, exit code 2, no stack trace', async () => {
    const base = mkdtempSync(join(tmpdir(), 'edb-bad-'));
    const blocker = join(base, 'storage');
    writeFileSync(blocker, 'a file where the storage folder should be');
    const r = await runStart({ EDB_STORAGE: 'durable', EDB_DATA_DIR: base });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(blocker);
    expect(r.stderr).toMatch(/cannot open the storage folder/);
    expect(r.stderr + r.stdout).not.toMatch(/\n\s+at /);
  });

  it('a data.mdb that is not LMDB: exit code 2 naming the file', async () => {
    const base = mkdtempSync(join(tmpdir(), 'edb-bad-'));
    const kv = join(base, 'storage', 'kv');
    (await import('node:fs')).mkdirSync(kv, { recursive: true });
    writeFileSync(join(kv, 'data.mdb'), Buffer.alloc(16384, 0x55));
    const r = await runStart({ EDB_STORAGE: 'durable', EDB_DATA_DIR: base });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(join(kv, 'data.mdb'));
    expect(r.stderr).toMatch(/not an LMDB file/);
  });

  it('a retention that is not a duration is a configuration error (exit code 2)', async () => {
    const base = mkdtempSync(join(tmpdir(), 'edb-bad-'));
    const r = await runStart({ EDB_STORAGE: 'durable', EDB_DATA_DIR: base, EDB_STORAGE_RETENTION: 'seven days' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/EDB_STORAGE_RETENTION=seven days/);
  });
});

// ------------------------------------------------------------------ SIGKILL

import mqtt from 'mqtt';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { StateStoreClient } from '../../src/state/client.js';
import { formatHlc } from '../../src/state/hlc.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every retained message under `filter`, collected until `expected` arrived or 10 s passed. */
async function retainedUnder(port: number, filter: string, expected: number): Promise<Map<string, string>> {
  const c = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `verify-${Math.random()}`, reconnectPeriod: 0 });
  const got = new Map<string, string>();
  c.on('message', (topic, payload, packet) => {
    if (packet.retain) got.set(topic, payload.toString());
  });
  await c.subscribeAsync(filter, { qos: 1 });
  const deadline = Date.now() + 10_000;
  while (got.size < expected && Date.now() < deadline) await sleep(50);
  await sleep(200); // anything unexpected has a moment to arrive too
  await c.endAsync();
  return got;
}

describe('SIGKILL with EDB_STORAGE=durable', () => {
  it('after each kill at a random moment, every acknowledged message, retained message and state-store write is back', { timeout: 150_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-kill-'));
    const env = { EDB_DATA_DIR: dataDir, EDB_STORAGE: 'durable', EDB_BACKUP: 'false' };
    const ackedRetained = new Map<string, string>();
    const ackedKeys = new Map<string, { value: string; version: string }>();
    /** Payloads of QoS 1 messages to q/... whose PUBACK the publishers got. */
    const ackedMessages = new Set<string>();
    /** What each persistent subscriber received, over all its lives. */
    const received = new Map<string, Set<string>>([['online-sub', new Set()], ['offline-sub', new Set()]]);
    const connectSubscriber = async (port: number, id: string) => {
      // the handler is in place before CONNACK: queued messages follow it in the same read
      const c = mqtt.connect({ port, protocolVersion: 5, clientId: id, clean: false, properties: { sessionExpiryInterval: 3600 }, reconnectPeriod: 0 });
      c.on('message', (topic, payload) => {
        if (topic.startsWith('q/')) received.get(id)!.add(payload.toString());
      });
      await new Promise<void>((resolve, reject) => {
        c.once('connect', () => resolve());
        c.once('error', reject);
      });
      return c;
    };
    const cycles = 4;
    for (let cycle = 0; cycle <= cycles; cycle++) {
      const p: BrokerProcess = await startBrokerProcess(env);
      const port = p.ports['mqtt']!;
      // ---- the persistent subscribers come back (the first time: they subscribe)
      const online = await connectSubscriber(port, 'online-sub');
      const offline = await connectSubscriber(port, 'offline-sub');
      if (cycle === 0) {
        await online.subscribeAsync('q/#', { qos: 1 });
        await offline.subscribeAsync('q/#', { qos: 1 });
      }
      // ---- verify everything acknowledged before the last kill
      if (ackedMessages.size > 0) {
        const deadline = Date.now() + 20_000;
        const missingFor = (id: string) => [...ackedMessages].filter((m) => !received.get(id)!.has(m));
        while (Date.now() < deadline && (missingFor('online-sub').length > 0 || missingFor('offline-sub').length > 0)) await sleep(100);
        expect(missingFor('online-sub'), `cycle ${cycle}: acknowledged messages the online subscriber never got`).toEqual([]);
        expect(missingFor('offline-sub'), `cycle ${cycle}: acknowledged messages the offline subscriber never got`).toEqual([]);
      }
      await offline.endAsync(); // offline through the load: its messages wait in its session
      if (ackedRetained.size > 0) {
        const got = await retainedUnder(port, 'ret/#', ackedRetained.size);
        const missing = [...ackedRetained].filter(([t, v]) => got.get(t) !== v);
        expect(missing, `cycle ${cycle}: acknowledged retained messages missing`).toEqual([]);
        const v = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `verify-state-${cycle}`, reconnectPeriod: 0 });
        const s = await StateStoreClient.create(v);
        const lost: string[] = [];
        for (const [key, want] of ackedKeys) {
          const r = await s.get(key);
          if (r.value?.toString() !== want.value || formatHlc(r.version!) !== want.version) lost.push(key);
        }
        await s.close();
        await v.endAsync();
        expect(lost, `cycle ${cycle}: acknowledged state-store keys missing`).toEqual([]);
      }
      if (cycle === cycles) {
        await online.endAsync();
        expect(await p.stop('SIGTERM')).toBe(0);
        break;
      }
      // ---- load: retained QoS 1 publishes and state-store SETs, then SIGKILL at a random moment
      const pub = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `pub-${cycle}`, reconnectPeriod: 0 });
      const pubs = await Promise.all([0, 1].map((n) => mqtt.connectAsync({ port, protocolVersion: n === 0 ? 5 : 4, clientId: `qpub-${cycle}-${n}`, reconnectPeriod: 0 })));
      const app = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `app-${cycle}`, reconnectPeriod: 0 });
      const state = await StateStoreClient.create(app);
      let running = true;
      const publishing = (async () => {
        for (let i = 0; running; i++) {
          const topic = `ret/c${cycle}/${i}`;
          const value = `v${cycle}-${i}`;
          try {
            await pub.publishAsync(topic, value, { qos: 1, retain: true });
            ackedRetained.set(topic, value);
          } catch {
            return; // the broker is gone
          }
        }
      })();
      const queueing = pubs.map(async (c, n) => {
        for (let i = 0; running; i++) {
          const payload = `m${cycle}-${n}-${i}`;
          try {
            await c.publishAsync(`q/${n}/${i % 7}`, payload, { qos: 1 });
            ackedMessages.add(payload);
          } catch {
            return;
          }
        }
      });
      const setting = (async () => {
        for (let i = 0; running; i++) {
          const key = `k/c${cycle}/${i}`;
          try {
            const r = await state.set(key, `s${cycle}-${i}`);
            ackedKeys.set(key, { value: `s${cycle}-${i}`, version: formatHlc(r.version!) });
          } catch {
            return;
          }
        }
      })();
      await sleep(300 + Math.floor(Math.random() * 1200));
      p.child.kill('SIGKILL');
      await once(p.child, 'exit');
      running = false;
      pub.end(true);
      app.end(true);
      online.end(true);
      for (const c of pubs) c.end(true);
      await Promise.race([Promise.all([publishing, setting, ...queueing]), sleep(5000)]);
      expect(ackedMessages.size).toBeGreaterThan(0);
      expect(ackedRetained.size).toBeGreaterThan(0);
      expect(ackedKeys.size).toBeGreaterThan(0);
    }
  });
});
