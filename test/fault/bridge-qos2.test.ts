/**
 * QoS 2 over a bridge is exactly once across reconnects: a TCP proxy between the bridge and
 * the remote (mosquitto, and a second Edge Data Broker) reads the MQTT packets each way and
 * cuts the link in the middle of QoS 2 flows, at chosen packets (a PUBLISH that arrived but
 * whose PUBREC is lost, a lost PUBREC, a lost PUBREL, a lost PUBCOMP), over and over while
 * numbered QoS 2 messages flow, out and in. The verifier fails on any duplicate and on any
 * message missing; per topic the order holds. With mosquitto our broker keeps the link's QoS 2
 * state in memory (EDB_STORAGE=memory), with the second Edge Data Broker it stores it (durable:
 * the path that also holds across a crash, bridge-qos2-kill.test.ts).
 */
import net from 'node:net';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBridge } from '../../src/config/bridges.js';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { startMosquitto } from '../helpers/mosquitto.js';

const PUBLISH = 3;
const PUBREC = 5;
const PUBREL = 6;
const PUBCOMP = 7;
const NAMES: Record<number, string> = { [PUBLISH]: 'PUBLISH', [PUBREC]: 'PUBREC', [PUBREL]: 'PUBREL', [PUBCOMP]: 'PUBCOMP' };

/** Where to cut: the next packet of `type` going `dir` ("up": bridge to remote); `forward`: it goes through first. */
interface Cut {
  dir: 'up' | 'down';
  type: number;
  forward: boolean;
}

/** A TCP proxy that frames MQTT packets each way and, when armed, cuts the connection at one. */
async function cuttingProxy(upstreamPort: number) {
  const state = { armed: undefined as Cut | undefined, cuts: new Map<string, number>() };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((down) => {
    const up = net.connect(upstreamPort, '127.0.0.1');
    sockets.add(down).add(up);
    let cut = false;
    const end = () => {
      cut = true;
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    const pipe = (from: net.Socket, to: net.Socket, dir: 'up' | 'down') => {
      let buf: Buffer = Buffer.alloc(0);
      from.on('data', (d: Buffer) => {
        if (cut) return;
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        for (;;) {
          // fixed header: type and flags, then Remaining Length (1-4 bytes)
          let len = 0;
          let mul = 1;
          let i = 1;
          for (; i < 5 && i < buf.length; i++) {
            len += (buf[i]! & 0x7f) * mul;
            mul *= 128;
            if ((buf[i]! & 0x80) === 0) break;
          }
          if (i >= buf.length || i === 5) return; // the header is not complete yet
          const total = i + 1 + len;
          if (buf.length < total) return;
          const packet = buf.subarray(0, total);
          buf = buf.subarray(total);
          const type = packet[0]! >> 4;
          const qos = (packet[0]! >> 1) & 3;
          const a = state.armed;
          if (a && a.dir === dir && a.type === type && (type !== PUBLISH || qos === 2)) {
            state.armed = undefined;
            const key = `${dir} ${NAMES[type]}${a.forward ? ' through' : ' lost'}`;
            state.cuts.set(key, (state.cuts.get(key) ?? 0) + 1);
            cut = true;
            if (a.forward) to.write(packet, () => setTimeout(end, 5));
            else end();
            return;
          }
          to.write(packet);
        }
      });
    };
    pipe(down, up, 'up');
    pipe(up, down, 'down');
    down.on('close', end).on('error', end);
    up.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    state,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Records every arrival on one topic: numbers, in order. */
async function receiver(url: string, filter: string, id: string): Promise<{ seen: number[]; client: MqttClient }> {
  const seen: number[] = [];
  const client = await mqtt.connectAsync(url, { clientId: id, clean: false, reconnectPeriod: 200, protocolVersion: 5, properties: { sessionExpiryInterval: 600 } });
  client.on('message', (_t, payload) => seen.push(Number(payload.toString())));
  client.on('error', () => undefined);
  await client.subscribeAsync(filter, { qos: 2 });
  return { seen, client };
}

/** Publishes 0..n-1 at QoS 2 on one topic, a few in flight at a time. */
async function publishNumbered(client: MqttClient, topic: string, n: number, window = 4): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (next < n) {
        const k = next++;
        await client.publishAsync(topic, String(k), { qos: 2 });
        await new Promise((r) => setTimeout(r, 20));
      }
    }),
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fast = { reconnectMin: '50ms', reconnectMax: '200ms', keepAlive: 5 };

/** Exactly once and in order: no duplicate, none missing. */
function checkExactlyOnce(seen: number[], n: number): void {
  const counts = new Map<number, number>();
  for (const k of seen) counts.set(k, (counts.get(k) ?? 0) + 1);
  const dups = [...counts].filter(([, c]) => c > 1).map(([k]) => k);
  expect(dups, 'messages that arrived more than once').toEqual([]);
  const missing = Array.from({ length: n }, (_, k) => k).filter((k) => !counts.has(k));
  expect(missing, 'messages that never arrived').toEqual([]);
  expect(seen, 'order').toEqual([...seen].sort((a, b) => a - b));
}

const OUT_CUTS: Cut[] = [
  { dir: 'up', type: PUBLISH, forward: true }, // the remote has it, its PUBREC is lost
  { dir: 'down', type: PUBREC, forward: false },
  { dir: 'up', type: PUBREL, forward: false },
  { dir: 'down', type: PUBCOMP, forward: false }, // released and delivered there, the PUBCOMP lost
];
const IN_CUTS: Cut[] = [
  { dir: 'down', type: PUBLISH, forward: true }, // we have it, our PUBREC is lost
  { dir: 'up', type: PUBREC, forward: true }, // the remote has our PUBREC: it sends PUBREL on the next connection
  { dir: 'down', type: PUBREL, forward: false },
  { dir: 'up', type: PUBCOMP, forward: false },
];

/** Arms the cuts in turn while `running` says so, one at a time, each once the link is back. */
async function keepCutting(proxy: Awaited<ReturnType<typeof cuttingProxy>>, cuts: Cut[], up: () => boolean, running: () => boolean): Promise<void> {
  let i = 0;
  while (running()) {
    if (!proxy.state.armed && up()) {
      await sleep(40 + Math.floor(Math.random() * 60)); // into the middle of the flow
      proxy.state.armed = cuts[i++ % cuts.length];
    }
    await sleep(10);
  }
  proxy.state.armed = undefined;
}

describe('bridge QoS 2: exactly once across reconnects (link cut in the middle of QoS 2 flows)', () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  afterAll(async () => {
    for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  });

  const remotes = [
    {
      name: 'mosquitto (3.1.1)',
      version: 4 as const,
      // the QoS 2 state of the link in memory here, stored (and acted on once stored) with the other
      storage: 'memory' as const,
      start: async () => {
        const m = await startMosquitto();
        return { port: m.port, stop: () => m.stop() };
      },
    },
    {
      name: 'a second Edge Data Broker (5), durable storage',
      version: 5 as const,
      storage: 'durable' as const,
      start: async () => {
        const b = await startBroker();
        return { port: b.server.port('mqtt'), stop: () => b.stop() };
      },
    },
  ];
  const N = 800;

  for (const r of remotes) {
    it(`out to ${r.name}: every message once, in order`, async () => {
      const remote = await r.start();
      cleanup.push(() => remote.stop());
      const proxy = await cuttingProxy(remote.port);
      cleanup.push(() => proxy.close());
      const v = await receiver(`mqtt://127.0.0.1:${remote.port}`, 'q2out/#', `verifier-out-${r.version}`);
      cleanup.push(() => v.client.end(true));
      const edb: TestBroker = await startBroker({ storage: r.storage, bridges: [parseBridge('br0', { url: `mqtt://127.0.0.1:${proxy.port}`, ...fast, protocolVersion: r.version, topics: ['q2out/# out 2'] })] });
      cleanup.push(() => edb.stop());
      const bridge = edb.server.bridges.get('br0')!;
      await until(() => bridge.state === 'connected', 15_000, 'bridge up');
      const pub = await mqtt.connectAsync(edb.url, { reconnectPeriod: 0 });
      cleanup.push(() => pub.end(true));
      let running = true;
      const cutting = keepCutting(proxy, OUT_CUTS, () => bridge.state === 'connected', () => running);
      await publishNumbered(pub, 'q2out/x', N);
      await until(() => bridge.backlog.size === 0 && bridge.state === 'connected', 60_000, 'the backlog released');
      running = false;
      await cutting;
      await until(() => new Set(v.seen).size >= N, 30_000, 'every message on the remote');
      await sleep(500); // a late duplicate would come now
      checkExactlyOnce(v.seen, N);
      for (const c of OUT_CUTS) expect(proxy.state.cuts.get(`${c.dir} ${NAMES[c.type]}${c.forward ? ' through' : ' lost'}`) ?? 0, `cuts at ${c.dir} ${NAMES[c.type]}`).toBeGreaterThan(0);
    }, 120_000);

    it(`in from ${r.name}: every message once, in order`, async () => {
      const remote = await r.start();
      cleanup.push(() => remote.stop());
      const proxy = await cuttingProxy(remote.port);
      cleanup.push(() => proxy.close());
      const edb: TestBroker = await startBroker({ storage: r.storage, bridges: [parseBridge('br0', { url: `mqtt://127.0.0.1:${proxy.port}`, ...fast, clientId: `in-${r.version}`, protocolVersion: r.version, topics: ['q2in/# in 2'] })] });
      cleanup.push(() => edb.stop());
      const bridge = edb.server.bridges.get('br0')!;
      await until(() => bridge.state === 'connected', 15_000, 'bridge up');
      const v = await receiver(edb.url, 'q2in/#', 'verifier-in');
      cleanup.push(() => v.client.end(true));
      await sleep(300); // the bridge's SUBSCRIBE is through
      const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${remote.port}`, { reconnectPeriod: 0 });
      cleanup.push(() => pub.end(true));
      let running = true;
      const cutting = keepCutting(proxy, IN_CUTS, () => bridge.state === 'connected', () => running);
      await publishNumbered(pub, 'q2in/x', N);
      await until(() => new Set(v.seen).size >= N, 60_000, 'every message here');
      running = false;
      await cutting;
      await sleep(1000); // a late duplicate would come now (the remote sends again on the next connection)
      checkExactlyOnce(v.seen, N);
      for (const c of IN_CUTS) expect(proxy.state.cuts.get(`${c.dir} ${NAMES[c.type]}${c.forward ? ' through' : ' lost'}`) ?? 0, `cuts at ${c.dir} ${NAMES[c.type]}`).toBeGreaterThan(0);
    }, 120_000);
  }
});
