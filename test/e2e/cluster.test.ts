/**
 * Cluster mode (issue 12) with real processes: three nats-server processes with JetStream
 * joined by cluster routes, three broker nodes (in-process, each connected to a different
 * NATS server), MQTT.js clients on different nodes. Routing by shared interest (a message
 * crosses only to nodes with a subscriber), $share once cluster-wide, retained messages in
 * one replicated bucket, session takeover across nodes, and GET /api/cluster.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { startBroker, until, delay, type TestBroker } from '../helpers/broker.js';
import { startNats, type NatsCluster } from '../helpers/nats.js';

let nats: NatsCluster;
const nodes: TestBroker[] = [];
const open: MqttClient[] = [];
let seq = 0;

const clusterOf = (b: TestBroker) => b.server.cluster!;

beforeAll(async () => {
  nats = await startNats(3);
  for (let i = 0; i < 3; i++) {
    nodes.push(await startBroker({ clusterNats: nats.servers[i]!.url, nodeName: `n${i + 1}`, clusterName: 'routing', clusterReplicas: 3, httpPort: 0 }));
  }
  // every node sees the other two
  await until(() => nodes.every((n) => clusterOf(n).status().nodes.length === 3), 20_000, 'three nodes in the cluster');
});

afterAll(async () => {
  await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
  for (const n of nodes) await n.stop();
  await nats?.stop();
});

async function connect(node: TestBroker, opts: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(node.url, { protocolVersion: 5, clientId: `c-${++seq}`, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  open.push(client);
  return client;
}

function collect(client: MqttClient): string[] {
  const got: string[] = [];
  client.on('message', (topic, payload) => got.push(`${topic} ${payload.toString()}`));
  return got;
}

/** Until `from` routes on `filter`-interest of node `to` (interest is shared asynchronously). */
async function interestKnown(from: TestBroker, to: string, count: number): Promise<void> {
  await until(() => (clusterOf(from).status().nodes.find((n) => n.name === to)?.interest ?? 0) >= count, 10_000, `${to}'s interest known`);
}

describe('cluster: routing', () => {
  it('delivers a message published on one node to a subscriber on another, and only to nodes with a subscriber', async () => {
    const [n1, n2, n3] = nodes as [TestBroker, TestBroker, TestBroker];
    const sub = await connect(n2);
    const got = collect(sub);
    await sub.subscribeAsync('plant/+/temp', { qos: 1 });
    await interestKnown(n1, 'n2', 1);
    const forwardedBefore = clusterOf(n1).node.stats.forwarded;
    const receivedN3 = clusterOf(n3).node.stats.received;
    const pub = await connect(n1);
    for (let i = 0; i < 10; i++) await pub.publishAsync(`plant/${i}/temp`, String(i), { qos: 1 });
    await until(() => got.length === 10, 10_000, 'ten messages on n2');
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `plant/${i}/temp ${i}`));
    // one copy per message, to n2 only: n3 has no subscriber and receives nothing
    expect(clusterOf(n1).node.stats.forwarded - forwardedBefore).toBe(10);
    expect(clusterOf(n3).node.stats.received).toBe(receivedN3);
    // a topic nobody subscribes to stays on its node
    await pub.publishAsync('nobody/listens', 'x', { qos: 1 });
    await delay(200);
    expect(clusterOf(n1).node.stats.forwarded - forwardedBefore).toBe(10);
  });

  it('stops forwarding to a node once its last subscriber for the filter is gone', async () => {
    const [n1, n2] = nodes as [TestBroker, TestBroker];
    const sub = await connect(n2);
    await sub.subscribeAsync('gone/#', { qos: 0 });
    await until(() => clusterOf(n1).node.interest.plan('gone/x') !== undefined, 10_000, 'interest in gone/#');
    await sub.unsubscribeAsync('gone/#');
    await until(() => clusterOf(n1).node.interest.plan('gone/x') === undefined, 10_000, 'interest in gone/# withdrawn');
  });

  it('delivers each message of a $share group once across the cluster, spread over the nodes', async () => {
    const members = await Promise.all(nodes.map((n) => connect(n)));
    const got = members.map(collect);
    for (const m of members) await m.subscribeAsync('$share/workers/jobs/#', { qos: 1 });
    for (const name of ['n2', 'n3']) await until(() => (clusterOf(nodes[0]!).status().nodes.find((n) => n.name === name)?.interest ?? 0) > 0 && clusterOf(nodes[0]!).node.interest.plan('jobs/x') !== undefined, 10_000, 'share interest');
    await delay(300); // the last SUBSCRIBE's interest reaches n1
    const pub = await connect(nodes[0]!);
    for (let i = 0; i < 30; i++) await pub.publishAsync(`jobs/${i}`, String(i), { qos: 1 });
    await until(() => got.reduce((a, g) => a + g.length, 0) >= 30, 10_000, 'thirty jobs delivered');
    await delay(300); // no duplicate arrives late
    const all = got.flat().sort();
    expect(all).toHaveLength(30);
    expect(new Set(all).size).toBe(30);
    // round robin over the nodes with members: every node took a share
    for (const g of got) expect(g.length).toBeGreaterThan(0);
  });

  it('keeps one set of retained messages for the cluster', async () => {
    const [n1, n2, n3] = nodes as [TestBroker, TestBroker, TestBroker];
    const pub = await connect(n1);
    await pub.publishAsync('site/config', 'v1', { qos: 1, retain: true });
    await until(() => n3.server.broker.retained.get('site/config')?.payload.toString() === 'v1', 10_000, 'retained on n3');
    const late = await connect(n3);
    const got = collect(late);
    await late.subscribeAsync('site/#', { qos: 1 });
    await until(() => got.length === 1, 5000, 'retained message on n3');
    expect(got).toEqual(['site/config v1']);
    // a newer value from another node replaces it everywhere; an empty payload clears it
    const pub2 = await connect(n2);
    await pub2.publishAsync('site/config', 'v2', { qos: 1, retain: true });
    await until(() => nodes.every((n) => n.server.broker.retained.get('site/config')?.payload.toString() === 'v2'), 10_000, 'v2 everywhere');
    await pub2.publishAsync('site/config', '', { qos: 1, retain: true });
    await until(() => nodes.every((n) => n.server.broker.retained.get('site/config') === undefined), 10_000, 'cleared everywhere');
    expect(clusterOf(n1).status().jetstream.retained).toBe('ready');
  });

  it('takes over a client id connected on another node (DISCONNECT 0x8E to the older connection)', async () => {
    const [n1, n2] = nodes as [TestBroker, TestBroker];
    const first = await connect(n1, { clientId: 'same-id', clean: false, properties: { sessionExpiryInterval: 600 } });
    await first.subscribeAsync('takeover/#', { qos: 1 });
    const reason = new Promise<number | undefined>((resolve) => first.on('disconnect', (p) => resolve(p.reasonCode)));
    await delay(20);
    await connect(n2, { clientId: 'same-id', clean: false, properties: { sessionExpiryInterval: 600 } });
    expect(await reason).toBe(0x8e);
    // the older node's session is ended: it no longer attracts messages for that client
    await until(() => !n1.server.broker.sessions.has('same-id'), 5000, 'session on n1 ended');
  });

  it('answers GET /api/cluster with every node', async () => {
    const res = await fetch(`http://127.0.0.1:${nodes[0]!.server.port('http')}/api/cluster`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { enabled: boolean; connected: boolean; node: string; nodes: { name: string; self?: boolean }[]; jetstream: { replicas: number } };
    expect(body.enabled).toBe(true);
    expect(body.connected).toBe(true);
    expect(body.node).toBe('n1');
    expect(body.nodes.map((n) => n.name)).toEqual(['n1', 'n2', 'n3']);
    expect(body.jetstream.replicas).toBe(3);
    const ready = await fetch(`http://127.0.0.1:${nodes[0]!.server.port('http')}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${nodes[0]!.server.port('http')}/metrics`)).text();
    expect(metrics).toMatch(/^edb_cluster_connected 1$/m);
    expect(metrics).toMatch(/^edb_cluster_nodes 3$/m);
    expect(metrics).toMatch(/^edb_cluster_messages_forwarded_total [1-9]/m);
    // n2 received messages from n1: their cross-node latency
    const n2metrics = await (await fetch(`http://127.0.0.1:${nodes[1]!.server.port('http')}/metrics`)).text();
    expect(n2metrics).toMatch(/^edb_cluster_messages_received_total [1-9]/m);
    expect(n2metrics).toMatch(/^edb_cluster_latency_seconds_count [1-9]/m);
  });

  it('prints the cluster with `edb cluster show` (exit 0), and exit 1 on a broker that runs alone', async () => {
    const cli = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
    // asynchronously: the brokers run in this process and must answer meanwhile
    const run = (url: string) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, [cli, 'cluster', 'show', '--url', url]);
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
        p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        p.on('close', (status) => resolve({ status, stdout, stderr }));
      });
    const shown = await run(`http://127.0.0.1:${nodes[1]!.server.port('http')}`);
    expect(shown.status, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/cluster routing, seen from node n2: connected to NATS server nats2/);
    expect(shown.stdout).toMatch(/^NODE\s+RUNNING\s+CLIENTS\s+SUBSCRIPTIONS/m);
    for (const name of ['n1', 'n2 \\*', 'n3']) expect(shown.stdout).toMatch(new RegExp(`^${name}\\s+true`, 'm'));
    const alone = await startBroker({ httpPort: 0 });
    try {
      const r = await run(`http://127.0.0.1:${alone.server.port('http')}`);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/edb cluster show: this broker runs alone/);
    } finally {
      await alone.stop();
    }
  });
});

describe('cluster: joining', () => {
  it('serves local clients while NATS is unreachable, says so on /readyz, and joins once NATS is up', async () => {
    const { freePort } = await import('../helpers/nats.js');
    const port = await freePort();
    const lonely = await startBroker({ clusterNats: `nats://127.0.0.1:${port}`, nodeName: 'late', clusterName: 'joining', clusterReplicas: 1, httpPort: 0 });
    let single: NatsCluster | undefined;
    try {
      const http = `http://127.0.0.1:${lonely.server.port('http')}`;
      const ready = await fetch(`${http}/readyz`);
      expect(ready.status).toBe(503);
      const body = (await ready.json()) as { waiting?: { cluster?: string } };
      expect(body.waiting?.cluster).toMatch(/not connected to NATS/);
      // local clients are served meanwhile
      const sub = await connect(lonely);
      const got = collect(sub);
      await sub.subscribeAsync('local/x');
      const pub = await connect(lonely);
      await pub.publishAsync('local/x', 'still here');
      await until(() => got.length === 1, 5000, 'local delivery');
      const status = (await (await fetch(`${http}/api/cluster`)).json()) as { connected: boolean };
      expect(status.connected).toBe(false);
      // NATS comes up on that port: the node joins without a restart
      single = await startNats(1, { ports: [port] });
      await until(() => lonely.server.cluster!.node.isConnected, 20_000, 'joined');
      await until(() => lonely.server.cluster!.status().jetstream.retained === 'ready', 20_000, 'retained bucket ready');
      expect((await fetch(`${http}/readyz`)).status).toBe(200);
    } finally {
      await lonely.stop();
      await single?.stop();
    }
  });

  it('refuses bad cluster settings with a message naming the setting', async () => {
    await expect(startBroker({ clusterNats: 'nats://127.0.0.1:1', nodeName: 'has space' })).rejects.toThrow(/EDB_NODE_NAME=has space/);
    await expect(startBroker({ clusterNats: 'http://x/y', nodeName: 'ok' })).rejects.toThrow(/EDB_CLUSTER_NATS/);
  });
});
