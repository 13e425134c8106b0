import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { startEdb } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';

const running: BrokerProcess[] = [];
const clients: mqtt.MqttClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.end(true);
  await Promise.all(running.splice(0).map((b) => b.stop('SIGKILL')));
});

async function start(dataDir: string, storage: string): Promise<BrokerProcess> {
  const b = await startBrokerProcess({ EDB_DATA_DIR: dataDir, EDB_STORAGE: storage });
  running.push(b);
  return b;
}

async function connect(port: number, opts: mqtt.IClientOptions): Promise<mqtt.MqttClient> {
  const c = await mqtt.connectAsync({ port, host: '127.0.0.1', reconnectPeriod: 0, ...opts });
  c.on('error', () => undefined); // the broker's shutdown ends these connections: not the test's concern
  clients.push(c);
  return c;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.each(['durable', 'memory'])('wills across a graceful restart [MQTT-5-3.1.2-8] [MQTT-5-3.1.3-9], EDB_STORAGE=%s', (storage) => {
  it('a shutdown publishes the wills that are due, carries delayed ones over the restart, and a client back in time cancels its own', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-will-restart-'));
    const first = await start(dataDir, storage);
    const port = first.ports['mqtt']!;
    // the watcher's persistent session is offline during the restart: what it gets is what the broker kept
    const watcher = await connect(port, { clientId: 'watcher', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 } });
    await watcher.subscribeAsync('status/#', { qos: 1 });
    await watcher.endAsync();
    const will = (topic: string, delay?: number): mqtt.IClientOptions['will'] => ({
      topic,
      payload: Buffer.from(`${topic} is offline`),
      qos: 1,
      retain: false,
      ...(delay === undefined ? {} : { properties: { willDelayInterval: delay } }),
    });
    await connect(port, { clientId: 'dev-now', protocolVersion: 5, will: will('status/now') });
    await connect(port, { clientId: 'dev-v4', protocolVersion: 4, will: will('status/v4') });
    await connect(port, { clientId: 'dev-late', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 }, will: will('status/late', 2) });
    await connect(port, { clientId: 'dev-back', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 }, will: will('status/back', 3) });

    expect(await first.stop('SIGTERM')).toBe(0);
    running.splice(running.indexOf(first), 1);

    const second = await start(dataDir, storage);
    // memory: the backup is restored just before the listeners open, and delays run again from
    // about here; durable: a delayed will is due when it was due (counted from the shutdown)
    const restarted = Date.now();
    const port2 = second.ports['mqtt']!;
    // dev-back reconnects before its Will Delay has passed: its will is cancelled
    await connect(port2, { clientId: 'dev-back', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 } });
    const got: { topic: string; at: number }[] = [];
    const back = mqtt.connect({ port: port2, host: '127.0.0.1', reconnectPeriod: 0, clientId: 'watcher', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 } });
    clients.push(back);
    back.on('error', () => undefined);
    back.on('message', (topic, payload) => {
      expect(payload.toString()).toBe(`${topic} is offline`);
      got.push({ topic, at: Date.now() - restarted });
    });
    await new Promise<void>((resolve, reject) => back.once('connect', () => resolve()).once('error', reject));
    // past dev-back's 3 s delay, plus the broker's once-a-second sweep
    await sleep(Math.max(0, restarted + 4_500 - Date.now()));
    const topics = got.map((g) => g.topic);
    // published at the shutdown and kept in the watcher's session
    expect(topics.filter((t) => t !== 'status/late').sort()).toEqual(['status/now', 'status/v4']);
    // dev-late's will came once; from the backup, after waiting out (most of) its 2 s delay after the restart
    expect(topics.filter((t) => t === 'status/late')).toEqual(['status/late']);
    if (storage === 'memory') expect(got.find((g) => g.topic === 'status/late')!.at).toBeGreaterThanOrEqual(1_000);
  }, 60_000);
});

describe('wills at a shutdown, EDB_STORAGE=memory', () => {
  it('without a backup every session ends with the server: delayed wills are published at the shutdown too', async () => {
    const server = await startEdb(testConfig({ backupEnabled: false, storage: 'memory' }), silentLogger());
    const port = server.port('mqtt');
    // connected before the watcher, so closed first by the shutdown while the watcher still listens
    await connect(port, { clientId: 'dev-delayed', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 }, will: { topic: 'status/delayed', payload: Buffer.from('gone'), qos: 1, retain: false, properties: { willDelayInterval: 60 } } });
    const watcher = await connect(port, { clientId: 'watcher-2', protocolVersion: 5 });
    await watcher.subscribeAsync('status/#', { qos: 1 });
    const got = new Promise<string>((resolve) => watcher.on('message', (topic, payload) => resolve(`${topic} ${payload.toString()}`)));
    await server.stop();
    expect(await got).toBe('status/delayed gone');
  });
});
