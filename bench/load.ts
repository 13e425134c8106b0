/**
 * End-to-end load run: starts Edge Data Broker, aedes and mosquitto (when installed), each in
 * its own process on 127.0.0.1, in one run, drives them with the same load generator
 * (bench/worker.ts, in a separate process) and prints throughput, latency, loss and memory per
 * idle connection, with ratios to each peer.
 *
 *   npm run build && npm run bench                # full run (about 6 minutes), rewrites bench/RESULTS.md
 *   node dist/bench/load.js --quick               # short smoke run
 *   node dist/bench/load.js --runs 5 --brokers edb,aedes --profile
 *
 * Scenarios (64-byte payloads, MQTT 3.1.1, clean sessions):
 *   fan-in QoS 0 / QoS 1: 4 publishers -> 1 subscriber on a wildcard filter
 *   fan-in QoS 0 open:    the same, publishers held back only by TCP back-pressure (loss under overload)
 *   fan-out QoS 0:        1 publisher -> 50 subscribers
 *   idle memory:          N idle connections (keep alive 0); broker RSS after minus before
 * The generator is a closed loop: each publisher writes batches as long as the socket takes
 * them, QoS 1 PUBLISHes awaiting PUBACK stay under 64, and messages not yet seen by every
 * subscriber stay under --outstanding (default 100 per publisher). That keeps the broker busy
 * without filling kernel buffers, so latency is the broker's, not the depth of a queue; the
 * open-loop scenario drops that limit. Each trial has a warm-up that is not measured, then a
 * measured window; each scenario runs --runs times per broker, in rotating broker order, and
 * the median is reported. Throughput is messages received by subscribers per second in the
 * window; latency is arrival time minus the send time carried in the payload; loss is
 * 1 - received / expected over the whole trial after the subscribers drain.
 */
import { spawn, fork, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync, createWriteStream, mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Histogram } from './histogram.js';
import { nowMicros } from './clock.js';
import type { WorkerCommand, WorkerMessage, WorkerReport } from './worker.js';
import { freePort } from './net.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

// ------------------------------------------------------------------ options

export interface Options {
  quick: boolean;
  runs: number;
  warmupMs: number;
  measureMs: number;
  idleConnections: number;
  brokers: string[];
  scenarios: string[];
  profile: boolean;
  write: boolean;
  payloadSize: number;
  outstanding: number;
}

export function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const o: Options = {
    quick,
    runs: quick ? 1 : 3,
    warmupMs: quick ? 1000 : 1500,
    measureMs: quick ? 2000 : 4000,
    idleConnections: quick ? 2000 : 10_000,
    brokers: ['edb', 'aedes', 'mosquitto'],
    scenarios: ['fan-in-qos0', 'fan-in-qos0-open', 'fan-in-qos1', 'fan-out-qos0', 'idle-memory'],
    profile: false,
    write: !quick,
    payloadSize: 64,
    outstanding: 100,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--quick':
        break;
      case '--runs':
        o.runs = Number(val());
        break;
      case '--warmup':
        o.warmupMs = Number(val()) * 1000;
        break;
      case '--duration':
        o.measureMs = Number(val()) * 1000;
        break;
      case '--connections':
        o.idleConnections = Number(val());
        break;
      case '--brokers':
        o.brokers = val().split(',');
        break;
      case '--scenarios':
        o.scenarios = val().split(',');
        break;
      case '--outstanding':
        o.outstanding = Number(val());
        break;
      case '--profile':
        o.profile = true;
        break;
      case '--write':
        o.write = true;
        break;
      case '--no-write':
        o.write = false;
        break;
      case '-h':
      case '--help':
        process.stdout.write(
          'usage: node dist/bench/load.js [--quick] [--runs N] [--warmup S] [--duration S] [--connections N]\n' +
            '         [--brokers edb,aedes,mosquitto] [--scenarios fan-in-qos0,fan-in-qos0-open,fan-in-qos1,fan-out-qos0,idle-memory]\n' +
            '         [--outstanding N] [--profile] [--write|--no-write]\n',
        );
        process.exit(0);
      default:
        throw new Error(`unknown option ${a}`);
    }
  }
  return o;
}

// ------------------------------------------------------------------ brokers

export interface RunningPeer {
  name: string;
  label: string;
  port: number;
  proc: ChildProcess;
  logFile: string;
}

const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

async function waitForPort(port: number, proc: ChildProcess, name: string, logFile: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${name} exited early (${proc.exitCode ?? proc.signalCode}); log:\n${readFileSync(logFile, 'utf8')}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`${name} did not listen on ${port} within ${timeoutMs} ms`);
}

function which(cmd: string): string | undefined {
  for (const dir of [...(process.env['PATH'] ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin']) {
    const p = path.join(dir, cmd);
    if (dir && existsSync(p)) return p;
  }
  return undefined;
}

function version(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0]!.trim();
  } catch (err) {
    // mosquitto -h exits non-zero but prints its version
    const out = String((err as { stdout?: string }).stdout ?? '');
    return out.split('\n')[0]!.trim();
  }
}

export async function startPeer(name: string, dir: string, opts: Options): Promise<RunningPeer | undefined> {
  const port = await freePort();
  const logFile = path.join(dir, `${name}.log`);
  const log = createWriteStream(logFile);
  let proc: ChildProcess;
  let label: string;
  if (name === 'edb' || name === 'edb-durable' || name === 'edb-memory' || name === 'edb-durable-base') {
    // edb-durable-base: another build (EDB_BENCH_BASE_DIST, a copy of dist/ from the commit
    // compared against), durable storage: before/after in one run
    const base = name === 'edb-durable-base';
    const baseDist = process.env['EDB_BENCH_BASE_DIST'];
    if (base && !baseDist) throw new Error('edb-durable-base needs EDB_BENCH_BASE_DIST (a dist/ folder of the build to compare with)');
    const main = base ? path.resolve(baseDist!, 'src/cli/main.js') : path.join(ROOT, 'dist/src/cli/main.js');
    if (!existsSync(main)) throw new Error(`${main} is missing: run npm run build first`);
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    label = base ? `edge-data-broker, base build ${baseDist} (EDB_STORAGE=durable)` : `edge-data-broker ${pkg.version}${name === 'edb' ? '' : name.slice(3).replace('-', ' (EDB_STORAGE=') + ')'}`;
    // EDB_BENCH_NODE_ARGS: more node flags for our broker (such as --trace-gc; its output goes to the broker's log file)
    const extra = process.env['EDB_BENCH_NODE_ARGS']?.split(' ').filter(Boolean) ?? [];
    const nodeArgs = [...(opts.profile ? ['--cpu-prof', '--cpu-prof-dir', path.join(ROOT, 'bench/profiles')] : []), ...extra];
    proc = spawn(process.execPath, [...nodeArgs, main, 'start'], {
      cwd: dir,
      env: {
        ...process.env,
        EDB_HOST: '127.0.0.1',
        EDB_MQTT_PORT: String(port),
        EDB_HTTP_PORT: '-1',
        EDB_WS_PORT: '-1',
        EDB_RULES_PORT: '-1',
        EDB_LOG_LEVEL: 'warn',
        EDB_LOG_FORMAT: 'json',
        EDB_DATA_DIR: path.join(dir, `${name}-data`),
        ...(name === 'edb-durable' || base ? { EDB_STORAGE: 'durable' } : name === 'edb-memory' ? { EDB_STORAGE: 'memory', EDB_BACKUP: 'false' } : {}),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } else if (name === 'aedes') {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'node_modules/aedes/package.json'), 'utf8')) as { version: string };
    label = `aedes ${pkg.version}`;
    proc = spawn(process.execPath, [path.join(ROOT, 'bench/peers/aedes-server.mjs'), String(port)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  } else if (name === 'mosquitto' || name === 'mosquitto-persist') {
    const bin = which('mosquitto');
    if (!bin) {
      process.stdout.write('mosquitto is not installed: running without it (apt-get install mosquitto)\n');
      return undefined;
    }
    label = version(bin, ['-h']).replace(/^mosquitto version/, 'mosquitto') || 'mosquitto';
    const conf = path.join(dir, 'mosquitto.conf');
    // mosquitto 2 listens on loopback only and refuses anonymous clients unless told otherwise
    const persist = name === 'mosquitto-persist';
    if (persist) {
      label += ' (persistence true)';
      mkdirSync(path.join(dir, 'mosquitto-data'), { recursive: true });
    }
    const persistence = persist ? `persistence true\npersistence_location ${path.join(dir, 'mosquitto-data')}/\n` : 'persistence false\n';
    writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\n${persistence}log_dest stderr\nlog_type error\nlog_type warning\n`);
    proc = spawn(bin, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  } else {
    throw new Error(`unknown broker ${name}`);
  }
  track(proc);
  proc.stdout?.pipe(log);
  proc.stderr?.pipe(log);
  await waitForPort(port, proc, name, logFile);
  return { name, label, port, proc, logFile };
}

export async function stopPeer(peer: RunningPeer): Promise<void> {
  if (peer.proc.exitCode !== null) return;
  const exited = new Promise<void>((resolve) => peer.proc.once('exit', () => resolve()));
  peer.proc.kill('SIGTERM');
  const timer = setTimeout(() => peer.proc.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

// ------------------------------------------------------------------ /proc readings

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

const CLOCK_TICKS = 100; // sysconf(_SC_CLK_TCK) on Linux

/** CPU seconds (user + system) a process has used so far. */
function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** Busy and total CPU seconds of the whole machine (all cores), from /proc/stat. */
function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: (total - idle) / CLOCK_TICKS, total: total / CLOCK_TICKS };
}

// ------------------------------------------------------------------ workers

class Worker {
  readonly proc: ChildProcess;
  private waiting: { ok: string; resolve: (m: WorkerMessage) => void; reject: (e: Error) => void } | undefined;

  constructor(readonly name: string) {
    this.proc = track(fork(WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    this.proc.on('message', (m: WorkerMessage) => {
      if (m.ok === 'error') {
        const w = this.waiting;
        this.waiting = undefined;
        if (w) w.reject(new Error(`worker ${this.name}: ${m.error}`));
        else process.stderr.write(`worker ${this.name}: ${m.error}\n`);
        return;
      }
      if (this.waiting && this.waiting.ok === m.ok) {
        const w = this.waiting;
        this.waiting = undefined;
        w.resolve(m);
      }
    });
    this.proc.on('exit', (code) => {
      const w = this.waiting;
      this.waiting = undefined;
      if (w) w.reject(new Error(`worker ${this.name} exited with ${code}`));
    });
  }

  tell(cmd: WorkerCommand): void {
    this.proc.send(cmd);
  }

  ask<T extends WorkerMessage['ok']>(cmd: WorkerCommand, ok: T, timeoutMs = 60_000): Promise<Extract<WorkerMessage, { ok: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`worker ${this.name}: no ${ok} within ${timeoutMs} ms`)), timeoutMs);
      this.waiting = {
        ok,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as Extract<WorkerMessage, { ok: T }>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.proc.send(cmd);
    });
  }

  async close(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    this.tell({ cmd: 'close' });
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

function split<T>(items: T[], parts: number): T[][] {
  const out: T[][] = Array.from({ length: parts }, () => []);
  items.forEach((x, i) => out[i % parts]!.push(x));
  return out.filter((p) => p.length > 0);
}

// ------------------------------------------------------------------ scenarios

export interface FlowScenario {
  name: string;
  title: string;
  publishers: number;
  subscribers: number;
  qos: 0 | 1;
  /** Every subscriber receives every message (fan-out) or all subscribers share one wildcard (fan-in: 1 subscriber). */
  topic: (publisher: number) => string;
  filter: string;
  /** Open loop: publishers are held back only by TCP back-pressure (to measure loss under overload). */
  openLoop?: boolean;
  /** Subscribers have persistent sessions (clean session off); topics get a per-trial prefix so no later trial feeds them. */
  persistent?: boolean;
  /** QoS 1 messages each publisher keeps in flight (default 64). */
  inflight?: number;
}

const FLOWS: FlowScenario[] = [
  { name: 'fan-in-qos0', title: 'fan-in QoS 0 (4 pub -> 1 sub on bench/in/#)', publishers: 4, subscribers: 1, qos: 0, topic: (p) => `bench/in/${p}`, filter: 'bench/in/#' },
  { name: 'fan-in-qos0-open', title: 'fan-in QoS 0, open loop (publishers limited only by TCP back-pressure)', publishers: 4, subscribers: 1, qos: 0, topic: (p) => `bench/in/${p}`, filter: 'bench/in/#', openLoop: true },
  { name: 'fan-in-qos1', title: 'fan-in QoS 1 (4 pub -> 1 sub on bench/in/#)', publishers: 4, subscribers: 1, qos: 1, topic: (p) => `bench/in/${p}`, filter: 'bench/in/#' },
  { name: 'fan-out-qos0', title: 'fan-out QoS 0 (1 pub -> 50 subs)', publishers: 1, subscribers: 50, qos: 0, topic: () => 'bench/out/t', filter: 'bench/out/t' },
];

export interface FlowResult {
  broker: string;
  scenario: string;
  run: number;
  published: number; // msgs/s written by publishers in the window
  delivered: number; // msgs/s received by subscribers in the window
  p50: number; // µs
  p99: number; // µs
  loss: number; // fraction
  sent: number;
  received: number;
  expected: number;
  brokerCpu: number; // cores used by the broker in the window
  perCpuSecond: number; // deliveries per CPU-second of the broker (robust to a busy shared machine)
  generatorCpu: number; // cores used by the generator in the window
  otherCpu: number; // cores used by everything else on the (shared) machine in the window
  writeOffs: number; // stalls of the closed loop (the broker dropped messages)
  errors: string[];
}

let trialSeq = 0;

export async function runFlow(peer: RunningPeer, sc: FlowScenario, run: number, opts: Options): Promise<FlowResult> {
  const trial = ++trialSeq;
  // one generator process: publishers and subscribers share it so the closed loop costs nothing
  const worker = new Worker(`gen${trial}`);
  try {
    const ready = await worker.ask(
      {
        cmd: 'setup',
        role: 'flow',
        port: peer.port,
        pubIds: Array.from({ length: sc.publishers }, (_, i) => `bench-${trial}-p${i}`),
        topics: Array.from({ length: sc.publishers }, (_, i) => (sc.persistent ? `t${trial}/` : '') + sc.topic(i)),
        subIds: Array.from({ length: sc.subscribers }, (_, i) => `bench-${trial}-s${i}`),
        filter: (sc.persistent ? `t${trial}/` : '') + sc.filter,
        qos: sc.qos,
        persistentSubscribers: sc.persistent === true,
        payloadSize: opts.payloadSize,
        inflight: sc.inflight ?? 64,
        outstanding: sc.openLoop ? 1e12 : opts.outstanding,
        batch: 32,
      },
      'ready',
    );
    const start = nowMicros() + 200_000;
    const windowStart = start + opts.warmupMs * 1000;
    const end = windowStart + opts.measureMs * 1000;
    worker.tell({ cmd: 'start', start, windowStart, end });

    await sleep((windowStart - nowMicros()) / 1000);
    const brokerCpuStart = cpuSecondsOf(peer.proc.pid!);
    const machineStart = machineCpu();
    await sleep((end - nowMicros()) / 1000);
    const brokerCpu = (cpuSecondsOf(peer.proc.pid!) - brokerCpuStart) / (opts.measureMs / 1000);
    const machineEnd = machineCpu();
    const machineBusy = (machineEnd.busy - machineStart.busy) / (opts.measureMs / 1000);

    // drain: wait until the subscribers have received nothing for 0.5 s (at most 15 s: an
    // open-loop trial can leave seconds of messages in buffers); what never comes is lost
    let last = -1;
    let still = 0;
    const drainDeadline = Date.now() + 15_000;
    while (still < 2 && Date.now() < drainDeadline) {
      await sleep(250);
      const { total } = await worker.ask({ cmd: 'progress' }, 'progress');
      still = total === last ? still + 1 : 0;
      last = total;
    }

    const { report: r } = await worker.ask({ cmd: 'report' }, 'report');
    const hist = new Histogram();
    hist.merge(r.histogram ?? []);
    const expected = r.sent * sc.subscribers; // fan-in: the one subscriber sees all; fan-out: each does
    const secs = opts.measureMs / 1000;
    return {
      broker: peer.name,
      scenario: sc.name,
      run,
      published: r.sentInWindow / secs,
      delivered: r.receivedInWindow / secs,
      p50: hist.quantile(0.5),
      p99: hist.quantile(0.99),
      loss: expected > 0 ? Math.max(0, expected - r.received) / expected : 0,
      sent: r.sent,
      received: r.received,
      expected,
      brokerCpu,
      perCpuSecond: brokerCpu > 0 ? r.receivedInWindow / secs / brokerCpu : NaN,
      generatorCpu: r.cpuSeconds / secs,
      otherCpu: Math.max(0, machineBusy - brokerCpu - r.cpuSeconds / secs),
      writeOffs: r.writeOffs,
      errors: [...ready.errors, ...r.errors],
    };
  } finally {
    await worker.close();
  }
}

interface MemoryResult {
  broker: string;
  connections: number;
  rssBefore: number;
  rssAfter: number;
  perConnection: number;
  errors: string[];
}

/**
 * The lowest RSS over `samples` readings 500 ms apart: a garbage-collected broker's RSS includes
 * garbage until its next collection (V8 collects when idle), so the minimum is the live size.
 */
async function settledRss(pid: number, samples: number): Promise<number> {
  let min = Infinity;
  for (let i = 0; i < samples; i++) {
    await sleep(500);
    min = Math.min(min, rssBytes(pid));
  }
  return min;
}

async function runIdleMemory(peer: RunningPeer, opts: Options): Promise<MemoryResult> {
  const pid = peer.proc.pid!;
  const rssBefore = await settledRss(pid, 4);
  const trial = ++trialSeq;
  const ids = Array.from({ length: opts.idleConnections }, (_, i) => `idle-${trial}-${i}`);
  const workers = split(ids, 2).map((part, w) => ({ part, worker: new Worker(`idle${w}`) }));
  try {
    const ready = await Promise.all(workers.map(({ part, worker }) => worker.ask({ cmd: 'setup', role: 'idle', port: peer.port, ids: part, concurrency: 200 }, 'ready', 120_000)));
    await sleep(1000);
    const rssAfter = await settledRss(pid, 10);
    const reports = await Promise.all(workers.map(({ worker }) => worker.ask({ cmd: 'report' }, 'report')));
    const connections = reports.reduce((a, m) => a + m.report.connections, 0);
    return {
      broker: peer.name,
      connections,
      rssBefore,
      rssAfter,
      perConnection: connections > 0 ? (rssAfter - rssBefore) / connections : NaN,
      errors: ready.flatMap((r) => r.errors),
    };
  } finally {
    await Promise.all(workers.map(({ worker }) => worker.close()));
    await sleep(1000); // let the broker notice the closed sockets before the next scenario
  }
}

// ------------------------------------------------------------------ report

export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

const fmtRate = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '-');
const fmtMs = (us: number): string => (Number.isFinite(us) ? (us / 1000).toFixed(us < 10_000 ? 2 : 1) : '-');
const fmtPct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(x < 0.001 && x > 0 ? 3 : 2)}%` : '-');
const fmtRatio = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(2)}x` : '-');
const fmtKiB = (b: number): string => (Number.isFinite(b) ? `${(b / 1024).toFixed(1)} KiB` : '-');

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `| ${head.map((h, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

interface Summary {
  markdown: string;
  verdicts: string[];
}

function summarize(flows: FlowResult[], memory: MemoryResult[], peers: RunningPeer[], opts: Options): Summary {
  const names = peers.map((p) => p.name);
  const others = names.filter((n) => n !== 'edb');
  const verdicts: string[] = [];
  const parts: string[] = [];

  const med = new Map<string, { delivered: number; published: number; p50: number; p99: number; lossMed: number; lossMax: number; brokerCpu: number; perCpuSecond: number; generatorCpu: number; otherCpu: number; runs: number }>();
  for (const sc of FLOWS) {
    for (const b of names) {
      const rs = flows.filter((r) => r.scenario === sc.name && r.broker === b);
      if (rs.length === 0) continue;
      med.set(`${sc.name}/${b}`, {
        delivered: median(rs.map((r) => r.delivered)),
        published: median(rs.map((r) => r.published)),
        p50: median(rs.map((r) => r.p50)),
        p99: median(rs.map((r) => r.p99)),
        lossMed: median(rs.map((r) => r.loss)),
        lossMax: Math.max(...rs.map((r) => r.loss)),
        brokerCpu: median(rs.map((r) => r.brokerCpu)),
        perCpuSecond: median(rs.map((r) => r.perCpuSecond)),
        generatorCpu: median(rs.map((r) => r.generatorCpu)),
        otherCpu: median(rs.map((r) => r.otherCpu)),
        runs: rs.length,
      });
    }
  }

  const flowRows: string[][] = [];
  for (const sc of FLOWS) {
    for (const b of names) {
      const m = med.get(`${sc.name}/${b}`);
      if (!m) continue;
      flowRows.push([sc.name, b, fmtRate(m.delivered), fmtRate(m.published), fmtMs(m.p50), fmtMs(m.p99), `${fmtPct(m.lossMed)} (max ${fmtPct(m.lossMax)})`, fmtRate(m.perCpuSecond), m.brokerCpu.toFixed(2), m.generatorCpu.toFixed(2), m.otherCpu.toFixed(2)]);
    }
  }
  if (flowRows.length > 0) {
    parts.push(
      `Medians of ${opts.runs} run(s); ${opts.warmupMs / 1000} s warm-up + ${opts.measureMs / 1000} s measured per trial; ${opts.payloadSize}-byte payloads.\n` +
        'delivered = messages received by subscribers per second; published = messages written by publishers per second;\n' +
        'latency = publish-to-delivery, ms; loss = 1 - received/expected over the trial;\n' +
        'CPU = cores used in the window by the broker, by the load generator, and by other processes on this shared machine;\n' +
        'msgs per broker CPU-s = delivered / broker CPU: the cost of a message, less sensitive to how much CPU others left us.\n',
    );
    parts.push(table(['scenario', 'broker', 'delivered msgs/s', 'published msgs/s', 'p50 ms', 'p99 ms', 'loss', 'msgs per broker CPU-s', 'broker CPU', 'generator CPU', 'other CPU'], flowRows));
  }

  const ratioRows: string[][] = [];
  for (const sc of FLOWS) {
    const ours = med.get(`${sc.name}/edb`);
    if (!ours) continue;
    for (const o of others) {
      const peer = med.get(`${sc.name}/${o}`);
      if (!peer) continue;
      ratioRows.push([sc.name, `edb / ${o}`, fmtRatio(ours.delivered / peer.delivered), fmtRatio(ours.perCpuSecond / peer.perCpuSecond), fmtRatio(peer.p50 / ours.p50), fmtRatio(peer.p99 / ours.p99)]);
    }
  }
  if (ratioRows.length > 0) {
    parts.push('\nRatios (above 1 means Edge Data Broker is better: more msgs/s, lower latency):\n');
    parts.push(table(['scenario', 'ratio', 'throughput', 'msgs per CPU-s', 'p50 latency', 'p99 latency'], ratioRows));
  }

  if (memory.length > 0) {
    const ours = memory.find((m) => m.broker === 'edb');
    const rows = memory.map((m) => [
      m.broker,
      m.connections.toLocaleString('en-US'),
      `${(m.rssBefore / 1048576).toFixed(1)} MiB`,
      `${(m.rssAfter / 1048576).toFixed(1)} MiB`,
      fmtKiB(m.perConnection),
      ours && m.broker !== 'edb' ? fmtRatio(m.perConnection / ours.perConnection) : '',
    ]);
    parts.push(`\nMemory per idle connection (${opts.idleConnections.toLocaleString('en-US')} connections, keep alive 0; lowest RSS from /proc/<pid>/status over 2 s before and 5 s after):\n`);
    parts.push(table(['broker', 'connected', 'RSS before', 'RSS after', 'per connection', 'peer / edb'], rows));
  }

  // targets (issue 2, sections 4 and 6)
  for (const sc of FLOWS) {
    const ours = med.get(`${sc.name}/edb`);
    const aedes = med.get(`${sc.name}/aedes`);
    if (ours && aedes && !sc.openLoop) {
      const r = ours.delivered / aedes.delivered;
      const e = ours.perCpuSecond / aedes.perCpuSecond;
      verdicts.push(`${r >= 2 ? 'MET   ' : 'MISSED'} ${sc.name}: throughput ${fmtRatio(r)} aedes (target >= 2x); per CPU-second ${fmtRatio(e)}`);
    }
    const mosq = med.get(`${sc.name}/mosquitto`);
    if (ours && mosq && sc.name.startsWith('fan-out')) {
      const r = ours.delivered / mosq.delivered;
      verdicts.push(`${r >= 1 ? 'MET   ' : 'MISSED'} ${sc.name}: throughput ${fmtRatio(r)} mosquitto (target >= 1x); per CPU-second ${fmtRatio(ours.perCpuSecond / mosq.perCpuSecond)}`);
    }
    if (ours && sc.name.startsWith('fan-in-qos0')) verdicts.push(`${ours.lossMax <= 0.01 ? 'MET   ' : 'MISSED'} ${sc.name}: loss ${fmtPct(ours.lossMax)} worst run (target <= 1%)`);
  }
  const memOurs = memory.find((m) => m.broker === 'edb');
  const memAedes = memory.find((m) => m.broker === 'aedes');
  if (memOurs && memAedes) {
    const r = memAedes.perConnection / memOurs.perConnection;
    verdicts.push(`${r >= 2 ? 'MET   ' : 'MISSED'} idle-memory: aedes uses ${fmtRatio(r)} our bytes per connection (target >= 2x)`);
  }
  if (verdicts.length > 0) parts.push(`\nTargets:\n\n${verdicts.map((v) => `    ${v}`).join('\n')}`);
  const errs = [...flows.flatMap((f) => f.errors.map((e) => `${f.broker} ${f.scenario}: ${e}`)), ...memory.flatMap((m) => m.errors.map((e) => `${m.broker} idle: ${e}`))];
  if (errs.length > 0) parts.push(`\nClient errors (first 10):\n\n${errs.slice(0, 10).map((e) => `    ${e}`).join('\n')}`);
  return { markdown: parts.join('\n'), verdicts };
}

export function machine(): string {
  const cpus = os.cpus();
  return `${cpus.length} x ${cpus[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}, Node ${process.version} (shared machine: numbers are noisy; compare ratios from the same run)`;
}

function writeResults(body: string, command: string, peers: RunningPeer[]): void {
  const file = path.join(ROOT, 'bench/RESULTS.md');
  const block = [
    '<!-- load:start (generated by bench/load.ts; everything between these markers is rewritten) -->',
    `Command: \`${command}\`  `,
    `Date: ${new Date().toISOString()}  `,
    `Machine: ${machine()}  `,
    `Brokers: ${peers.map((p) => p.label).join(', ')}`,
    '',
    body,
    '<!-- load:end -->',
  ].join('\n');
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmark results\n\n## End-to-end load run\n\n<!-- load:start -->\n<!-- load:end -->\n';
  const re = /<!-- load:start[^]*?<!-- load:end -->/;
  text = re.test(text) ? text.replace(re, block) : `${text}\n${block}\n`;
  writeFileSync(file, text);
  process.stdout.write(`\nwrote ${path.relative(process.cwd(), file) || file}\n`);
}

// ------------------------------------------------------------------ main

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, ms)));
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const command = `node dist/bench/load.js ${process.argv.slice(2).join(' ')}`.trim();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'edb-bench-'));
  if (opts.profile) mkdirSync(path.join(ROOT, 'bench/profiles'), { recursive: true });
  const started = Date.now();
  process.stdout.write(`${command}\nmachine: ${machine()}\n`);

  const peers: RunningPeer[] = [];
  let keepDir = false;
  const cleanup = (): void => {
    for (const c of children) c.kill('SIGKILL');
  };
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    for (const name of opts.brokers) {
      const p = await startPeer(name, dir, opts);
      if (p) {
        peers.push(p);
        process.stdout.write(`started ${p.label} (pid ${p.proc.pid}) on 127.0.0.1:${p.port}\n`);
      }
    }

    // a broker that dies is reported with the tail of its log and left out of later trials
    const crashed = new Map<string, string>();
    const noteCrash = (peer: RunningPeer, during: string): void => {
      const tail = readFileSync(peer.logFile, 'utf8').trim().split('\n').slice(-8).join('\n');
      const what = `${peer.name} exited (${peer.proc.exitCode ?? peer.proc.signalCode}) during ${during}; last log lines:\n${tail}`;
      crashed.set(peer.name, what);
      keepDir = true;
      process.stdout.write(`${what}\n`);
    };
    const memory: MemoryResult[] = [];
    // memory first, on fresh brokers, before the flow scenarios grow their heaps
    if (opts.scenarios.includes('idle-memory')) {
      for (const peer of peers) {
        const m = await runIdleMemory(peer, opts);
        memory.push(m);
        process.stdout.write(`idle-memory ${peer.name}: ${m.connections} connections, ${fmtKiB(m.perConnection)} per connection${m.errors.length ? ` (${m.errors.length} errors: ${m.errors[0]})` : ''}\n`);
      }
    }

    const flows: FlowResult[] = [];
    const scenarios = FLOWS.filter((f) => opts.scenarios.includes(f.name));
    for (let run = 1; run <= opts.runs; run++) {
      for (const sc of scenarios) {
        // rotate the broker order each run so no broker always goes first
        const order = peers.map((_, i) => peers[(i + run - 1) % peers.length]!);
        for (const peer of order) {
          if (crashed.has(peer.name)) continue;
          let r: FlowResult;
          try {
            r = await runFlow(peer, sc, run, opts);
          } catch (err) {
            if (peer.proc.exitCode === null && peer.proc.signalCode === null) throw err;
            noteCrash(peer, `${sc.name} run ${run}`);
            continue;
          }
          flows.push(r);
          process.stdout.write(
            `run ${run} ${sc.name.padEnd(16)} ${peer.name.padEnd(9)} delivered ${fmtRate(r.delivered).padStart(9)}/s  published ${fmtRate(r.published).padStart(9)}/s  ` +
              `p50 ${fmtMs(r.p50)} ms  p99 ${fmtMs(r.p99)} ms  loss ${fmtPct(r.loss)}  per cpu-s ${fmtRate(r.perCpuSecond)}  cpu broker ${r.brokerCpu.toFixed(2)} gen ${r.generatorCpu.toFixed(2)} other ${r.otherCpu.toFixed(2)}` +
              `${r.errors.length ? `  errors: ${r.errors[0]}` : ''}\n`,
          );
          if (peer.proc.exitCode !== null || peer.proc.signalCode !== null) noteCrash(peer, `${sc.name} run ${run}`);
        }
      }
    }

    const summary = summarize(flows, memory, peers, opts);
    for (const what of crashed.values()) summary.markdown += `\n\n**Crashed:** ${what.split('\n')[0]}\n\n\`\`\`\n${what.split('\n').slice(1).join('\n')}\n\`\`\``;
    process.stdout.write(`\n${summary.markdown}\n\ntotal time ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    if (opts.write) writeResults(summary.markdown, command, peers);
  } finally {
    await Promise.all(peers.map(stopPeer));
    cleanup();
    if (keepDir) process.stdout.write(`broker logs kept in ${dir}\n`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

// run as a program (bench/storage.ts imports the parts above)
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
});
