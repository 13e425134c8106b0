/**
 * WebSocket vs TCP throughput, in one run, against:
 *   edb on uWebSockets.js, edb on ws (fallback engine), and aedes (ws + createWebSocketStream).
 *
 *   npm run build && node dist/bench/ws-throughput.js [--messages 200000] [--rounds 5] [--sizes 64,1024]
 *
 * Each broker runs in its own process. One publisher and one subscriber per measurement,
 * same transport for both, QoS 0, one topic; the publisher keeps at most `window`
 * messages in flight (sent and not yet received), so nothing is dropped and the figure
 * is sustained end-to-end delivery. Publishers batch several packets per write (per
 * WebSocket frame): the broker must split them; the subscriber counts bytes (every
 * forwarded PUBLISH has the publisher's exact length), so the load generator does little
 * work per message (its WebSocket frames use an all-zero masking key, so it does not XOR
 * every byte; the brokers unmask as usual). Rounds interleave the brokers to spread machine noise; medians are
 * reported, and ratios of medians.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import mqttPacket from 'mqtt-packet';
import WebSocket from 'ws';

interface Target {
  name: string;
  child: ChildProcess;
  tcp: number;
  ws: number;
  engine: string;
}

interface Pipe {
  send(data: Buffer): void;
  buffered(): number;
  onData(cb: (chunk: Buffer) => void): void;
  close(): void;
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const MESSAGES = Number(arg('messages', '200000'));
const ROUNDS = Number(arg('rounds', '5'));
const SIZES = arg('sizes', '64,1024').split(',').map(Number);
const WINDOW = Number(arg('window', '2000'));
const BATCH = Number(arg('batch', '50'));
const TARGETS = arg('targets', 'edb-uws,edb-ws,aedes').split(',');

async function startTarget(name: string): Promise<Target> {
  const script = fileURLToPath(new URL('./ws-target.js', import.meta.url));
  const child = spawn(process.execPath, [script, name], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`${name} exited ${code}`)));
  });
  const info = JSON.parse(line) as { tcp: number; ws: number; engine: string };
  return { name, child, ...info };
}

async function openTcp(port: number): Promise<Pipe> {
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return {
    send: (d) => void socket.write(d),
    buffered: () => socket.writableLength,
    onData: (cb) => socket.on('data', cb),
    close: () => socket.destroy(),
  };
}

async function openWs(port: number): Promise<Pipe> {
  // An all-zero masking key (RFC 6455 allows any key) spares the load generator an XOR of
  // every byte it sends; the brokers still unmask every frame as usual.
  const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, ['mqtt'], { perMessageDeflate: false, generateMask: (mask: Buffer) => void mask.fill(0) });
  ws.binaryType = 'nodebuffer';
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return {
    send: (d) => ws.send(d, { binary: true }),
    buffered: () => ws.bufferedAmount,
    onData: (cb) => ws.on('message', (d: Buffer) => cb(d)),
    close: () => ws.terminate(),
  };
}

const gen = (p: object) => mqttPacket.generate(p as mqttPacket.Packet);

/** CPU seconds (user + system) a process has used, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

interface Measurement {
  /** Messages per second delivered end to end. */
  rate: number;
  /** Broker CPU microseconds per delivered message (both directions: in and out). */
  brokerUs: number;
  /** Load generator CPU microseconds per message. */
  clientUs: number;
}

/** One measurement: delivery rate, and CPU per message of the broker and of this process. */
async function measure(open: () => Promise<Pipe>, size: number, id: string, brokerPid: number): Promise<Measurement> {
  const sub = await open();
  const pub = await open();
  let subBytes = 0;
  let ready!: () => void;
  const subReady = new Promise<void>((r) => (ready = r));
  const SETUP = 4 + 5; // CONNACK + SUBACK (v3.1.1)
  const publish = gen({ cmd: 'publish', topic: 'bench/t', payload: Buffer.alloc(size, 0x61), qos: 0, retain: false, dup: false });
  const batch = Buffer.concat(Array.from({ length: BATCH }, () => publish));
  let sent = 0;
  let received = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));

  const pump = (): void => {
    while (sent < MESSAGES && sent - received < WINDOW && pub.buffered() < 1024 * 1024) {
      const n = Math.min(BATCH, MESSAGES - sent);
      pub.send(n === BATCH ? batch : batch.subarray(0, n * publish.length));
      sent += n;
    }
  };
  sub.onData((chunk) => {
    subBytes += chunk.length;
    if (subBytes === SETUP) ready();
    if (subBytes > SETUP) {
      received = Math.floor((subBytes - SETUP) / publish.length);
      if (received >= MESSAGES) done();
      else pump();
    }
  });
  sub.send(gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: `sub-${id}`, keepalive: 0 }));
  sub.send(gen({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'bench/t', qos: 0 }] }));
  await subReady;
  let pubReady!: () => void;
  const pubConnected = new Promise<void>((r) => (pubReady = r));
  pub.onData(() => pubReady());
  pub.send(gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: `pub-${id}`, keepalive: 0 }));
  await pubConnected;

  const start = process.hrtime.bigint();
  const brokerCpu0 = cpuSeconds(brokerPid);
  const clientCpu0 = process.cpuUsage();
  pump();
  const timer = setTimeout(() => done(), 120_000);
  await finished;
  clearTimeout(timer);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const brokerCpu = cpuSeconds(brokerPid) - brokerCpu0;
  const clientCpu = process.cpuUsage(clientCpu0);
  sub.close();
  pub.close();
  if (received < MESSAGES) throw new Error(`${id}: only ${received}/${MESSAGES} delivered in 120 s`);
  return { rate: MESSAGES / seconds, brokerUs: (brokerCpu * 1e6) / MESSAGES, clientUs: (clientCpu.user + clientCpu.system) / MESSAGES };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const targets: Target[] = [];
  for (const name of TARGETS) targets.push(await startTarget(name));
  console.log(`node ${process.version}; ${MESSAGES} messages per measurement, ${ROUNDS} rounds, window ${WINDOW}, ${BATCH} packets per write`);
  for (const t of targets) console.log(`  ${t.name}: tcp ${t.tcp}, ws ${t.ws} (engine ${t.engine})`);
  const results = new Map<string, number[]>();
  const brokerCpu = new Map<string, number[]>();
  const clientCpu = new Map<string, number[]>();
  const key = (t: string, transport: string, size: number) => `${t}|${transport}|${size}`;
  let n = 0;
  // Warm-up (JIT, connection paths), not recorded.
  for (const t of targets) for (const size of SIZES) {
    await measure(() => openTcp(t.tcp), size, `warm${n++}`, t.child.pid!);
    await measure(() => openWs(t.ws), size, `warm${n++}`, t.child.pid!);
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const size of SIZES) {
      for (const t of targets) {
        for (const transport of ['tcp', 'ws'] as const) {
          const m = await measure(() => (transport === 'tcp' ? openTcp(t.tcp) : openWs(t.ws)), size, `${n++}`, t.child.pid!);
          const k = key(t.name, transport, size);
          results.set(k, [...(results.get(k) ?? []), m.rate]);
          brokerCpu.set(k, [...(brokerCpu.get(k) ?? []), m.brokerUs]);
          clientCpu.set(k, [...(clientCpu.get(k) ?? []), m.clientUs]);
        }
      }
    }
    process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`);
  }
  const med = (t: string, transport: string, size: number) => median(results.get(key(t, transport, size)) ?? [NaN]);
  console.log('\nmedian messages/s (end-to-end, 1 publisher -> 1 subscriber, QoS 0)');
  console.log(`| payload | ${targets.map((t) => `${t.name} tcp | ${t.name} ws`).join(' | ')} |`);
  console.log(`|---|${targets.map(() => '---:|---:').join('|')}|`);
  for (const size of SIZES) {
    console.log(`| ${size} B | ${targets.map((t) => `${Math.round(med(t.name, 'tcp', size))} | ${Math.round(med(t.name, 'ws', size))}`).join(' | ')} |`);
  }
  console.log('\nmedian broker CPU per message, microseconds (lower is better; load generator CPU in brackets)');
  console.log(`| payload | ${targets.map((t) => `${t.name} tcp | ${t.name} ws`).join(' | ')} |`);
  console.log(`|---|${targets.map(() => '---:|---:').join('|')}|`);
  const us = (m: Map<string, number[]>, k: string) => median(m.get(k) ?? [NaN]).toFixed(2);
  for (const size of SIZES) {
    console.log(
      `| ${size} B | ${targets.map((t) => ['tcp', 'ws'].map((tr) => `${us(brokerCpu, key(t.name, tr, size))} [${us(clientCpu, key(t.name, tr, size))}]`).join(' | ')).join(' | ')} |`,
    );
  }
  console.log('\nratios of medians');
  for (const size of SIZES) {
    const r = (a: number, b: number) => (a / b).toFixed(2);
    const parts = [];
    if (results.has(key('edb-uws', 'ws', size))) {
      parts.push(`edb ws/tcp (uWebSockets.js) ${r(med('edb-uws', 'ws', size), med('edb-uws', 'tcp', size))}`);
      if (results.has(key('aedes', 'ws', size))) parts.push(`edb(uWS) ws / aedes ws ${r(med('edb-uws', 'ws', size), med('aedes', 'ws', size))}`);
      if (results.has(key('edb-ws', 'ws', size))) parts.push(`uWebSockets.js / ws engine ${r(med('edb-uws', 'ws', size), med('edb-ws', 'ws', size))}`);
    }
    if (results.has(key('edb-ws', 'ws', size))) {
      parts.push(`edb ws/tcp (ws engine) ${r(med('edb-ws', 'ws', size), med('edb-ws', 'tcp', size))}`);
      if (results.has(key('aedes', 'ws', size))) parts.push(`edb(ws) ws / aedes ws ${r(med('edb-ws', 'ws', size), med('aedes', 'ws', size))}`);
    }
    if (results.has(key('aedes', 'tcp', size)) && results.has(key('edb-uws', 'tcp', size))) parts.push(`edb tcp / aedes tcp ${r(med('edb-uws', 'tcp', size), med('aedes', 'tcp', size))}`);
    console.log(`  ${size} B: ${parts.join('; ')}`);
  }
  for (const t of targets) t.child.stdin!.end();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
