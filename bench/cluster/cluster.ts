// Cluster mode in one run (issue 12): three nats-server processes with JetStream (routes),
// three `edb start` nodes, and one single `edb start` without a cluster, all on this machine.
//   npm run build && node dist/bench/cluster/cluster.js      (SECONDS=5 RATE=2000 CLIENTS=50)
// 1. Delivery latency p50/p99, QoS 0 and QoS 1, at a moderate rate (RATE msg/s, 64-byte
//    payloads): publisher and subscriber on the same node, then on different nodes.
// 2. Throughput: a burst of QoS 0 messages from one publisher, received by one subscriber on
//    the same node / another node (messages per second at the subscriber).
// 3. State-store round trips (CLIENTS closed loops of SET then GET, MQTT 5, the project's
//    StateStoreClient): a cluster node (writes replicated R3 through JetStream) vs the single node.
// Clients are MQTT.js in this process; medians of a few rounds are what to compare.
import { rmSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { StateStoreClient } from '../../src/state/client.js';
import { startNats } from '../../test/helpers/nats.js';
import { startNode, type BenchNode as Node } from './node.js';

const SECONDS = Number(process.env['SECONDS'] ?? 5);
const RATE = Number(process.env['RATE'] ?? 2000);
const CLIENTS = Number(process.env['CLIENTS'] ?? 50);
const BURST = Number(process.env['BURST'] ?? 50_000);


const connect = (port: number, id: string): Promise<MqttClient> => mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, clientId: id, reconnectPeriod: 0 });

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

let topicSeq = 0;

/** Latency at RATE msg/s for SECONDS: p50, p99 in ms. */
async function latency(pubPort: number, subPort: number, qos: 0 | 1): Promise<{ p50: number; p99: number; n: number }> {
  const topic = `bench/lat/${++topicSeq}`;
  const sub = await connect(subPort, `lat-sub-${topicSeq}`);
  const pub = await connect(pubPort, `lat-pub-${topicSeq}`);
  const lat: number[] = [];
  sub.on('message', (_t, p) => lat.push(performance.now() - p.readDoubleLE(0)));
  await sub.subscribeAsync(topic, { qos });
  await new Promise((r) => setTimeout(r, 1000)); // the subscription's interest reaches the other nodes
  const payload = Buffer.alloc(64);
  const interval = 1000 / RATE;
  const end = performance.now() + SECONDS * 1000;
  let next = performance.now();
  while (performance.now() < end) {
    // a batch per timer tick keeps the rate without a timer per message
    while (next <= performance.now()) {
      payload.writeDoubleLE(performance.now(), 0);
      pub.publish(topic, Buffer.from(payload), { qos });
      next += interval;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await new Promise((r) => setTimeout(r, 1000));
  await pub.endAsync();
  await sub.endAsync();
  const sorted = lat.sort((a, b) => a - b);
  return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), n: lat.length };
}

/** A burst of BURST QoS 0 messages: messages per second at the subscriber. */
async function throughput(pubPort: number, subPort: number): Promise<number> {
  const topic = `bench/tp/${++topicSeq}`;
  const sub = await connect(subPort, `tp-sub-${topicSeq}`);
  const pub = await connect(pubPort, `tp-pub-${topicSeq}`);
  let got = 0;
  let first = 0;
  let last = 0;
  sub.on('message', () => {
    if (got++ === 0) first = performance.now();
    last = performance.now();
  });
  await sub.subscribeAsync(topic, { qos: 0 });
  await new Promise((r) => setTimeout(r, 1000));
  const payload = Buffer.alloc(64);
  for (let i = 0; i < BURST; i++) {
    pub.publish(topic, payload, { qos: 0 });
    if (i % 500 === 0) await new Promise((r) => setImmediate(r));
  }
  const deadline = Date.now() + 30_000;
  let seen = -1;
  while (got !== seen && Date.now() < deadline) {
    seen = got;
    await new Promise((r) => setTimeout(r, 500));
  }
  await pub.endAsync();
  await sub.endAsync();
  return got > 1 ? ((got - 1) / (last - first)) * 1000 : 0;
}

/** CLIENTS closed loops of SET/GET for SECONDS: round trips per second. */
async function stateRtt(port: number, tag: string): Promise<{ rate: number; p50: number; p99: number }> {
  const loops = await Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      const c = await connect(port, `rtt-${tag}-${i}`);
      return { c, store: await StateStoreClient.create(c), key: `bench/${tag}/${i}` };
    }),
  );
  const value = Buffer.alloc(100, 0x76);
  const lat: number[] = [];
  let count = 0;
  const end = performance.now() + SECONDS * 1000;
  await Promise.all(
    loops.map(async ({ store, key }) => {
      while (performance.now() < end) {
        let t = performance.now();
        await store.set(key, value);
        lat.push(performance.now() - t);
        t = performance.now();
        await store.get(key);
        lat.push(performance.now() - t);
        count += 2;
      }
    }),
  );
  for (const l of loops) {
    await l.store.close();
    await l.c.endAsync();
  }
  const sorted = lat.sort((a, b) => a - b);
  return { rate: count / SECONDS, p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99) };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const nats = await startNats(3, { clusterName: 'bench' });
  const nodes: Node[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const urls = [i, ...[0, 1, 2].filter((j) => j !== i)].map((j) => nats.servers[j]!.url).join(',');
      nodes.push(await startNode({ EDB_CLUSTER_NATS: urls, EDB_NODE_NAME: `b${i + 1}`, EDB_CLUSTER_NAME: 'bench' }));
    }
    const single = await startNode({});
    nodes.push(single);
    await new Promise((r) => setTimeout(r, 2000)); // heartbeats: every node knows the others
    const [a, b] = nodes as [Node, Node];
    const fmt = (x: number) => x.toFixed(3);
    for (const qos of [0, 1] as const) {
      const same = [];
      const cross = [];
      for (let round = 0; round < 3; round++) {
        same.push(await latency(a.port, a.port, qos));
        cross.push(await latency(a.port, b.port, qos));
      }
      const s50 = median(same.map((r) => r.p50));
      const c50 = median(cross.map((r) => r.p50));
      console.log(`latency QoS ${qos} at ${RATE} msg/s: same node p50 ${fmt(s50)} ms p99 ${fmt(median(same.map((r) => r.p99)))} ms; cross-node p50 ${fmt(c50)} ms p99 ${fmt(median(cross.map((r) => r.p99)))} ms; the hop adds ${fmt(c50 - s50)} ms at p50 (medians of 3 rounds, ${same[0]!.n} messages each)`);
    }
    const tpSame = [];
    const tpCross = [];
    for (let round = 0; round < 3; round++) {
      tpSame.push(await throughput(a.port, a.port));
      tpCross.push(await throughput(a.port, b.port));
    }
    const ts = median(tpSame);
    const tc = median(tpCross);
    console.log(`throughput QoS 0 burst of ${BURST}: same node ${Math.round(ts)} msg/s, cross-node ${Math.round(tc)} msg/s (ratio ${(tc / ts).toFixed(2)})`);
    const cl = [];
    const si = [];
    for (let round = 0; round < 3; round++) {
      cl.push(await stateRtt(a.port, `c${round}`));
      si.push(await stateRtt(single.port, `s${round}`));
    }
    const cr = median(cl.map((r) => r.rate));
    const sr = median(si.map((r) => r.rate));
    console.log(
      `state store, ${CLIENTS} clients SET/GET: cluster node ${Math.round(cr)} round trips/s (p50 ${fmt(median(cl.map((r) => r.p50)))} ms, p99 ${fmt(median(cl.map((r) => r.p99)))} ms); single node ${Math.round(sr)} round trips/s (p50 ${fmt(median(si.map((r) => r.p50)))} ms, p99 ${fmt(median(si.map((r) => r.p99)))} ms); ratio ${(cr / sr).toFixed(2)}`,
    );
  } finally {
    for (const n of nodes) {
      n.child.kill('SIGTERM');
      rmSync(n.dir, { recursive: true, force: true });
    }
    await nats.stop();
  }
}

await main();
