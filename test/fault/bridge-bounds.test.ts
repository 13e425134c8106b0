/**
 * The byte and age bounds end to end: a real `edb start` (durable storage) bridged to
 * mosquitto, the remote stopped; while it is away, numbered QoS 1 and QoS 0 messages pile up
 * in the bridges' backlog (the durable log) and memory buffer. maxOutgoingBufferedBytes drops
 * the oldest of each past its bound, maxOutgoingBufferedAge the ones older than it; both are
 * counted by reason in edb_bridge_dropped_total and in `buffer dropped msgs` of `edb bridge
 * show`; when the remote comes back the rest arrives, in order, and nothing dropped does.
 * (The message-count bound: bridge-outages.test.ts; the bounds' arithmetic: unit/bridge-backlog.)
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/broker.js';
import { sleep } from '../helpers/bridge-load.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { CLI, startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const run = promisify(execFile);
const PAYLOAD = 100;
/** Bytes a message counts for against the bound: remote topic + payload. */
const BYTES_TOPIC = 'bounds/bytes/1'; // (and bounds/bytes/0 for QoS 0: the same length)
const ENTRY = BYTES_TOPIC.length + PAYLOAD;
const KEEP = 10;
const N = 40;
const AGE_BATCH = 20;

const payload = (n: number) => String(n).padStart(PAYLOAD, '0');

describe('bridge buffer bounds in bytes and age, real processes, the remote away', () => {
  let remote: Mosquitto | undefined;
  let edb: BrokerProcess | undefined;
  const clients: MqttClient[] = [];
  afterAll(async () => {
    for (const c of clients) c.end(true);
    await edb?.stop('SIGKILL');
    await remote?.stop();
  });

  it('drop the oldest of the QoS 1 backlog and of the QoS 0 buffer, counted by reason; the rest arrives in order', async () => {
    // persistence: the verifier's session and what is queued for it survive the stop;
    // queue_qos0_messages: QoS 0 is queued for it too, so that it sees every arrival
    remote = await startMosquitto({ persistence: true, extra: ['queue_qos0_messages true'] });
    const seen = new Map<string, number[]>();
    const verifier = await mqtt.connectAsync({ port: remote.port, host: '127.0.0.1', clientId: 'verifier-bounds', clean: false, reconnectPeriod: 200 });
    clients.push(verifier);
    verifier.on('error', () => undefined);
    verifier.on('message', (topic, p) => {
      const list = seen.get(topic) ?? [];
      list.push(Number(p.toString()));
      seen.set(topic, list);
    });
    await verifier.subscribeAsync('bounds/#', { qos: 1 });

    const url = `127.0.0.1:${remote.port}`;
    edb = await startBrokerProcess(
      {
        EDB_STORAGE: 'durable',
        EDB_HTTP_PORT: '0',
        EDB_BRIDGE_BYTES: url,
        EDB_BRIDGE_BYTES_TOPIC_1: 'bounds/bytes/# out 1',
        EDB_BRIDGE_BYTES_MAX_OUTGOING_BUFFERED_BYTES: String(KEEP * ENTRY),
        EDB_BRIDGE_BYTES_RECONNECT_MIN: '100ms',
        EDB_BRIDGE_BYTES_RECONNECT_MAX: '1s',
        EDB_BRIDGE_AGE: url,
        EDB_BRIDGE_AGE_TOPIC_1: 'bounds/age/# out 1',
        EDB_BRIDGE_AGE_MAX_OUTGOING_BUFFERED_AGE: '3s',
        EDB_BRIDGE_AGE_RECONNECT_MIN: '100ms',
        EDB_BRIDGE_AGE_RECONNECT_MAX: '1s',
      },
      ['mqtt', 'http'],
    );
    const base = `http://127.0.0.1:${edb.ports['http']}`;
    const bridges = async () => (await (await fetch(`${base}/api/bridges`)).json()) as { name: string; state: string; bufferSize: number; bufferDropped: number; backlogMessages: number; qos0Buffered: number; dropped: Record<string, number> }[];
    const bridge = async (name: string) => (await bridges()).find((b) => b.name === name)!;
    const metric = async (name: string, reason: string) => {
      const text = await (await fetch(`${base}/metrics`)).text();
      const m = new RegExp(`^edb_bridge_dropped_total\\{bridge="${name}",reason="${reason}"\\} (\\d+)$`, 'm').exec(text);
      return m ? Number(m[1]) : NaN;
    };
    const poll = async (what: string, f: () => Promise<boolean>, ms = 20_000) => {
      const deadline = Date.now() + ms;
      while (!(await f())) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await sleep(100);
      }
    };
    await poll('both bridges up', async () => (await bridges()).every((b) => b.state === 'connected'));

    await remote.stop();
    await poll('both bridges down', async () => (await bridges()).every((b) => b.state !== 'connected'));
    const pub = await mqtt.connectAsync({ port: edb.ports['mqtt']!, host: '127.0.0.1', reconnectPeriod: 0 });
    clients.push(pub);

    // bytes: N of each QoS; the bound holds KEEP of each (the backlog and the buffer each have it)
    for (let i = 0; i < N; i++) {
      await pub.publishAsync('bounds/bytes/1', payload(i), { qos: 1 });
      await pub.publishAsync('bounds/bytes/0', payload(i), { qos: 0 });
    }
    // age, first batch: older than the bound by the time the remote is back
    for (let i = 0; i < AGE_BATCH; i++) {
      await pub.publishAsync('bounds/age/1', String(i), { qos: 1 });
      await pub.publishAsync('bounds/age/0', String(i), { qos: 0 });
    }
    await poll('the bytes bound', async () => (await bridge('bytes')).bufferSize === 2 * KEEP);
    const bytes = await bridge('bytes');
    expect(bytes).toMatchObject({ backlogMessages: KEEP, qos0Buffered: KEEP, bufferDropped: 2 * (N - KEEP) });
    expect(bytes.dropped).toEqual({ buffer_full: 2 * (N - KEEP), too_old: 0, retention: 0, size_cap: 0 });
    expect(await metric('bytes', 'buffer_full')).toBe(2 * (N - KEEP));

    await poll('the age bound', async () => (await bridge('age')).dropped['too_old'] === 2 * AGE_BATCH, 30_000);
    // second batch: young; the bound is lifted at run time (PUT: the backlog stays) so that a
    // slow reconnect on a loaded machine cannot age it out before the remote has it
    for (let i = AGE_BATCH; i < 2 * AGE_BATCH; i++) {
      await pub.publishAsync('bounds/age/1', String(i), { qos: 1 });
      await pub.publishAsync('bounds/age/0', String(i), { qos: 0 });
    }
    const put = await fetch(`${base}/api/bridges/age`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ url: `mqtt://${url}`, topics: ['bounds/age/# out 1'], reconnectMin: '100ms', reconnectMax: '1s', maxOutgoingBufferedAge: '0' }),
    });
    expect(put.status).toBe(200);
    const age = await bridge('age');
    expect(age).toMatchObject({ backlogMessages: AGE_BATCH, qos0Buffered: AGE_BATCH, bufferDropped: 2 * AGE_BATCH });
    expect(age.dropped).toEqual({ buffer_full: 0, too_old: 2 * AGE_BATCH, retention: 0, size_cap: 0 });
    expect(await metric('age', 'too_old')).toBe(2 * AGE_BATCH);

    // `edb bridge show`: the dropped column, per bridge
    const { stdout } = await run(process.execPath, [CLI, 'bridge', 'show', '--url', base]);
    const lines = stdout.trimEnd().split('\n');
    const titles = lines[1]!.split('|').map((c) => c.trim());
    const col = titles.indexOf('buffer dropped msgs');
    expect(col).toBeGreaterThan(0);
    const row = (name: string) => lines.find((l) => l.startsWith(`| ${name} `))!.split('|').map((c) => c.trim());
    expect(row('bytes')[col]).toBe(String(2 * (N - KEEP)));
    expect(row('age')[col]).toBe(String(2 * AGE_BATCH));
    expect(row('bytes')[titles.indexOf('buffer size')]).toBe(String(2 * KEEP));
    expect(row('bytes')[titles.indexOf('backlog bytes')]).toBe(String(2 * KEEP * ENTRY));

    // the remote back: the rest arrives, in order, and none of what was dropped
    await remote.restart();
    const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
    const expected: Record<string, number[]> = {
      'bounds/bytes/1': range(N - KEEP, N),
      'bounds/bytes/0': range(N - KEEP, N),
      'bounds/age/1': range(AGE_BATCH, 2 * AGE_BATCH),
      'bounds/age/0': range(AGE_BATCH, 2 * AGE_BATCH),
    };
    await until(() => Object.entries(expected).every(([t, want]) => new Set(seen.get(t) ?? []).size >= want.length), 30_000, 'the kept messages on the remote');
    await poll('the backlogs released', async () => (await bridges()).every((b) => b.bufferSize === 0));
    await sleep(500);
    for (const [t, want] of Object.entries(expected)) {
      const got = seen.get(t) ?? [];
      // QoS 1 may come twice after a reconnect; first arrivals in order, nothing dropped among them
      const firsts = got.filter((n, i) => got.indexOf(n) === i);
      expect(firsts, t).toEqual(want);
    }
  });
});
