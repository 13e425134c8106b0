/**
 * The durable log's hard limits against a bridge's backlog, with real processes: `edb start`
 * with EDB_STORAGE=durable and a small EDB_STORAGE_MAX_BYTES (or a short
 * EDB_STORAGE_RETENTION), a bridge out to mosquitto, the remote stopped, numbered QoS 1 load
 * until the log drops generations holding the backlog. What went with a dropped generation
 * is counted for the bridge by reason (`edb bridge show --json`, metrics) and logged; the
 * bridge goes on with the next stored message: after the remote is back (and, for the size
 * cap, after a SIGKILL and restart of our broker), every acknowledged message that was not
 * counted dropped arrives, in order per topic, and what is missing is exactly the oldest,
 * as many as were counted.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import type { BridgeSummary } from '../../src/bridge/service.js';
import { freePort, startMosquitto } from '../helpers/mosquitto.js';
import { CLI, startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const run = promisify(execFile);
const TOPICS = 4;
const PAD = 'x'.repeat(100);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Numbered QoS 1 load round robin over the topics, a window of publishes in flight, at most `rate` per second. */
class Load {
  readonly acked: Set<number>[] = Array.from({ length: TOPICS }, () => new Set());
  refused = 0;
  private running = true;
  private readonly done: Promise<void>;
  constructor(client: MqttClient, prefix: string, rate: number, window = 16) {
    let n = 0;
    const started = Date.now();
    const worker = async () => {
      while (this.running) {
        const i = n++;
        const t = i % TOPICS;
        const k = Math.floor(i / TOPICS);
        try {
          await client.publishAsync(`${prefix}/${t}`, `${k}:${PAD}`, { qos: 1 });
          this.acked[t]!.add(k);
        } catch {
          this.refused++; // 0x97 (storage full) or the connection went: not acknowledged, not counted
          if (!client.connected) return;
        }
        const ahead = n / rate - (Date.now() - started) / 1000;
        if (ahead > 0) await sleep(ahead * 1000);
      }
    };
    this.done = Promise.all(Array.from({ length: window }, worker)).then(() => undefined);
  }
  get total(): number {
    return this.acked.reduce((a, s) => a + s.size, 0);
  }
  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

/** Every arrival on the remote per topic, through a persistent session. */
async function verifier(port: number, prefix: string, id: string): Promise<{ seen: number[][]; client: MqttClient }> {
  const seen: number[][] = Array.from({ length: TOPICS }, () => []);
  const client = await mqtt.connectAsync({ port, host: '127.0.0.1', clientId: id, clean: false, reconnectPeriod: 200, protocolVersion: 4 });
  client.on('message', (topic, payload) => seen[Number(topic.slice(topic.lastIndexOf('/') + 1))]!.push(Number.parseInt(payload.toString(), 10)));
  client.on('error', () => undefined);
  await client.subscribeAsync(`${prefix}/#`, { qos: 1 });
  return { seen, client };
}

/** `edb bridge show --json`, the bridge's row. */
async function show(http: number): Promise<BridgeSummary> {
  const { stdout } = await run(process.execPath, [CLI, 'bridge', 'show', '--json', '--url', `http://127.0.0.1:${http}`]);
  return (JSON.parse(stdout) as BridgeSummary[])[0]!;
}

/** The same row from GET /api/bridges (cheaper to poll than a CLI process). */
async function row(http: number): Promise<BridgeSummary> {
  return ((await (await fetch(`http://127.0.0.1:${http}/api/bridges`)).json()) as BridgeSummary[])[0]!;
}

async function untilAsync(predicate: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function metric(http: number, reason: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
  const m = new RegExp(`^edb_bridge_dropped_total\\{bridge="br0",reason="${reason}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

/**
 * What arrived against what was acknowledged: per topic, what is missing is older than
 * everything that arrived (the oldest went), nothing acknowledged and not missing is absent,
 * first arrivals are in order; returns how many are missing in all.
 */
function checkArrivals(seen: number[][], acked: Set<number>[]): number {
  let missing = 0;
  for (let t = 0; t < TOPICS; t++) {
    const got = new Set(seen[t]);
    const lost = [...acked[t]!].filter((k) => !got.has(k)).sort((a, b) => a - b);
    const arrived = [...acked[t]!].filter((k) => got.has(k));
    if (lost.length > 0 && arrived.length > 0) expect(Math.max(...lost), `topic ${t}: only the oldest may be missing`).toBeLessThan(Math.min(...arrived));
    const firsts: number[] = [];
    const known = new Set<number>();
    for (const k of seen[t]!) if (!known.has(k)) known.add(k), firsts.push(k);
    expect(firsts, `topic ${t}: order of first arrivals`).toEqual([...firsts].sort((a, b) => a - b));
    missing += lost.length;
  }
  return missing;
}

describe('bridge backlog against the log’s retention and size cap (real processes)', () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  afterAll(async () => {
    for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  });

  const start = async (remotePort: number, mqttPort: number, dataDir: string, extra: Record<string, string>): Promise<BrokerProcess> =>
    startBrokerProcess(
      {
        EDB_STORAGE: 'durable',
        EDB_DATA_DIR: dataDir,
        EDB_MQTT_PORT: String(mqttPort),
        EDB_MQTTS_PORT: '-1',
        EDB_HTTP_PORT: '0',
        EDB_STORAGE_GENERATION: '1s',
        EDB_BRIDGE_BR0: `127.0.0.1:${remotePort}`,
        EDB_BRIDGE_BR0_TOPIC_1: 'cap/# out 1',
        EDB_BRIDGE_BR0_RECONNECT_MIN: '100ms',
        EDB_BRIDGE_BR0_RECONNECT_MAX: '1s',
        EDB_BRIDGE_BR0_KEEP_ALIVE: '2',
        ...extra,
      },
      ['mqtt', 'http'],
    );

  it('EDB_STORAGE_MAX_BYTES drops generations holding the backlog: counted (size_cap), logged, the rest delivered in order, also after a SIGKILL', async () => {
    const remote = await startMosquitto({ persistence: true });
    cleanup.push(() => remote.stop());
    const v = await verifier(remote.port, 'cap', 'verifier-cap');
    cleanup.push(() => v.client.end(true));
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-bridge-cap-'));
    const mqttPort = await freePort();
    // about 140 bytes a message on disk, 1 s generations at 600 msgs/s (about 85 KB): the cap holds about 7
    const env = { EDB_STORAGE_MAX_BYTES: String(600_000) };
    let edb = await start(remote.port, mqttPort, dataDir, env);
    cleanup.push(() => edb.stop('SIGKILL'));
    await untilAsync(async () => (await row(edb.ports['http']!)).state === 'connected', 15_000, 'bridge up');
    await remote.stop();
    await untilAsync(async () => (await row(edb.ports['http']!)).state !== 'connected', 15_000, 'bridge down');

    const pub = await mqtt.connectAsync({ port: mqttPort, host: '127.0.0.1', reconnectPeriod: 0, protocolVersion: 5 });
    const load = new Load(pub, 'cap', 600);
    await untilAsync(async () => (await row(edb.ports['http']!)).bufferDropped > 1500, 60_000, 'generations with backlog dropped by the size cap');
    await load.stop();
    pub.end(true);
    await sleep(200);

    const shown = await show(edb.ports['http']!);
    expect(shown.dropped).toEqual({ buffer_full: 0, too_old: 0, retention: 0, size_cap: shown.bufferDropped });
    expect(await metric(edb.ports['http']!, 'size_cap')).toBe(shown.bufferDropped);
    expect(shown.backlogMessages).toBe(load.total - shown.bufferDropped);
    expect(edb.logs.some((l) => /^bridge br0: \d+ messages of its backlog dropped: the log dropped generation \d+ \(EDB_STORAGE_MAX_BYTES\)/.test(String(l['msg'])))).toBe(true);
    expect(edb.logs.some((l) => /^storage: generation \d+ dropped \(size cap\)/.test(String(l['msg'])))).toBe(true);

    // our broker killed with the rest of the backlog, started again: its position is past the drop
    await sleep(100); // the position is saved 20 ms after it moves
    await edb.stop('SIGKILL');
    edb = await start(remote.port, mqttPort, dataDir, env);
    const after = await show(edb.ports['http']!);
    expect(after.backlogMessages).toBe(load.total - shown.bufferDropped);
    expect(edb.logs.some((l) => /position is in a generation the log has dropped/.test(String(l['msg'])))).toBe(false);

    await remote.restart();
    await untilAsync(() => v.seen.reduce((a, s) => a + new Set(s).size, 0) >= load.total - shown.bufferDropped, 60_000, 'everything not dropped on the remote');
    await untilAsync(async () => (await row(edb.ports['http']!)).backlogMessages === 0, 15_000, 'backlog released');
    expect(checkArrivals(v.seen, load.acked)).toBe(shown.bufferDropped);
    await edb.stop('SIGTERM');
  }, 180_000);

  it('EDB_STORAGE_RETENTION drops generations holding the backlog: counted (retention), the rest delivered in order', async () => {
    const remote = await startMosquitto({ persistence: true });
    cleanup.push(() => remote.stop());
    const v = await verifier(remote.port, 'cap', 'verifier-retention');
    cleanup.push(() => v.client.end(true));
    const mqttPort = await freePort();
    const edb = await start(remote.port, mqttPort, mkdtempSync(join(tmpdir(), 'edb-bridge-retention-')), { EDB_STORAGE_RETENTION: '3s' });
    cleanup.push(() => edb.stop('SIGKILL'));
    await untilAsync(async () => (await row(edb.ports['http']!)).state === 'connected', 15_000, 'bridge up');
    await remote.stop();
    await untilAsync(async () => (await row(edb.ports['http']!)).state !== 'connected', 15_000, 'bridge down');
    const pub = await mqtt.connectAsync({ port: mqttPort, host: '127.0.0.1', reconnectPeriod: 0, protocolVersion: 5 });
    const load = new Load(pub, 'cap', 300);
    // the log sweeps every 10 s: generations whose messages are all older than 3 s go
    await untilAsync(async () => (await row(edb.ports['http']!)).dropped.retention > 0, 40_000, 'generations with backlog dropped by retention');
    await load.stop();
    pub.end(true);
    await sleep(200);
    const shown = await show(edb.ports['http']!);
    expect(shown.dropped).toEqual({ buffer_full: 0, too_old: 0, retention: shown.bufferDropped, size_cap: 0 });
    expect(await metric(edb.ports['http']!, 'retention')).toBe(shown.bufferDropped);
    expect(shown.backlogMessages).toBe(load.total - shown.bufferDropped);
    expect(load.refused).toBe(0);
    expect(edb.logs.some((l) => /messages of its backlog dropped: the log dropped generation \d+ \(EDB_STORAGE_RETENTION\)/.test(String(l['msg'])))).toBe(true);

    await remote.restart();
    // the next sweep may drop more of what is left before the bridge has sent it: counted too
    await untilAsync(async () => (await row(edb.ports['http']!)).backlogMessages === 0, 60_000, 'backlog sent and released');
    const end = await show(edb.ports['http']!);
    await untilAsync(() => v.seen.reduce((a, s) => a + new Set(s).size, 0) >= load.total - end.bufferDropped, 30_000, 'everything not dropped on the remote');
    expect(checkArrivals(v.seen, load.acked)).toBe(end.bufferDropped);
    await edb.stop('SIGTERM');
  }, 150_000);
});
