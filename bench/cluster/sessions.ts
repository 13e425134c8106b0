// What the replicated path of persistent sessions costs (issue 12): QoS 1 to a persistent
// session (clean start 0, expiry 600 s) with the publisher on one cluster node and the
// subscriber on another (the message is stored once in the JetStream stream, R3, before it
// is delivered and acknowledged), vs the same on a single `edb start` (the local durable log,
// EDB_STORAGE=durable, fsync per batch), vs a non-persistent subscriber across nodes (core
// NATS only). Three nats-server processes (routes) and three cluster nodes on this machine.
//   npm run build && node dist/bench/cluster/sessions.js      (SECONDS=4 RATE=500 WINDOW=64)
// 1. delivery latency p50/p99 at RATE msg/s (64-byte payloads, publisher not waiting);
// 2. acknowledged rate: the publisher keeps WINDOW QoS 1 messages in flight and counts PUBACKs
//    per second (what a publisher gets when every message must be stored first).
// Medians of 3 rounds.
import { rmSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { startNats } from '../../test/helpers/nats.js';
import { startNode, type BenchNode as Node } from './node.js';

const SECONDS = Number(process.env['SECONDS'] ?? 4);
const RATE = Number(process.env['RATE'] ?? 500);
const WINDOW = Number(process.env['WINDOW'] ?? 64);


let seq = 0;
const connect = (port: number, id: string, opts: IClientOptions = {}): Promise<MqttClient> => mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, clientId: id, reconnectPeriod: 0, ...opts });
const persistent: IClientOptions = { clean: false, properties: { sessionExpiryInterval: 600 } };
const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function pair(pubPort: number, subPort: number, durable: boolean): Promise<{ pub: MqttClient; sub: MqttClient; topic: string }> {
  const topic = `bench/ps/${++seq}`;
  const sub = await connect(subPort, `ps-sub-${seq}`, durable ? persistent : {});
  await sub.subscribeAsync(topic, { qos: 1 });
  const pub = await connect(pubPort, `ps-pub-${seq}`);
  await new Promise((r) => setTimeout(r, 1500)); // interest and the session record reach the other nodes
  return { pub, sub, topic };
}

async function close(p: { pub: MqttClient; sub: MqttClient }): Promise<void> {
  await p.pub.endAsync();
  await p.sub.endAsync();
}

async function latency(pubPort: number, subPort: number, durable: boolean): Promise<{ p50: number; p99: number; n: number }> {
  const p = await pair(pubPort, subPort, durable);
  const lat: number[] = [];
  p.sub.on('message', (_t, m) => lat.push(performance.now() - m.readDoubleLE(0)));
  const interval = 1000 / RATE;
  const end = performance.now() + SECONDS * 1000;
  let next = performance.now();
  while (performance.now() < end) {
    while (next <= performance.now()) {
      const payload = Buffer.alloc(64);
      payload.writeDoubleLE(performance.now(), 0);
      p.pub.publish(p.topic, payload, { qos: 1 });
      next += interval;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await new Promise((r) => setTimeout(r, 1500));
  await close(p);
  const sorted = lat.sort((a, b) => a - b);
  return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), n: lat.length };
}

async function ackRate(pubPort: number, subPort: number, durable: boolean): Promise<number> {
  const p = await pair(pubPort, subPort, durable);
  let acked = 0;
  const end = performance.now() + SECONDS * 1000;
  const payload = Buffer.alloc(64);
  await Promise.all(
    Array.from({ length: WINDOW }, async () => {
      while (performance.now() < end) {
        await p.pub.publishAsync(p.topic, payload, { qos: 1 });
        acked++;
      }
    }),
  );
  await close(p);
  return acked / SECONDS;
}

async function main(): Promise<void> {
  const nats = await startNats(3, { clusterName: 'bench' });
  const nodes: Node[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const urls = [i, ...[0, 1, 2].filter((j) => j !== i)].map((j) => nats.servers[j]!.url).join(',');
      nodes.push(await startNode({ EDB_CLUSTER_NATS: urls, EDB_NODE_NAME: `p${i + 1}`, EDB_CLUSTER_NAME: 'bench' }, { ready: /persistent sessions in JetStream bucket/, prefix: 'edb-bench-sessions-' }));
    }
    const single = await startNode({}, { prefix: 'edb-bench-sessions-' });
    nodes.push(single);
    await new Promise((r) => setTimeout(r, 2000));
    const [a, b] = nodes as [Node, Node];
    const cases: [string, number, number, boolean][] = [
      ['single node, persistent subscriber (local durable log)', single.port, single.port, true],
      ['cluster, cross-node, persistent subscriber (JetStream R3)', a.port, b.port, true],
      ['cluster, cross-node, non-persistent subscriber (core NATS)', a.port, b.port, false],
    ];
    const fmt = (x: number): string => x.toFixed(2);
    const rates: number[] = [];
    for (const [name, pubPort, subPort, durable] of cases) {
      const lat = [];
      const rate = [];
      for (let round = 0; round < 3; round++) {
        lat.push(await latency(pubPort, subPort, durable));
        rate.push(await ackRate(pubPort, subPort, durable));
      }
      const r = median(rate);
      rates.push(r);
      console.log(`${name}: QoS 1 latency at ${RATE} msg/s p50 ${fmt(median(lat.map((x) => x.p50)))} ms p99 ${fmt(median(lat.map((x) => x.p99)))} ms (${lat[0]!.n} messages); acknowledged ${Math.round(r)} msg/s with ${WINDOW} in flight`);
    }
    console.log(`acknowledged-rate ratios: cluster persistent / single persistent ${(rates[1]! / rates[0]!).toFixed(2)}; cluster persistent / cluster non-persistent ${(rates[1]! / rates[2]!).toFixed(2)}`);
  } finally {
    for (const n of nodes) {
      n.child.kill('SIGTERM');
      rmSync(n.dir, { recursive: true, force: true });
    }
    await nats.stop();
  }
}

await main();
