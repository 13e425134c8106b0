// Every case of test/fixtures/vectors.json end to end: the broker started with startEdb
// (ports 0), the document uploaded over HTTP (the rules port, and /rules on the main HTTP
// port), messages published by a real MQTT client (MQTT.js), outputs received by another.
// Plus: a restart keeps the document; EDB_RULES_FILE loads one (and must be valid).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, describe, expect, test, vi } from 'vitest';
import { testConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { silentLogger } from '../../src/log.js';
import { startEdb, type EdbServer } from '../../src/server.js';
import { readFileSync } from 'node:fs';
import { vectors, type Vector } from '../helpers/vectors.js';

// compiling runs asc (seconds; longer on a loaded shared machine)
vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });

const dirs: string[] = [];
const servers: EdbServer[] = [];
const clients: MqttClient[] = [];

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'edb-rules-e2e-'));
  dirs.push(d);
  return d;
}

async function start(overrides: Partial<Config>): Promise<EdbServer> {
  const server = await startEdb(testConfig({ host: '127.0.0.1', rulesPort: 0, httpPort: 0, shutdownTimeoutMs: 500, ...overrides }), silentLogger());
  servers.push(server);
  return server;
}

async function connect(server: EdbServer, id: string): Promise<MqttClient> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${server.port('mqtt')}`, { clientId: id, protocolVersion: 5, reconnectPeriod: 0 });
  clients.push(client);
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return client;
}

async function upload(url: string, method: string, body?: string): Promise<{ status: number; json: any; etag: string | null }> {
  const res = await fetch(url, { method, body, headers: { 'content-type': 'application/json' } });
  return { status: res.status, json: await res.json(), etag: res.headers.get('etag') };
}

const until = async (predicate: () => boolean, ms: number, what: string): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

/** Publishes the case's messages one by one; returns the outputs with the index of the message they followed. */
async function run(server: EdbServer, v: Vector): Promise<{ after: number; topic: string; payload: Buffer; qos: number }[]> {
  const inputs = new Set(v.input.map(([t]) => t));
  const sub = await connect(server, `sub-${Math.random().toString(36).slice(2)}`);
  const pub = await connect(server, `pub-${Math.random().toString(36).slice(2)}`);
  const outputs: { after: number; topic: string; payload: Buffer; qos: number }[] = [];
  let echoes = 0;
  let current = -1;
  sub.on('message', (topic, payload, packet) => {
    if (inputs.has(topic)) echoes++;
    else outputs.push({ after: current, topic, payload, qos: packet.qos });
  });
  await sub.subscribeAsync('#', { qos: 2 });
  for (let i = 0; i < v.input.length; i++) {
    current = i;
    const [topic, payload] = v.input[i]!;
    await pub.publishAsync(topic, payload, { qos: 1 });
    const expected = v.output.filter((o) => o.after <= i).length;
    await until(() => echoes === i + 1 && outputs.length >= expected, 10_000, `outputs after message ${i}`);
    await new Promise((r) => setTimeout(r, 100)); // time for anything unexpected to show up
  }
  await sub.endAsync();
  await pub.endAsync();
  return outputs;
}

function expectOutputs(got: Awaited<ReturnType<typeof run>>, v: Vector): void {
  expect(got.map((o) => [o.after, o.topic])).toEqual(v.output.map((o) => [o.after, o.topic]));
  v.output.forEach((o, i) => {
    const g = got[i]!;
    if (o.json !== undefined) expect(JSON.parse(g.payload.toString('utf8'))).toEqual(o.json);
    else expect(g.payload.toString('utf8')).toBe(o.payload);
    expect(g.qos).toBe(1); // the incoming message's QoS
  });
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.end(true);
  for (const s of servers.splice(0)) await s.stop();
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('vectors.json over MQTT', () => {
  vectors.forEach((v, n) => {
    test(`case ${n}: ${v.document}`, async () => {
      const server = await start({ dataDir: tempDir() });
      const doc = readFileSync(`test/fixtures/${v.document}`, 'utf8');
      // case 0 through the main HTTP port's /rules mount, the others on EDB_RULES_PORT
      const url = n === 0 ? `http://127.0.0.1:${server.port('http')}/rules/` : `http://127.0.0.1:${server.port('rules')}/`;
      const put = await upload(url, 'POST', doc);
      expect(put.status).toBe(200);
      expectOutputs(await run(server, v), v);
      // the metrics and the status page on the main HTTP port
      const metrics = await (await fetch(`http://127.0.0.1:${server.port('http')}/metrics`)).text();
      expect(metrics).toMatch(new RegExp(`^edb_rules_fires_total ${v.output.length}$`, 'm'));
      if (n === 0) {
        expect(metrics).toMatch(/^edb_rules_evaluations_total 6$/m);
        expect(metrics).toMatch(/^edb_rules_condition_errors_total\{kind="not_json"\} 0$/m);
        expect(metrics).toMatch(/^edb_rules_wasm_bytes \d{4,}$/m);
        const status = (await (await fetch(`http://127.0.0.1:${server.port('http')}/api/status`)).json()) as any;
        expect(JSON.stringify(status)).toContain('"fires":2');
      }
    });
  });
});

describe('persistence', () => {
  test('a restart keeps the document and it keeps working', async () => {
    const dataDir = tempDir();
    const first = await start({ dataDir });
    const put = await upload(`http://127.0.0.1:${first.port('rules')}/`, 'POST', readFileSync('test/fixtures/mine-rules.json', 'utf8'));
    expect(put.status).toBe(200);
    // a refused write leaves it in place
    expect((await upload(`http://127.0.0.1:${first.port('rules')}/`, 'POST', '{"rules":[{"statements":[],"logic":[{"operations":"$9","new_topic":"x"}]}]}')).status).toBe(422);
    await first.stop();
    servers.splice(servers.indexOf(first), 1);

    const second = await start({ dataDir });
    const get = await upload(`http://127.0.0.1:${second.port('rules')}/`, 'GET');
    expect(get.etag).toBe(put.etag);
    expect(get.json).toEqual(JSON.parse(readFileSync('test/fixtures/mine-rules.json', 'utf8')));
    expectOutputs(await run(second, vectors[1]!), vectors[1]!);
  });

  test('EDB_RULES_FILE loads a document at start; an invalid one stops the start', async () => {
    const server = await start({ dataDir: tempDir(), rulesFile: 'test/fixtures/house-filters.json' });
    expectOutputs(await run(server, vectors[0]!), vectors[0]!);
    const bad = join(tempDir(), 'bad.json');
    writeFileSync(bad, '{"filters":[{"topic":"a/#/b","subtopic":"x","statements":[]}]}');
    await expect(start({ dataDir: tempDir(), rulesFile: bad })).rejects.toThrow(/EDB_RULES_FILE=.*filters\/0\/topic/);
  });
});
