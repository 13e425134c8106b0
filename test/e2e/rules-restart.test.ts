import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { MODULE_FILE } from '../../src/rules/module-cache.js';

const MINE = readFileSync(new URL('../fixtures/mine-rules.json', import.meta.url), 'utf8');
const HOUSE = readFileSync(new URL('../fixtures/house-filters.json', import.meta.url), 'utf8');
const activeLog = (b: BrokerProcess): Record<string, unknown> | undefined => b.logs.find((l) => l['msg'] === 'rules document active');
const running: BrokerProcess[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((b) => b.stop('SIGKILL')));
});

async function start(dataDir: string): Promise<BrokerProcess> {
  const b = await startBrokerProcess({ EDB_DATA_DIR: dataDir, EDB_RULES_PORT: '0' }, ['mqtt', 'rules'], 120_000);
  running.push(b);
  return b;
}

async function connect(port: number): Promise<mqtt.MqttClient> {
  return mqtt.connectAsync({ port, host: '127.0.0.1', protocolVersion: 4, reconnectPeriod: 0 });
}

describe('the rule buffer across restarts', () => {
  it('a message buffered before SIGTERM still satisfies its statement after the restart', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-rules-restart-'));
    const first = await start(dataDir);
    const up = await fetch(`http://127.0.0.1:${first.ports['rules']}/`, { method: 'POST', body: MINE, headers: { 'content-type': 'application/json' } });
    expect(up.status).toBe(200);
    const pub = await connect(first.ports['mqtt']!);
    // statement 1 (heart-rate 100..120) is satisfied by miner/1; nothing fires yet
    await pub.publishAsync('miner/1', '{"m_id":1, "body-temperature": 36.6, "heart-rate": 105}', { qos: 1 });
    await pub.endAsync();
    expect(await first.stop('SIGTERM')).toBe(0);
    running.splice(running.indexOf(first), 1);

    const second = await start(dataDir);
    // the module compiled for the upload was kept: the restart loads it, without asc
    expect(activeLog(first)).toMatchObject({ fromCache: false });
    expect(activeLog(second)).toMatchObject({ fromCache: true });
    const sub = await connect(second.ports['mqtt']!);
    const got = new Promise<Record<string, unknown>>((resolve) => sub.on('message', (_t, p) => resolve(JSON.parse(p.toString()) as Record<string, unknown>)));
    await sub.subscribeAsync('!action/rest', { qos: 1 });
    const pub2 = await connect(second.ports['mqtt']!);
    // statement 2 now; rest = $1 and $2 fires only if miner/1 survived in the buffer
    await pub2.publishAsync('mine/environment', '{"temperature": 35, "humidity": 90}', { qos: 1 });
    expect(await got).toEqual({ 'miner/1': { m_id: 1, 'body-temperature': 36.6, 'heart-rate': 105 }, 'mine/environment': { temperature: 35, humidity: 90 } });
    await sub.endAsync();
    await pub2.endAsync();
  }, 240_000);

  it('durable storage (the default): a message buffered more than a second before a SIGKILL still satisfies its statement after the restart', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-rules-kill-'));
    const first = await start(dataDir);
    const up = await fetch(`http://127.0.0.1:${first.ports['rules']}/`, { method: 'POST', body: MINE, headers: { 'content-type': 'application/json' } });
    expect(up.status).toBe(200);
    const pub = await connect(first.ports['mqtt']!);
    await pub.publishAsync('miner/1', '{"m_id":1, "body-temperature": 36.6, "heart-rate": 105}', { qos: 1 });
    await pub.endAsync();
    // the buffer is checkpointed every second when it changed: wait for two, then no graceful stop
    await new Promise((r) => setTimeout(r, 2500));
    await first.stop('SIGKILL');
    running.splice(running.indexOf(first), 1);

    const second = await start(dataDir);
    const sub = await connect(second.ports['mqtt']!);
    const got = new Promise<Record<string, unknown>>((resolve) => sub.on('message', (_t, p) => resolve(JSON.parse(p.toString()) as Record<string, unknown>)));
    await sub.subscribeAsync('!action/rest', { qos: 1 });
    const pub2 = await connect(second.ports['mqtt']!);
    await pub2.publishAsync('mine/environment', '{"temperature": 35, "humidity": 90}', { qos: 1 });
    expect(await got).toEqual({ 'miner/1': { m_id: 1, 'body-temperature': 36.6, 'heart-rate': 105 }, 'mine/environment': { temperature: 35, humidity: 90 } });
    await sub.endAsync();
    await pub2.endAsync();
  }, 240_000);

  it('a damaged compiled-module file is reported; the document compiles again and runs', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-rules-restart-'));
    const first = await start(dataDir);
    const up = await fetch(`http://127.0.0.1:${first.ports['rules']}/`, { method: 'POST', body: HOUSE, headers: { 'content-type': 'application/json' } });
    expect(up.status).toBe(200);
    expect(await first.stop('SIGTERM')).toBe(0);
    running.splice(running.indexOf(first), 1);
    const file = join(dataDir, MODULE_FILE);
    const good = readFileSync(file);
    writeFileSync(file, Buffer.concat([good.subarray(0, 200), Buffer.from('garbage')]));

    const second = await start(dataDir);
    expect(second.logs.find((l) => l['msg'] === 'compiled-module cache: the module was compiled again')).toMatchObject({ level: 40 });
    expect(activeLog(second)).toMatchObject({ fromCache: false });
    expect(readFileSync(file).equals(good)).toBe(true);
    const sub = await connect(second.ports['mqtt']!);
    const got = new Promise<[string, string]>((resolve) => sub.on('message', (t, p) => resolve([t, p.toString()])));
    await sub.subscribeAsync('house/+/alert/', { qos: 1 });
    const pub = await connect(second.ports['mqtt']!);
    await pub.publishAsync('house/1', '{"inside":{"temperature":50,"humidity":6},"temperature":8}', { qos: 1 });
    expect(await got).toEqual(['house/1/alert/', 'fire_danger']);
    await sub.endAsync();
    await pub.endAsync();
  }, 240_000);
});
