/**
 * Broker throughput with 1,000 filters active against none: the broker (edb start) in a
 * child process, 4 publishers and 1 subscriber (raw MQTT 3.1.1 over TCP, mqtt-packet) in
 * this one. Publishers send QoS 0 messages (the bench payload, every other one fires a
 * filter) round-robin over the 1,000 filter topics, with at most WINDOW messages in flight
 * (sent, not yet received by the subscriber on site/+/sensor, which the outputs do not
 * match); throughput is messages received per second. Runs alternate none / 1,000 filters;
 * the medians are compared.
 *
 *   npm run build && node dist/bench/rules/throughput.js [--runs 5] [--seconds 4] [--stateful]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqttPacket from 'mqtt-packet';
import { filterTopic, filtersDocument, payload, statefulDocument } from './documents.js';
import { freePort } from '../net.js';

const args = process.argv.slice(2);
const arg = (name: string, fallback: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const RUNS = arg('--runs', 5);
const SECONDS = arg('--seconds', 4);
const FILTERS = 1000;
/** --stateful: each filter keeps a 5-minute average and a deadband (fr-script-state.md). */
const STATEFUL = args.includes('--stateful');
const PUBLISHERS = 4;
const WINDOW = 2000;
const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

async function startBroker(dir: string, rulesFile: string | undefined): Promise<{ child: ChildProcess; port: number; httpPort: number }> {
  const port = await freePort();
  const httpPort = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, EDB_HOST: '127.0.0.1', EDB_MQTT_PORT: String(port), EDB_WS_PORT: '-1', EDB_HTTP_PORT: String(httpPort), EDB_RULES_PORT: '-1', EDB_DATA_DIR: dir, EDB_LOG_FORMAT: 'json', EDB_SYS_INTERVAL: '0' };
  if (rulesFile) env['EDB_RULES_FILE'] = rulesFile;
  env['EDB_LOG_LEVEL'] = 'info';
  const child = spawn(process.execPath, [MAIN, 'start'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  // the listeners open before the document has compiled: measure only once it is active
  let active = !rulesFile;
  let log = '';
  child.stdout!.on('data', (d: Buffer) => {
    if (active) return;
    log += d.toString();
    if (log.includes('rules document active')) active = true;
  });
  const deadline = Date.now() + 120_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok && active) return { child, port, httpPort };
    if (Date.now() > deadline) throw new Error('broker did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
}

function connectClient(port: number, clientId: string, onPacket: (p: mqttPacket.Packet) => void): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let connected = false;
    parser.on('packet', (p: mqttPacket.Packet) => {
      if (!connected && p.cmd === 'connack') {
        connected = true;
        resolve(socket);
      } else onPacket(p);
    });
    socket.on('data', (d) => parser.parse(d));
    socket.on('error', reject);
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 0 }));
  });
}

/** CPU seconds a process has used (user + system), from /proc; NaN where unavailable. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Messages per second delivered, and the broker's CPU time per message (µs). */
async function measure(port: number, pid: number | undefined): Promise<{ rate: number; cpuPerMessage: number }> {
  let received = 0;
  let sent = 0;
  const sub = await connectClient(port, 'bench-sub', (p) => {
    if (p.cmd === 'publish') received++;
  });
  sub.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'site/+/sensor', qos: 0 }] }));
  await new Promise((r) => setTimeout(r, 300));
  const frames = Array.from({ length: 256 }, (_, k) =>
    mqttPacket.generate({ cmd: 'publish', topic: filterTopic((k * 37) % FILTERS), payload: payload(k), qos: 0, retain: false, dup: false }),
  );
  const pubs = await Promise.all(Array.from({ length: PUBLISHERS }, (_, i) => connectClient(port, `bench-pub-${i}`, () => undefined)));
  let running = true;
  let k = 0;
  const pump = (socket: net.Socket): void => {
    while (running && sent - received < WINDOW) {
      sent++;
      if (!socket.write(frames[k++ & 255]!)) {
        socket.once('drain', () => pump(socket));
        return;
      }
    }
    if (running) setImmediate(() => pump(socket));
  };
  for (const p of pubs) pump(p);
  await new Promise((r) => setTimeout(r, 1000)); // warm-up
  const r0 = received;
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const rate = ((received - r0) * 1000) / (performance.now() - t0);
  const cpuPerMessage = ((cpuSeconds(pid) - c0) / (received - r0)) * 1e6;
  running = false;
  for (const s of [...pubs, sub]) s.destroy();
  return { rate, cpuPerMessage };
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'edb-rules-bench-'));
  const rulesFile = join(dir, 'filters.json');
  writeFileSync(rulesFile, JSON.stringify(STATEFUL ? statefulDocument(FILTERS) : filtersDocument(FILTERS)));
  const none: number[] = [];
  const active: number[] = [];
  const cpuNone: number[] = [];
  const cpuActive: number[] = [];
  try {
    for (let r = 0; r < RUNS; r++) {
      for (const withRules of [false, true]) {
        const data = mkdtempSync(join(dir, 'data-'));
        const { child, port, httpPort } = await startBroker(data, withRules ? rulesFile : undefined);
        const { rate, cpuPerMessage } = await measure(port, child.pid);
        // the rules did run: their evaluations, from the broker's own metrics
        const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
        const evaluations = Number(/^edb_rules_evaluations_total (\S+)/m.exec(metrics)?.[1] ?? 0);
        if (withRules && evaluations === 0) throw new Error('the rules document never ran');
        child.kill('SIGTERM');
        await new Promise((res) => child.once('exit', res));
        (withRules ? active : none).push(rate);
        (withRules ? cpuActive : cpuNone).push(cpuPerMessage);
        console.log(`run ${r + 1}: ${withRules ? `${FILTERS} filters` : 'no filters'}: ${Math.round(rate)} msg/s, broker CPU ${cpuPerMessage.toFixed(2)} µs/msg, ${evaluations} rule evaluations`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const a = median(active);
  const n = median(none);
  console.log(`\nmedian: no filters ${Math.round(n)} msg/s, ${FILTERS} filters ${Math.round(a)} msg/s: ${((100 * a) / n).toFixed(0)}% of none`);
  // when the load generator (this process) is what limits the rate, the broker's CPU per
  // message still shows what the rules cost: messages per broker CPU-second, with vs without
  const ca = median(cpuActive);
  const cn = median(cpuNone);
  console.log(`broker CPU per message: no filters ${cn.toFixed(2)} µs, ${FILTERS} filters ${ca.toFixed(2)} µs: messages per CPU-second ${((100 * cn) / ca).toFixed(0)}% of none`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
