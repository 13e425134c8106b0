/**
 * A node that ran alone with EDB_STORAGE=durable joins a cluster (issue 12, section 2
 * "Sessions"): the persistent sessions of its local log and their queued messages move into
 * the cluster's session store once. Real processes: `edb start` alone, then one nats-server
 * with JetStream and two nodes, the first on the same data folder; MQTT.js clients.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { startNats, type NatsCluster } from '../helpers/nats.js';
import { until, delay } from '../helpers/broker.js';

let nats: NatsCluster | undefined;
const procs: BrokerProcess[] = [];
const open: MqttClient[] = [];

afterAll(async () => {
  for (const c of open) c.end(true);
  for (const n of procs) if (n.child.exitCode === null && n.child.signalCode === null) await n.stop('SIGKILL').catch(() => undefined);
  await nats?.stop();
});

const persistent: IClientOptions = { clean: false, properties: { sessionExpiryInterval: 600 } };

async function start(env: Record<string, string>): Promise<BrokerProcess> {
  const p = await startBrokerProcess({ EDB_HTTP_PORT: '0', EDB_MQTTS_PORT: '-1', ...env }, ['mqtt', 'http']);
  procs.push(p);
  return p;
}

async function connect(n: BrokerProcess, id: string, opts: IClientOptions, onMessage?: (topic: string, payload: string) => void): Promise<{ c: MqttClient; present: boolean }> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${n.ports['mqtt']}`, { protocolVersion: 5, clientId: id, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  open.push(c);
  if (onMessage) c.on('message', (t, p) => onMessage(t, p.toString()));
  const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    c.once('connect', (p) => resolve(p as { sessionPresent: boolean }));
    c.once('error', reject);
  });
  return { c, present: connack.sessionPresent };
}

const logged = (n: BrokerProcess, text: string): boolean => n.logs.some((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes(text));

describe('cluster: a node joining with sessions in its local durable log', () => {
  it('imports its persistent sessions and queued messages into the cluster once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'edb-import-'));
    // 1. alone, durable: a persistent session offline with QoS 1 and QoS 2 messages queued
    const solo = await start({ EDB_STORAGE: 'durable', EDB_DATA_DIR: dir });
    const { c: first } = await connect(solo, 'imp-sub', persistent);
    await first.subscribeAsync({ 'imp/q1': { qos: 1 }, 'imp/q2': { qos: 2 } });
    await first.endAsync();
    const { c: pub } = await connect(solo, 'imp-pub', {});
    for (let n = 1; n <= 5; n++) {
      await pub.publishAsync('imp/q1', `one-${n}`, { qos: 1 });
      await pub.publishAsync('imp/q2', `two-${n}`, { qos: 2 });
    }
    await pub.endAsync();
    await solo.stop('SIGTERM');

    // 2. the same data folder joins a cluster; another node has never seen the session
    nats = await startNats(1);
    const cluster = { EDB_CLUSTER_NATS: nats.urls, EDB_CLUSTER_NAME: 'imp', EDB_CLUSTER_REPLICAS: '1' };
    const a = await start({ ...cluster, EDB_STORAGE: 'durable', EDB_DATA_DIR: dir, EDB_NODE_NAME: 'a' });
    const b = await start({ ...cluster, EDB_NODE_NAME: 'b' });
    await until(() => logged(a, 'imported into the cluster'), 30_000, 'the import on node a');
    const line = a.logs.find((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes('imported into the cluster'))!;
    expect(line['imported']).toBe(1);
    expect(line['messages']).toBe(10);
    await until(() => logged(b, 'persistent sessions in JetStream bucket'), 30_000, 'node b ready');

    // 3. the client resumes on b: session present, its subscriptions, each message once
    const got: string[] = [];
    const { c: back, present } = await connect(b, 'imp-sub', persistent, (_t, p) => got.push(p));
    expect(present).toBe(true);
    await until(() => got.length >= 10, 20_000, 'the ten queued messages on b');
    await delay(1000);
    expect([...got].sort()).toEqual([1, 2, 3, 4, 5].flatMap((n) => [`one-${n}`, `two-${n}`]).sort());
    // its subscriptions came along: a new message reaches it
    const { c: later } = await connect(a, 'imp-pub2', {});
    await later.publishAsync('imp/q2', 'after', { qos: 2 });
    await until(() => got.includes('after'), 10_000, 'a message published after the import');
    await delay(300); // its acknowledgements' position is written
    await back.endAsync();

    // 4. node a restarts on the same folder: nothing is imported again, nothing comes twice
    await a.stop('SIGTERM');
    const a2 = await start({ ...cluster, EDB_STORAGE: 'durable', EDB_DATA_DIR: dir, EDB_NODE_NAME: 'a' });
    await until(() => logged(a2, 'persistent sessions in JetStream bucket'), 30_000, 'node a ready again');
    expect(logged(a2, 'imported into the cluster')).toBe(false);
    const again: string[] = [];
    const { present: present2 } = await connect(a2, 'imp-sub', persistent, (_t, p) => again.push(p));
    expect(present2).toBe(true);
    await delay(1500);
    expect(again).toEqual([]);
  }, 120_000);
});
