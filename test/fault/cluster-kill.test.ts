/**
 * Cluster faults with real processes (issue 12, section 3): three nats-server processes
 * with JetStream and three `edb start` processes, each listing every NATS server (its own
 * first). A publisher sends numbered QoS 1 messages on one node, a subscriber on another
 * node checks that every number the publisher got a PUBACK for arrives:
 *  - kill -9 of the NATS server the publisher's node uses: that node fails over to another
 *    server; a message refused meanwhile (0x80) is sent again; nothing acknowledged is lost;
 *  - kill -9 of the publisher's broker node: the publisher reconnects to another node and
 *    goes on from its first unacknowledged number; nothing acknowledged is lost;
 *  - the state store keeps answering writes with one NATS server of three down.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { startNats, type NatsCluster } from '../helpers/nats.js';
import { until } from '../helpers/broker.js';
import { StateStoreClient } from '../../src/state/client.js';

let nats: NatsCluster;
const nodes: BrokerProcess[] = [];
const open: MqttClient[] = [];

function urlsFor(i: number): string {
  const order = [i, ...[0, 1, 2].filter((j) => j !== i)];
  return order.map((j) => nats.servers[j]!.url).join(',');
}

beforeAll(async () => {
  nats = await startNats(3);
  for (let i = 0; i < 3; i++) {
    nodes.push(await startBrokerProcess({ EDB_CLUSTER_NATS: urlsFor(i), EDB_NODE_NAME: `k${i + 1}`, EDB_CLUSTER_NAME: 'faults', EDB_HTTP_PORT: '0', EDB_MQTTS_PORT: '-1' }, ['mqtt', 'http']));
  }
  await waitCluster(0, (s) => s.nodes.length === 3 && s.jetstream.state === 'ready', 'three nodes');
}, 120_000);

afterAll(async () => {
  for (const c of open) c.end(true);
  // a node already killed has exited (exitCode stays null after a signal: check both)
  for (const n of nodes) if (n.child.exitCode === null && n.child.signalCode === null) await n.stop('SIGKILL').catch(() => undefined);
  await nats?.stop();
});

interface Status {
  connected: boolean;
  natsServer?: string;
  nodes: { name: string; interest: number }[];
  jetstream: { state: string; retained: string };
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

async function client(i: number, id: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${nodes[i]!.ports['mqtt']}`, { protocolVersion: 5, clientId: id, reconnectPeriod: 0, connectTimeout: 5000 });
  open.push(c);
  return c;
}

/** Publish 1..count on `topic`, each until acknowledged (a refused or failed one is sent again); `fault` runs before number `at`. Returns the acknowledged numbers. */
async function numbered(connectTo: () => Promise<MqttClient>, topic: string, count: number, at: number, fault: () => Promise<void>): Promise<Set<number>> {
  const acked = new Set<number>();
  let pub = await connectTo();
  for (let n = 1; n <= count; n++) {
    if (n === at) await fault();
    for (let attempt = 0; ; attempt++) {
      if (attempt > 200) throw new Error(`message ${n} never acknowledged`);
      try {
        if (!pub.connected) {
          pub.end(true);
          pub = await connectTo();
        }
        const packet = await Promise.race([
          pub.publishAsync(topic, String(n), { qos: 1 }),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no PUBACK in 3 s')), 3000)),
        ]);
        const code = (packet as { reasonCode?: number } | undefined)?.reasonCode ?? 0;
        if (code < 0x80) {
          acked.add(n);
          break;
        }
      } catch {
        // refused (0x80: NATS did not have it) or the connection dropped: send it again
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return acked;
}

describe('cluster faults', () => {
  it('loses no acknowledged QoS 1 message when the NATS server of the publisher\'s node is killed', async () => {
    const sub = await client(2, 'verifier-nats');
    const got = new Set<number>();
    sub.on('message', (_t, p) => got.add(Number(p.toString())));
    await sub.subscribeAsync('load/nats', { qos: 1 });
    await waitCluster(0, (s) => (s.nodes.find((n) => n.name === 'k3')?.interest ?? 0) > 0, 'k3 interest on k1');
    const before = await status(0);
    expect(before.natsServer).toBe('nats1');
    const acked = await numbered(() => client(0, 'publisher-nats'), 'load/nats', 400, 150, async () => {
      await nats.kill(0);
    });
    await until(() => [...acked].every((n) => got.has(n)), 20_000, 'every acknowledged message at the subscriber');
    expect(acked.size).toBe(400);
    // k1 moved to another NATS server and is still in the cluster
    await waitCluster(0, (s) => s.connected && s.natsServer !== 'nats1' && s.nodes.length === 3, 'k1 on another NATS server');
  });

  it('keeps answering state-store writes with one NATS server of three down', async () => {
    const c = await client(1, 'state-writer');
    const store = await StateStoreClient.create(c);
    // just after the kill, JetStream may be electing new leaders for the buckets whose leader
    // was on that server: a write is then refused with the protocol's "try again" error (never
    // answered OK without the quorum). Once one write is accepted, every later one is.
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        expect((await store.set('fault/first', 'x')).applied).toBe(true);
        break;
      } catch (err) {
        expect((err as Error).message).toBe('the cluster cannot replicate this write now; try again');
        if (Date.now() > deadline) throw new Error('no state-store write accepted 20 s after the NATS server was killed');
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    for (let i = 0; i < 20; i++) expect((await store.set(`fault/k${i}`, String(i))).applied).toBe(true);
    const other = await StateStoreClient.create(await client(2, 'state-reader'));
    expect((await other.set('fault/nx', 'one', { condition: 'nx' })).applied).toBe(true);
    expect((await store.set('fault/nx', 'two', { condition: 'nx' })).applied).toBe(false);
    await store.close();
    await other.close();
    await nats.restart(0);
  });

  it('loses no acknowledged QoS 1 message when the publisher\'s broker node is killed (kill -9)', async () => {
    const sub = await client(2, 'verifier-node');
    const got = new Set<number>();
    sub.on('message', (_t, p) => got.add(Number(p.toString())));
    await sub.subscribeAsync('load/node', { qos: 1 });
    await waitCluster(0, (s) => (s.nodes.find((n) => n.name === 'k3')?.interest ?? 0) > 1, 'k3 interest on k1');
    let target = 0;
    const acked = await numbered(() => client(target, `publisher-node-${target}`), 'load/node', 400, 150, async () => {
      await nodes[0]!.stop('SIGKILL');
      target = 1; // the publisher reconnects to another node
    });
    await until(() => [...acked].every((n) => got.has(n)), 20_000, 'every acknowledged message at the subscriber');
    expect(acked.size).toBe(400);
    // the others notice k1 is gone
    await waitCluster(1, (s) => s.nodes.length === 2, 'k1 dropped by k2', 15_000);
  });
});
