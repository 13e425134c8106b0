/**
 * Bridge benchmark (issue 11, section 5): in one run against a local mosquitto as the remote,
 *   1. forwarding throughput at QoS 0 and QoS 1 through our bridge (an `edb start` process with
 *      EDB_BRIDGE_BR0=... TOPIC "bench/# out <qos>") and through mosquitto's own bridge (a second
 *      mosquitto with `connection` ... `topic bench/# out <qos>`), same topics, same load;
 *   2. the drain time of a backlog of 1 million QoS 1 messages after the remote comes back
 *      (the bridge points at a closed port while the backlog is published, then is switched to
 *      the remote through PUT /api/bridges/br0, which keeps the backlog).
 *
 *   node dist/bench/bridge.js [--runs 3] [--seconds 5] [--backlog 1000000] [--skip-backlog] [--qos 0|1]
 *
 * Load: one raw MQTT 3.1.1 publisher (packets built once with mqtt-packet, written in batches)
 * on the local broker and one raw subscriber on the remote that counts PUBLISH packets.
 * Closed loop: the publisher keeps at most 20,000 messages ahead of what the remote subscriber
 * has seen (QoS 1 also at most 1,000 awaiting PUBACK from the local broker). Each trial: 1 s
 * warm-up, then `seconds` measured; the two bridges alternate, medians and the ratio reported.
 * Prints a Markdown block for bench/RESULTS.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqttPacket from 'mqtt-packet';
import { freePort, stopChild, waitPort } from './net.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RUNS = opt('runs', 3);
const SECONDS = opt('seconds', 5);
const BACKLOG = opt('backlog', 1_000_000);
const SKIP_BACKLOG = args.includes('--skip-backlog');
/** --qos 0 or --qos 1: forwarding at that QoS only. */
const ONLY_QOS = args.includes('--qos') ? opt('qos', 0) : undefined;
const PAYLOAD = 64;
const AHEAD = 20_000;
const INFLIGHT = 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function mosquitto(port: number, extra: string[] = []): ChildProcess {
  const dir = mkdtempSync(join(tmpdir(), 'edb-bench-mosq-'));
  const conf = join(dir, 'm.conf');
  const lines = ['per_listener_settings false', 'persistence false', 'log_dest none', 'max_queued_messages 2000000', 'max_inflight_messages 0', 'allow_anonymous true', `listener ${port} 127.0.0.1`];
  if (process.getuid?.() === 0) lines.push('user root');
  writeFileSync(conf, [...lines, ...extra].join('\n') + '\n');
  return spawn('mosquitto', ['-c', conf], { stdio: 'ignore' });
}

function edb(port: number, httpPort: number, remotePort: number, qos: number): ChildProcess {
  // BENCH_PROFILE=<dir>: a V8 CPU profile of our broker, written when it stops
  const profile = process.env['BENCH_PROFILE'] ? ['--cpu-prof', '--cpu-prof-dir', process.env['BENCH_PROFILE']] : [];
  return spawn(process.execPath, [...profile, CLI, 'start'], {
    env: {
      ...process.env,
      EDB_MQTT_PORT: String(port),
      EDB_HTTP_PORT: String(httpPort),
      EDB_MQTTS_PORT: '-1',
      EDB_WS_PORT: '-1',
      EDB_WSS_PORT: '-1',
      EDB_RULES_PORT: '-1',
      EDB_LOG_LEVEL: 'warn',
      EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-bench-data-')),
      EDB_BRIDGE_BR0: `127.0.0.1:${remotePort}`,
      EDB_BRIDGE_BR0_TOPIC_1: `bench/# out ${qos}`,
      EDB_BRIDGE_BR0_PROTOCOL_VERSION: '3.1.1',
      EDB_BRIDGE_BR0_RECONNECT_MIN: '100ms',
      EDB_BRIDGE_BR0_RECONNECT_MAX: '500ms',
      ...(process.env['BENCH_BRIDGE_INFLIGHT'] ? { EDB_BRIDGE_BR0_MAX_INFLIGHT: process.env['BENCH_BRIDGE_INFLIGHT'] } : {}),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/** A raw MQTT 3.1.1 connection that counts PUBLISH and PUBACK packets it receives. */
class Raw {
  publishes = 0;
  pubacks = 0;
  private rest: Buffer = Buffer.alloc(0);
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => this.parse(d));
    socket.on('error', () => undefined);
  }
  static async open(port: number, clientId: string): Promise<Raw> {
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    socket.setMaxListeners(0);
    await new Promise<void>((r, j) => socket.once('connect', () => r()).once('error', j));
    const raw = new Raw(socket);
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 0 }));
    return raw;
  }
  private parse(d: Buffer): void {
    let b = this.rest.length ? Buffer.concat([this.rest, d]) : d;
    let p = 0;
    while (p + 2 <= b.length) {
      let len = 0;
      let mul = 1;
      let q = p + 1;
      let ok = false;
      while (q < b.length && q < p + 5) {
        const c = b[q++]!;
        len += (c & 127) * mul;
        mul *= 128;
        if (c < 128) {
          ok = true;
          break;
        }
      }
      if (!ok || q + len > b.length) break;
      const type = b[p]! >> 4;
      if (type === 3) this.publishes++;
      else if (type === 4) this.pubacks++;
      p = q + len;
    }
    this.rest = p < b.length ? Buffer.from(b.subarray(p)) : Buffer.alloc(0);
    b = Buffer.alloc(0);
  }
  subscribe(filter: string): void {
    this.socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 0 }] }));
  }
}

/** Publishes QoS `qos` on bench/t as fast as the closed loop allows, until stop(). */
function publisher(pub: Raw, qos: 0 | 1, seen: () => number, limit = Infinity): { sent: () => number; stop: () => void; done: Promise<void> } {
  let sent = 0;
  let running = true;
  const packets: Buffer[] = [];
  for (let id = 1; id <= 256; id++) packets.push(mqttPacket.generate({ cmd: 'publish', topic: 'bench/t', payload: Buffer.alloc(PAYLOAD, 120), qos, retain: false, dup: false, ...(qos ? { messageId: id } : {}) }) as Buffer);
  const done = (async () => {
    let id = 0;
    while (running && sent < limit) {
      const room = Math.min(AHEAD - (sent - seen()), qos ? INFLIGHT - (sent - pub.pubacks) : Infinity, 512, limit - sent);
      if (room <= 0) {
        await sleep(1);
        continue;
      }
      const batch: Buffer[] = [];
      for (let i = 0; i < room; i++) {
        // packet ids cycle over 1..65535 with a 256-packet template (patched in place)
        const pkt = packets[id % 256]!;
        if (qos) {
          const mid = (id % 65535) + 1;
          const off = pkt.length - PAYLOAD - 2;
          const copy = Buffer.from(pkt);
          copy.writeUInt16BE(mid, off);
          batch.push(copy);
        } else batch.push(pkt);
        id++;
      }
      sent += room;
      if (!pub.socket.write(Buffer.concat(batch))) await new Promise((r) => pub.socket.once('drain', r));
      else await new Promise((r) => setImmediate(r));
    }
  })();
  return { sent: () => sent, stop: () => (running = false), done };
}

/** A trial's rate (msgs/s) and messages per CPU second of the bridging broker's process. */
async function trial(localPort: number, remotePort: number, qos: 0 | 1, pid: number | undefined): Promise<{ rate: number; perCpu: number }> {
  const sub = await Raw.open(remotePort, `bench-sub-${Math.random()}`);
  sub.subscribe('bench/#');
  await sleep(300);
  const pub = await Raw.open(localPort, `bench-pub-${Math.random()}`);
  await sleep(200);
  const base = sub.publishes;
  const load = publisher(pub, qos, () => sub.publishes - base);
  await sleep(1000);
  const start = sub.publishes;
  const t0 = performance.now();
  const c0 = cpuSeconds(pid);
  await sleep(SECONDS * 1000);
  const n = sub.publishes - start;
  const rate = n / ((performance.now() - t0) / 1000);
  const perCpu = n / Math.max(0.01, cpuSeconds(pid) - c0);
  load.stop();
  await load.done;
  // let the link drain before the next trial
  const deadline = Date.now() + 20_000;
  while (sub.publishes - base < load.sent() && Date.now() < deadline) await sleep(50);
  pub.socket.destroy();
  sub.socket.destroy();
  await sleep(300);
  return { rate, perCpu };
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux; 0 elsewhere). */
function cpuSeconds(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function main(): Promise<void> {
  const load0 = loadavg();
  const remotePort = await freePort();
  const remote = mosquitto(remotePort);
  await waitPort(remotePort);
  const results: Record<string, { edb: number[]; mosquitto: number[] }> = {};
  const perCpu: Record<string, { edb: number[]; mosquitto: number[] }> = {};
  for (const qos of ([0, 1] as const).filter((q) => ONLY_QOS === undefined || q === ONLY_QOS)) {
    results[`QoS ${qos}`] = { edb: [], mosquitto: [] };
    perCpu[`QoS ${qos}`] = { edb: [], mosquitto: [] };
    for (let run = 0; run < RUNS; run++) {
      for (const who of run % 2 === 0 ? (['edb', 'mosquitto'] as const) : (['mosquitto', 'edb'] as const)) {
        const port = await freePort();
        const child =
          who === 'edb'
            ? edb(port, -1, remotePort, qos)
            : mosquitto(port, ['connection br0', `address 127.0.0.1:${remotePort}`, `topic bench/# out ${qos}`, 'cleansession true', `remote_clientid bench-bridge-${run}`, 'try_private false', 'bridge_protocol_version mqttv311', 'restart_timeout 1']);
        await waitPort(port);
        await sleep(1500); // the bridge connects
        const t = await trial(port, remotePort, qos, child.pid);
        results[`QoS ${qos}`]![who].push(t.rate);
        perCpu[`QoS ${qos}`]![who].push(t.perCpu);
        process.stderr.write(`QoS ${qos} run ${run + 1} ${who}: ${fmt(t.rate)} msgs/s, ${fmt(t.perCpu)} msgs per CPU second\n`);
        await stopChild(child);
      }
    }
  }

  let drain: { publishMs: number; drainMs: number; n: number; cpu: number; remoteCpu: number; benchCpu: number } | undefined;
  if (!SKIP_BACKLOG) {
    const port = await freePort();
    const httpPort = await freePort();
    const closed = await freePort(); // nothing listens here: the backlog builds up
    const child = edb(port, httpPort, closed, 1);
    await waitPort(port);
    await waitPort(httpPort);
    const pub = await Raw.open(port, 'backlog-pub');
    await sleep(200);
    const t0 = performance.now();
    const load = publisher(pub, 1, () => pub.pubacks, BACKLOG);
    await load.done;
    while (pub.pubacks < BACKLOG) await sleep(20);
    const publishMs = performance.now() - t0;
    process.stderr.write(`backlog of ${fmt(BACKLOG)} QoS 1 stored in ${fmt(publishMs)} ms\n`);
    const sub = await Raw.open(remotePort, 'backlog-sub');
    sub.subscribe('bench/#');
    await sleep(500);
    const t1 = performance.now();
    const c1 = cpuSeconds(child.pid);
    const r1 = cpuSeconds(remote.pid);
    const b1 = process.cpuUsage();
    const res = await fetch(`http://127.0.0.1:${httpPort}/api/bridges/br0`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ url: `mqtt://127.0.0.1:${remotePort}`, topics: ['bench/# out 1'], protocolVersion: '3.1.1', reconnectMin: '100ms', reconnectMax: '500ms', ...(process.env['BENCH_BRIDGE_INFLIGHT'] ? { maxInflight: Number(process.env['BENCH_BRIDGE_INFLIGHT']) } : {}) }),
    });
    if (!res.ok) throw new Error(`PUT /api/bridges/br0: ${res.status} ${await res.text()}`);
    const deadline = Date.now() + 300_000;
    while (sub.publishes < BACKLOG && Date.now() < deadline) await sleep(20);
    const drainMs = performance.now() - t1;
    const b2 = process.cpuUsage(b1);
    drain = { publishMs, drainMs, n: sub.publishes, cpu: cpuSeconds(child.pid) - c1, remoteCpu: cpuSeconds(remote.pid) - r1, benchCpu: (b2.user + b2.system) / 1e6 };
    process.stderr.write(`backlog drained: ${fmt(sub.publishes)} in ${fmt(drainMs)} ms, CPU s: our broker ${drain.cpu.toFixed(1)}, the remote mosquitto ${drain.remoteCpu.toFixed(1)}, this load process ${drain.benchCpu.toFixed(1)}\n`);
    pub.socket.destroy();
    sub.socket.destroy();
    await stopChild(child);
  }
  await stopChild(remote);
  const load1 = loadavg();

  const out: string[] = [];
  out.push(`Command: \`node dist/bench/bridge.js${args.length ? ' ' + args.join(' ') : ''}\`  `);
  out.push(`Date: ${new Date().toISOString()}  `);
  out.push(`Load average (1 min) at start ${load0[0]!.toFixed(1)}, at end ${load1[0]!.toFixed(1)} on 2 cores (shared machine: compare the ratios)  `);
  out.push(`Median of ${RUNS} trials of ${SECONDS} s, 64-byte payloads, one publisher on the local broker, one subscriber on the remote mosquitto, MQTT 3.1.1 on the bridge link.`);
  out.push('');
  out.push('| forwarding | edb bridge (msgs/s) | mosquitto bridge (msgs/s) | edb / mosquitto | edb msgs per CPU s | mosquitto msgs per CPU s | ratio per CPU s |');
  out.push('|---|---:|---:|---:|---:|---:|---:|');
  for (const [k, v] of Object.entries(results)) {
    const c = perCpu[k]!;
    out.push(`| ${k} | ${fmt(median(v.edb))} | ${fmt(median(v.mosquitto))} | ${(median(v.edb) / median(v.mosquitto)).toFixed(2)} | ${fmt(median(c.edb))} | ${fmt(median(c.mosquitto))} | ${(median(c.edb) / median(c.mosquitto)).toFixed(2)} |`);
  }
  out.push('');
  out.push('(Per CPU second: messages forwarded in the measured window / CPU seconds, user + system, the bridging broker process used in it: our `edb start`, or the mosquitto that runs the bridge.)');
  for (const [k, v] of Object.entries(results)) out.push(`Single trials ${k}: edb ${v.edb.map(fmt).join(' / ')}, mosquitto ${v.mosquitto.map(fmt).join(' / ')} msgs/s.  `);
  if (drain) {
    out.push('');
    out.push(`Backlog: ${fmt(BACKLOG)} QoS 1 messages published and acknowledged (stored in the durable log) in ${(drain.publishMs / 1000).toFixed(1)} s while the remote was away; drained to the remote in **${(drain.drainMs / 1000).toFixed(1)} s** (${fmt(drain.n / (drain.drainMs / 1000))} msgs/s; ${fmt(drain.n)} arrived), using ${drain.cpu.toFixed(1)} CPU s of our broker (${fmt(drain.n / Math.max(0.01, drain.cpu))} msgs per CPU second: an idle core would drain ${fmt(BACKLOG)} in about ${(BACKLOG / (drain.n / Math.max(0.01, drain.cpu))).toFixed(1)} s); in the same time the remote mosquitto used ${drain.remoteCpu.toFixed(1)} CPU s and the load process (its subscriber) ${drain.benchCpu.toFixed(1)}.`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

await main();
