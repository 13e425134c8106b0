/**
 * Persistent sessions across cluster nodes (issue 12, section 2 "Sessions" and section 3),
 * with real processes: three nats-server processes with JetStream and three `edb start`
 * processes (s1, s2, s3), MQTT.js clients.
 *  - a persistent session subscribed on s1, its client offline, messages published on s2 and
 *    s3: it reconnects to s3 and gets session present 1, its subscriptions, every QoS 1
 *    message at least once and every QoS 2 message exactly once;
 *  - kill -9 of the node of connected persistent subscribers under QoS 1 load: they reconnect
 *    to another node and a numbering verifier finds every message the publisher got a PUBACK
 *    for;
 *  - a retained message sent to a persistent session on SUBSCRIBE and not acknowledged when
 *    its node is killed (kill -9) is sent again on the node the session resumes on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { startNats, type NatsCluster } from '../helpers/nats.js';
import { until, delay } from '../helpers/broker.js';

let nats: NatsCluster;
const nodes: BrokerProcess[] = [];
const open: MqttClient[] = [];

function urlsFor(i: number): string {
  const order = [i, ...[0, 1, 2].filter((j) => j !== i)];
  return order.map((j) => nats.servers[j]!.url).join(',');
}

interface Status {
  connected: boolean;
  nodes: { name: string; interest: number }[];
  jetstream: { state: string; sessions?: string; sessionRecords?: number };
}

async function status(i: number): Promise<Status> {
  return (await (await fetch(`http://127.0.0.1:${nodes[i]!.ports['http']}/api/cluster`)).json()) as Status;
}

async function waitCluster(i: number, ok: (s: Status) => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (ok(await status(i))) return;
    } catch {
      /* not answering yet */
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  nats = await startNats(3);
  for (let i = 0; i < 3; i++) {
    nodes.push(await startBrokerProcess({ EDB_CLUSTER_NATS: urlsFor(i), EDB_NODE_NAME: `s${i + 1}`, EDB_CLUSTER_NAME: 'psess', EDB_HTTP_PORT: '0', EDB_MQTTS_PORT: '-1' }, ['mqtt', 'http']));
  }
  for (let i = 0; i < 3; i++) await waitCluster(i, (s) => s.nodes.length === 3 && s.jetstream.sessions === 'ready', `node s${i + 1} ready`);
}, 120_000);

afterAll(async () => {
  for (const c of open) c.end(true);
  for (const n of nodes) if (n.child.exitCode === null && n.child.signalCode === null) await n.stop('SIGKILL').catch(() => undefined);
  await nats?.stop();
});

async function client(i: number, id: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${nodes[i]!.ports['mqtt']}`, { protocolVersion: 5, clientId: id, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  open.push(c);
  return c;
}

/** Connect and return the client with its CONNACK's session present flag. */
async function resume(i: number, id: string, opts: IClientOptions, onMessage?: (topic: string, payload: Buffer, qos: number) => void): Promise<{ c: MqttClient; present: boolean }> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${nodes[i]!.ports['mqtt']}`, { protocolVersion: 5, clientId: id, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  open.push(c);
  if (onMessage) c.on('message', (topic, payload, packet) => onMessage(topic, payload, packet.qos));
  const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    c.once('connect', (p) => resolve(p as { sessionPresent: boolean }));
    c.once('error', reject);
  });
  return { c, present: connack.sessionPresent };
}

const persistent: IClientOptions = { clean: false, properties: { sessionExpiryInterval: 600 } };

describe('cluster: persistent sessions resume on any node', () => {
  it('resumes on another node with session present, its subscriptions and every message it has not acknowledged', async () => {
    const first = await client(0, 'roamer', persistent);
    await first.subscribeAsync({ 'roam/q1': { qos: 1 }, 'roam/q2': { qos: 2 } });
    await first.endAsync();
    // the other nodes know the session (its subscriptions decide what is stored)
    await waitCluster(1, (s) => (s.jetstream.sessionRecords ?? 0) >= 1, 'the session known on s2');
    await waitCluster(2, (s) => (s.jetstream.sessionRecords ?? 0) >= 1, 'the session known on s3');

    const onB = await client(1, 'pub-b');
    const onC = await client(2, 'pub-c', persistent); // a persistent publisher: its QoS 2 ids are kept in its session too
    for (let n = 1; n <= 20; n++) {
      await onB.publishAsync('roam/q1', `b1-${n}`, { qos: 1 });
      await onC.publishAsync('roam/q1', `c1-${n}`, { qos: 1 });
      await onB.publishAsync('roam/q2', `b2-${n}`, { qos: 2 });
      await onC.publishAsync('roam/q2', `c2-${n}`, { qos: 2 });
    }
    await onB.publishAsync('roam/other', 'not subscribed', { qos: 1 });

    const got: { topic: string; payload: string; qos: number }[] = [];
    const { c: back, present } = await resume(2, 'roamer', persistent, (topic, payload, qos) => got.push({ topic, payload: payload.toString(), qos }));
    expect(present).toBe(true);
    await until(() => got.length >= 80, 20_000, 'the 80 messages published while offline');
    const q1 = got.filter((m) => m.topic === 'roam/q1');
    const q2 = got.filter((m) => m.topic === 'roam/q2');
    // QoS 1: each at least once; QoS 2: each exactly once; nothing it did not subscribe to
    for (const p of ['b1', 'c1']) for (let n = 1; n <= 20; n++) expect(q1.some((m) => m.payload === `${p}-${n}`)).toBe(true);
    const q2Payloads = q2.map((m) => m.payload).sort();
    const expected = [...['b2', 'c2'].flatMap((p) => Array.from({ length: 20 }, (_, i) => `${p}-${i + 1}`))].sort();
    expect(q2Payloads).toEqual(expected);
    expect(q1.every((m) => m.qos === 1)).toBe(true);
    expect(q2.every((m) => m.qos === 2)).toBe(true);
    expect(got.some((m) => m.topic === 'roam/other')).toBe(false);
    // in order per publisher
    const fromB = q1.filter((m) => m.payload.startsWith('b1-')).map((m) => Number(m.payload.slice(3)));
    expect(fromB).toEqual([...fromB].sort((a, b) => a - b));

    // counted: stored on s2 and s3 (where they were published), resumed on s3
    const metrics = async (i: number): Promise<string> => (await fetch(`http://127.0.0.1:${nodes[i]!.ports['http']}/metrics`)).text();
    expect(await metrics(2)).toMatch(/^edb_cluster_sessions_resumed_total [1-9]/m);
    expect(await metrics(1)).toMatch(/^edb_cluster_session_messages_stored_total [1-9]/m);
    expect(await metrics(1)).toMatch(/^edb_cluster_sessions [1-9]/m);
    // its subscriptions came along: a message published on s1 now reaches it on s3
    const onA = await client(0, 'pub-a');
    await waitCluster(0, (s) => (s.nodes.find((n) => n.name === 's3')?.interest ?? 0) >= 2, 's3 interest known on s1');
    await onA.publishAsync('roam/q1', 'after', { qos: 1 });
    await until(() => got.some((m) => m.payload === 'after'), 10_000, 'a message published on s1 after the move');
    // acknowledged messages are not sent again on the next resume (on s2)
    await new Promise((r) => setTimeout(r, 300)); // its acknowledgements' positions are written
    await back.endAsync();
    const seen = got.length;
    const again: string[] = [];
    const { c: third, present: present2 } = await resume(1, 'roamer', persistent, (_t, payload) => again.push(payload.toString()));
    expect(present2).toBe(true);
    await onC.publishAsync('roam/q2', 'last', { qos: 2 });
    await until(() => again.includes('last'), 10_000, 'a message after the second move');
    expect(again.filter((p) => p.startsWith('b2-') || p.startsWith('c2-'))).toEqual([]);
    expect(seen).toBeGreaterThanOrEqual(81);
    await third.endAsync();
  }, 90_000);

  it('a session that expires while offline is gone on every node', async () => {
    const c = await client(0, 'short-lived', { clean: false, properties: { sessionExpiryInterval: 2 } });
    await c.subscribeAsync('short/t', { qos: 1 });
    await c.endAsync();
    await waitCluster(2, (s) => (s.jetstream.sessionRecords ?? 0) >= 1, 'the session known on s3');
    await new Promise((r) => setTimeout(r, 3500));
    const { c: back, present } = await resume(2, 'short-lived', { clean: false, properties: { sessionExpiryInterval: 2 } });
    // [MQTT-5-3.1.2-23] it ended at its expiry: a new session
    expect(present).toBe(false);
    await back.endAsync();
  }, 30_000);

  it('loses no acknowledged QoS 1 message of persistent subscribers when their node is killed (kill -9)', async () => {
    const SUBS = 3;
    const got: Set<number>[] = [];
    let copies = 0; // every copy received, to count the duplicates a kill costs (QoS 1 allows them)
    const subs: MqttClient[] = [];
    for (let k = 0; k < SUBS; k++) {
      const set = new Set<number>();
      got.push(set);
      const c = await client(0, `killed-sub-${k}`, persistent);
      c.on('message', (_t, p) => {
        copies++;
        set.add(Number(p.toString()));
      });
      await c.subscribeAsync('kload/t', { qos: 1 });
      subs.push(c);
    }
    await waitCluster(1, (s) => (s.nodes.find((n) => n.name === 's1')?.interest ?? 0) >= 1 && (s.jetstream.sessionRecords ?? 0) >= SUBS, 's1 interest and sessions on s2');
    // connected on s1 when it dies, with a short expiry: nobody resumes it (the next test)
    const orphan = await client(0, 'orphan', { clean: false, properties: { sessionExpiryInterval: 3 } });
    await orphan.subscribeAsync('orphan/t', { qos: 1 });
    await waitCluster(1, (s) => (s.jetstream.sessionRecords ?? 0) >= SUBS + 1, 'the orphan known on s2');
    const pub = await client(1, 'load-publisher');
    const acked = new Set<number>();
    const COUNT = 600;
    const KILL_AT = 200;
    let moved: Promise<void> | undefined;
    for (let n = 1; n <= COUNT; n++) {
      if (n === KILL_AT) {
        await nodes[0]!.stop('SIGKILL');
        // the subscribers find their connection gone and reconnect to s3, resuming their sessions
        moved = (async () => {
          for (let k = 0; k < SUBS; k++) {
            await until(() => !subs[k]!.connected, 10_000, `subscriber ${k} notices`);
            const set = got[k]!;
            const { present } = await resume(2, `killed-sub-${k}`, persistent, (_t, p) => {
              copies++;
              set.add(Number(p.toString()));
            });
            expect(present).toBe(true);
          }
        })();
      }
      const packet = (await pub.publishAsync('kload/t', String(n), { qos: 1 })) as { reasonCode?: number } | undefined;
      if ((packet?.reasonCode ?? 0) < 0x80) acked.add(n);
    }
    await moved;
    expect(acked.size).toBeGreaterThan(COUNT / 2);
    for (let k = 0; k < SUBS; k++) {
      const set = got[k]!;
      await until(() => [...acked].every((n) => set.has(n)), 30_000, `every acknowledged message at subscriber ${k} (missing: ${[...acked].filter((n) => !set.has(n)).slice(0, 10).join(',')})`);
    }
    if (process.env['EDB_TEST_VERBOSE']) {
      await delay(1000);
      const unique = got.reduce((n, set) => n + set.size, 0);
      console.log(`kill -9 with ${SUBS} persistent QoS 1 subscribers: ${copies - unique} duplicates in ${copies} copies`);
    }
  }, 120_000);

  it('ends a session left by the killed node once its expiry has passed', async () => {
    // s1 is gone (previous test): the others end its session 3 s after they noticed
    await waitCluster(1, (s) => s.nodes.length === 2, 's1 dropped by s2', 15_000);
    // left: roamer, pub-c and the three subscribers that moved to s3 (short-lived expired earlier)
    await waitCluster(1, (s) => (s.jetstream.sessionRecords ?? 0) <= 5, 'the orphan session ended', 20_000);
    const { c, present } = await resume(1, 'orphan', { clean: false, properties: { sessionExpiryInterval: 3 } });
    expect(present).toBe(false);
    await c.endAsync();
  }, 60_000);

  it('sends a retained message a persistent session got on SUBSCRIBE again on another node when its node died before the PUBACK (kill -9)', async () => {
    // s1 is gone; the retained message is published on s3, the session subscribes on s2
    const pub = await client(2, 'ret-pub');
    await pub.publishAsync('ret/kept', 'r1', { qos: 1, retain: true });
    const probe = await client(1, 'ret-probe');
    const seen: string[] = [];
    probe.on('message', (t, p) => seen.push(`${t} ${p.toString()}`));
    // s2's retained mirror has it once its watch delivered it: subscribe again until the probe gets it
    for (const deadline = Date.now() + 15_000; !seen.includes('ret/kept r1'); ) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for the retained message in s2's mirror: ${JSON.stringify(seen)}`);
      await probe.subscribeAsync('ret/#', { qos: 1 });
      await delay(300);
      if (!seen.includes('ret/kept r1')) await probe.unsubscribeAsync('ret/#');
    }
    // a client that never acknowledges (no PUBACK): the message stays in flight
    const got: string[] = [];
    const silent = await client(1, 'ret-sess', { ...persistent, customHandleAcks: () => undefined });
    // (customHandleAcks never answering: MQTT.js then neither emits 'message' nor sends the PUBACK)
    silent.on('packetreceive', (p) => {
      if (p.cmd === 'publish') got.push(`${p.topic} ${p.payload.toString()}`);
    });
    await silent.subscribeAsync('ret/#', { qos: 1 });
    await until(() => got.includes('ret/kept r1'), 10_000, 'the retained message on SUBSCRIBE');
    await nodes[1]!.stop('SIGKILL');
    const again: { t: string; qos: number }[] = [];
    const { present } = await resume(2, 'ret-sess', persistent, (t, p, qos) => again.push({ t: `${t} ${p.toString()}`, qos }));
    expect(present).toBe(true);
    await until(() => again.some((m) => m.t === 'ret/kept r1'), 15_000, 'the unacknowledged retained message sent again on s3');
    expect(again.find((m) => m.t === 'ret/kept r1')!.qos).toBe(1);
  }, 60_000);
});
