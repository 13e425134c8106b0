/**
 * No loops over rings of bridges (docs/bridges.md, No loops): three real `edb start`
 * processes bridged in a ring on `#` over MQTT 5, out (A -> B -> C -> A) and in (each pulls
 * from the one before it); a mixed ring with mosquitto's own v5 bridge in it (A -> B ->
 * mosquitto -> A); and the hop limit on a chain. A message published on one broker reaches
 * each of the others once, does not come back to where it was published, and the brokers go
 * quiet (counted over a few seconds after the last one arrived).
 */
import { afterAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { parseBridge } from '../../src/config/bridges.js';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

interface Got {
  topic: string;
  payload: string;
  path: string | undefined;
}

type Sub = MqttClient & { got: Got[] };

const open: { end(force?: boolean): unknown }[] = [];
afterAll(() => {
  for (const c of open) c.end(true);
});

async function subscriber(port: number, filter = '#'): Promise<Sub> {
  const c = (await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, protocolVersion: 5 })) as Sub;
  open.push(c);
  c.got = [];
  c.on('message', (topic, payload, packet) => {
    const p = packet.properties?.userProperties?.['edb-bridge-path'];
    c.got.push({ topic, payload: payload.toString(), path: typeof p === 'string' ? p : undefined });
  });
  await c.subscribeAsync(filter, { qos: 1 });
  return c;
}

async function publisher(port: number): Promise<MqttClient> {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, protocolVersion: 5 });
  open.push(c);
  return c;
}

interface Edb {
  name: string;
  proc: BrokerProcess;
  port: number;
  api(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }>;
  bridges(): Promise<{ name: string; state: string; loops: number; hopLimited: number; messagesOut: number; remoteId?: string }[]>;
  metric(name: string): Promise<number>;
}

async function edb(name: string): Promise<Edb> {
  const proc = await startBrokerProcess({ EDB_HTTP_PORT: '0', EDB_STORAGE: 'memory' }, ['mqtt', 'http']);
  const base = `http://127.0.0.1:${proc.ports['http']}`;
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(base + path, { method, headers: body ? { 'content-type': 'application/json' } : {}, ...(body ? { body: JSON.stringify(body) } : {}) });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
  };
  return {
    name,
    proc,
    port: proc.ports['mqtt']!,
    api,
    bridges: async () => (await api('GET', '/api/bridges')).body as Awaited<ReturnType<Edb['bridges']>>,
    async metric(metric: string) {
      const text = await (await fetch(`${base}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(metric + ' ') || l.startsWith(metric + '{'));
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : NaN;
    },
  };
}

async function poll(what: string, f: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const fast = { reconnectMin: '100ms', reconnectMax: '1s', keepAlive: 5 };
const QUIET_MS = 3000;

/** Count per payload: each payload once, in order. */
function once(got: Got[], topicPrefix: string): string[] {
  return got.filter((g) => g.topic.startsWith(topicPrefix)).map((g) => g.payload);
}

const numbered = (n: number) => Array.from({ length: n }, (_, i) => String(i));

describe('a ring of three Edge Data Brokers bridged on # (MQTT 5)', () => {
  const brokers: Edb[] = [];
  afterAll(async () => {
    for (const b of brokers) await b.proc.stop();
  });

  it('out (A -> B -> C -> A): a message reaches each broker once and does not come back; then quiet', async () => {
    const [a, b, c] = [await edb('a'), await edb('b'), await edb('c')];
    brokers.push(a, b, c);
    const ring: [Edb, Edb][] = [
      [a, b],
      [b, c],
      [c, a],
    ];
    for (const [from, to] of ring) {
      const r = await from.api('POST', '/api/bridges', { name: 'next', url: `mqtt://127.0.0.1:${to.port}`, topics: ['# out 1'], ...fast });
      expect(r.status).toBe(201);
    }
    for (const x of [a, b, c]) await poll(`bridge of ${x.name} to connect`, async () => (await x.bridges())[0]?.state === 'connected');
    const subs = { a: await subscriber(a.port), b: await subscriber(b.port), c: await subscriber(c.port) };
    const pubs = { a: await publisher(a.port), b: await publisher(b.port), c: await publisher(c.port) };
    const N = 30;
    for (let i = 0; i < N; i++) {
      // from every broker of the ring, QoS 1 and QoS 0
      await pubs.a.publishAsync(`from-a/${i % 3}`, String(i), { qos: 1 });
      await pubs.b.publishAsync(`from-b/${i % 3}`, String(i), { qos: 0 });
      await pubs.c.publishAsync(`from-c/${i % 3}`, String(i), { qos: 1 });
    }
    const all = () => Object.values(subs).every((s) => ['from-a/', 'from-b/', 'from-c/'].every((p) => once(s.got, p).length >= N));
    await until(all, 20_000, 'every message on every broker');
    const counts = () => Object.values(subs).map((s) => s.got.length);
    const settled = counts();
    await new Promise((r) => setTimeout(r, QUIET_MS));
    // quiet: nothing more arrived anywhere in those seconds (a loop would keep them coming)
    expect(counts()).toEqual(settled);
    for (const [name, s] of Object.entries(subs)) {
      for (const p of ['from-a/', 'from-b/', 'from-c/']) expect(once(s.got, p), `${p} on ${name}`).toEqual(numbered(N));
      expect(s.got.length, `messages on ${name}`).toBe(3 * N);
    }
    // what crossed bridges carries the brokers it crossed them at: from A, on C, two of them
    const onC = subs.c.got.find((g) => g.topic.startsWith('from-a/'))!;
    expect(onC.path?.split(',')).toHaveLength(2);
    expect(subs.a.got.find((g) => g.topic.startsWith('from-a/'))!.path).toBeUndefined();
    // each bridge knows its remote's id (CONNACK) and did not send what the remote had had:
    // C's bridge holds back what came from A, A's what came from B, B's what came from C
    for (const x of [a, b, c]) {
      const [bridge] = await x.bridges();
      expect(bridge!.remoteId, `remote id known on ${x.name}`).toMatch(/-[0-9a-f]{6}$/);
      expect(bridge!.loops, `loops held back by ${x.name}`).toBe(N);
      expect(bridge!.messagesOut, `messages out of ${x.name}`).toBe(2 * N);
    }
    // ...so none came back to be dropped on arrival
    for (const x of [a, b, c]) expect(await x.metric('edb_bridge_loop_returned_total')).toBe(0);
    for (const x of [a, b, c]) expect((await x.api('DELETE', '/api/bridges/next')).status).toBe(204);
  });

  it('in (each pulls from the one before): a message reaches each broker once and does not come back; then quiet', async () => {
    const [a, b, c] = brokers as [Edb, Edb, Edb];
    // B pulls from A, C from B, A from C
    const ring: [Edb, Edb][] = [
      [b, a],
      [c, b],
      [a, c],
    ];
    for (const [puller, from] of ring) {
      const r = await puller.api('POST', '/api/bridges', { name: 'prev', url: `mqtt://127.0.0.1:${from.port}`, topics: ['# in 1'], ...fast });
      expect(r.status).toBe(201);
    }
    for (const x of [a, b, c]) await poll(`bridge of ${x.name} to connect`, async () => (await x.bridges())[0]?.state === 'connected');
    const subs = { a: await subscriber(a.port, 'in-ring/#'), b: await subscriber(b.port, 'in-ring/#'), c: await subscriber(c.port, 'in-ring/#') };
    // the subscriptions of the bridges on their remotes are in place before anything is sent
    await new Promise((r) => setTimeout(r, 500));
    const pub = await publisher(a.port);
    const N = 30;
    for (let i = 0; i < N; i++) await pub.publishAsync(`in-ring/${i % 3}`, String(i), { qos: 1 });
    await until(() => Object.values(subs).every((s) => s.got.length >= N), 20_000, 'every message on every broker');
    const settled = Object.values(subs).map((s) => s.got.length);
    await new Promise((r) => setTimeout(r, QUIET_MS));
    expect(Object.values(subs).map((s) => s.got.length)).toEqual(settled);
    for (const [name, s] of Object.entries(subs)) expect(once(s.got, 'in-ring/'), `on ${name}`).toEqual(numbered(N));
    // the path shows the remote's id (CONNACK) and this broker: A's message on C crossed bridges at A, B and C
    expect(subs.c.got[0]!.path?.split(',')).toHaveLength(3);
    // A's bridge pulled them back from C and dropped them: they had been at A
    const [pullA] = await a.bridges();
    expect(pullA!.loops).toBe(N);
    for (const x of [a, b, c]) expect((await x.api('DELETE', '/api/bridges/prev')).status).toBe(204);
  });

  it('mixed with mosquitto (A -> B -> mosquitto -> A, mosquitto\'s own v5 bridge): A drops what comes round to it', async () => {
    const [a, b] = brokers as [Edb, Edb, Edb];
    let m: Mosquitto | undefined;
    try {
      m = await startMosquitto({
        // (the helper's max_inflight_messages 0 would make its bridge send Receive Maximum 0, a protocol error)
        extra: ['max_inflight_messages 100', 'connection to-a', `address 127.0.0.1:${a.port}`, 'topic mixed/# out 1', 'bridge_protocol_version mqttv50', 'try_private false', 'cleansession true', 'restart_timeout 1', 'notifications false'],
      });
      expect((await a.api('POST', '/api/bridges', { name: 'to-b', url: `mqtt://127.0.0.1:${b.port}`, topics: ['mixed/# out 1'], ...fast })).status).toBe(201);
      expect((await b.api('POST', '/api/bridges', { name: 'to-m', url: `mqtt://127.0.0.1:${m.port}`, topics: ['mixed/# out 1'], ...fast })).status).toBe(201);
      for (const x of [a, b]) await poll(`bridge of ${x.name} to connect`, async () => (await x.bridges())[0]?.state === 'connected');
      const subA = await subscriber(a.port, 'mixed/#');
      const subB = await subscriber(b.port, 'mixed/#');
      const subM = (await mqtt.connectAsync(`mqtt://127.0.0.1:${m.port}`, { reconnectPeriod: 0, protocolVersion: 5 })) as Sub;
      open.push(subM);
      subM.got = [];
      subM.on('message', (topic, payload) => subM.got.push({ topic, payload: payload.toString(), path: undefined }));
      await subM.subscribeAsync('mixed/#', { qos: 1 });
      // mosquitto's bridge to A is up once a probe published on mosquitto reaches A
      const probe = await publisher(m.port);
      await poll('mosquitto\'s bridge to A', async () => {
        await probe.publishAsync('mixed/probe', 'p', { qos: 1 });
        return subA.got.some((g) => g.topic === 'mixed/probe');
      }).catch((err: Error) => {
        throw new Error(`${err.message}; mosquitto said: ${m!.output()}; A logged: ${JSON.stringify(a.proc.logs.filter((l) => JSON.stringify(l).includes("to-a")).slice(-5))}`);
      });
      await until(() => subB.got.some((g) => g.topic === 'mixed/probe'), 10_000, 'the probe on B');
      await new Promise((r) => setTimeout(r, 500));
      for (const s of [subA, subB, subM]) s.got = [];
      const returnedBefore = await a.metric('edb_bridge_loop_returned_total');
      const pub = await publisher(a.port);
      const N = 30;
      for (let i = 0; i < N; i++) await pub.publishAsync(`mixed/${i % 3}`, String(i), { qos: 1 });
      await until(() => subM.got.length >= N && subB.got.length >= N, 20_000, 'every message on B and mosquitto');
      // mosquitto passed the user property on, and A dropped what came round
      await poll('A to drop what came round', async () => (await a.metric('edb_bridge_loop_returned_total')) - returnedBefore >= N);
      const settled = [subA, subB, subM].map((s) => s.got.length);
      await new Promise((r) => setTimeout(r, QUIET_MS));
      expect([subA, subB, subM].map((s) => s.got.length)).toEqual(settled);
      for (const [name, s] of [['a', subA], ['b', subB], ['mosquitto', subM]] as const) expect(once(s.got, 'mixed/'), `on ${name}`).toEqual(numbered(N));
      expect((await a.metric('edb_bridge_loop_returned_total')) - returnedBefore).toBe(N);
    } finally {
      await m?.stop();
    }
  });
});

describe('the hop limit', () => {
  const brokers: TestBroker[] = [];
  afterAll(async () => {
    for (const b of brokers) await b.stop();
  });

  it('a message that has crossed maxHops bridges goes no further (a chain A -> B -> C, maxHops 1 at B)', async () => {
    const c = await startBroker();
    const b = await startBroker({ bridges: [parseBridge('to-c', { url: c.url, topics: ['# out 1'], maxHops: 1, ...fast })] });
    const a = await startBroker({ bridges: [parseBridge('to-b', { url: b.url, topics: ['# out 1'], ...fast })] });
    brokers.push(a, b, c);
    await until(() => a.server.bridges.get('to-b')?.state === 'connected' && b.server.bridges.get('to-c')?.state === 'connected', 15_000, 'the bridges');
    const subB = await subscriber(Number(new URL(b.url).port));
    const subC = await subscriber(Number(new URL(c.url).port));
    const pubA = await mqtt.connectAsync(a.url, { reconnectPeriod: 0, protocolVersion: 5 });
    const pubB = await mqtt.connectAsync(b.url, { reconnectPeriod: 0, protocolVersion: 5 });
    open.push(pubA, pubB);
    for (let i = 0; i < 10; i++) await pubA.publishAsync('far/x', String(i), { qos: 1 });
    await pubB.publishAsync('near/x', 'from b', { qos: 1 });
    await until(() => subB.got.length >= 11 && subC.got.length >= 1, 10_000, 'the messages on B and C');
    await new Promise((r) => setTimeout(r, 500));
    // A's messages had crossed one bridge (A -> B): B's bridge with maxHops 1 does not send them on
    expect(once(subB.got, 'far/')).toEqual(numbered(10));
    expect(subC.got.map((g) => g.topic)).toEqual(['near/x']);
    expect(b.server.bridges.summary(b.server.bridges.get('to-c')!).hopLimited).toBe(10);
  });
});
