/**
 * Durable storage benchmark (issue 10, section 6), in one run:
 *
 *   npm run build && node dist/bench/storage.js [--runs 3] [--warmup-ms 1000] [--measure-ms 3000] [--messages 1000000] [--skip-flows] [--skip-restart]
 *       [--only fan-in|fan-out] [--brokers edb-durable,edb-memory,mosquitto-persist,edb-durable-base] [--profile]
 *   (edb-durable-base: the build in EDB_BENCH_BASE_DIST, a copy of dist/ from another commit, for
 *   before/after figures from one run; --profile: a CPU profile of each edb broker in bench/profiles/)
 *
 * 1. QoS 1 to persistent sessions (MQTT 3.1.1, clean session off, 64-byte payloads), with the
 *    closed-loop generator of bench/load.ts:
 *      fan-in:  4 publishers -> 1 persistent subscriber on a wildcard
 *      fan-out: 1 publisher -> 50 persistent subscribers
 *    against edb with EDB_STORAGE=durable, edb with EDB_STORAGE=memory, and mosquitto with
 *    `persistence true` (its default autosave: it writes its database every 30 minutes and on
 *    exit, not per message), each broker in its own process, runs rotating the broker order;
 *    medians and ratios from this run only.
 * 2. Restart with --messages stored messages: a data folder is written with the storage API
 *    (one offline persistent session subscribed to them all), then `edb start` is timed from
 *    spawn to its MQTT listener (killed with SIGKILL each time), and its replay log line read,
 *    median of 3; then 3 more starts with the log's checkpoint deleted first (every record of
 *    the generation checked, as for data without one).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { median, parseArgs, runFlow, startPeer, stopPeer, type FlowResult, type FlowScenario, type RunningPeer } from './load.js';
import { DurableStorage } from '../src/storage/durable.js';

const args = process.argv.slice(2);
const num = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RUNS = num('runs', 3);
const MESSAGES = num('messages', 1_000_000);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const SCENARIOS: FlowScenario[] = [
  { name: 'fan-in-qos1-persistent', title: 'QoS 1 fan-in: 4 pub -> 1 persistent sub', publishers: 4, subscribers: 1, qos: 1, topic: (p) => `in/${p}`, filter: 'in/#', persistent: true },
  { name: 'fan-in-qos1-persistent-deep', title: 'QoS 1 fan-in, 256 in flight per publisher: 4 pub -> 1 persistent sub', publishers: 4, subscribers: 1, qos: 1, topic: (p) => `in/${p}`, filter: 'in/#', persistent: true, inflight: 256 },
  { name: 'fan-out-qos1-persistent', title: 'QoS 1 fan-out: 1 pub -> 50 persistent subs', publishers: 1, subscribers: 50, qos: 1, topic: () => 'out/t', filter: 'out/t', persistent: true },
];
const opt = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const ONLY = opt('only');
if (ONLY) SCENARIOS.splice(0, SCENARIOS.length, ...SCENARIOS.filter((s) => s.name.startsWith(ONLY)));
const BROKERS = opt('brokers')?.split(',') ?? ['edb-durable', 'edb-memory', 'mosquitto-persist'];

const fmt = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const ratio = (a: number | undefined, b: number | undefined): string => (a && b ? `${(a / b).toFixed(2)}x` : '-');

async function flows(): Promise<string> {
  const opts = { ...parseArgs(['--runs', String(RUNS), ...(args.includes('--profile') ? ['--profile'] : [])]), warmupMs: num('warmup-ms', 1000), measureMs: num('measure-ms', 3000) };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'edb-bench-storage-'));
  const peers: RunningPeer[] = [];
  const results: FlowResult[] = [];
  try {
    for (const name of BROKERS) {
      const p = await startPeer(name, dir, opts);
      if (p) {
        peers.push(p);
        process.stdout.write(`started ${p.label} (pid ${p.proc.pid}) on 127.0.0.1:${p.port}\n`);
      }
    }
    for (let run = 1; run <= RUNS; run++) {
      for (const sc of SCENARIOS) {
        const order = peers.map((_, i) => peers[(i + run - 1) % peers.length]!);
        for (const peer of order) {
          const r = await runFlow(peer, sc, run, opts);
          results.push(r);
          process.stdout.write(`run ${run} ${sc.name.padEnd(24)} ${peer.name.padEnd(18)} delivered ${fmt(r.delivered).padStart(8)}/s  loss ${(r.loss * 100).toFixed(2)}%  broker cpu ${r.brokerCpu.toFixed(2)}  other cpu ${r.otherCpu.toFixed(2)}${r.errors.length ? `  errors: ${r.errors[0]}` : ''}\n`);
        }
      }
    }
  } finally {
    await Promise.all(peers.map(stopPeer));
    rmSync(dir, { recursive: true, force: true });
  }
  const med = (sc: string, b: string, f: (r: FlowResult) => number): number | undefined => {
    const xs = results.filter((r) => r.scenario === sc && r.broker === b).map(f);
    return xs.length ? median(xs) : undefined;
  };
  const rows: string[] = ['| scenario | broker | delivered msgs/s (median) | loss | msgs per broker CPU-s |', '| --- | --- | ---: | ---: | ---: |'];
  for (const sc of SCENARIOS)
    for (const p of peers) rows.push(`| ${sc.title} | ${p.label} | ${fmt(med(sc.name, p.name, (r) => r.delivered)!)} | ${((med(sc.name, p.name, (r) => r.loss) ?? 0) * 100).toFixed(2)}% | ${fmt(med(sc.name, p.name, (r) => r.perCpuSecond)!)} |`);
  rows.push('', '| scenario | durable / memory | durable / mosquitto (persistence true) | per CPU-s: durable / memory | durable / mosquitto |', '| --- | ---: | ---: | ---: | ---: |');
  for (const sc of SCENARIOS) {
    const d = med(sc.name, 'edb-durable', (r) => r.delivered);
    const dc = med(sc.name, 'edb-durable', (r) => r.perCpuSecond);
    rows.push(`| ${sc.title} | ${ratio(d, med(sc.name, 'edb-memory', (r) => r.delivered))} | ${ratio(d, med(sc.name, 'mosquitto-persist', (r) => r.delivered))} | ${ratio(dc, med(sc.name, 'edb-memory', (r) => r.perCpuSecond))} | ${ratio(dc, med(sc.name, 'mosquitto-persist', (r) => r.perCpuSecond))} |`);
  }
  if (BROKERS.includes('edb-durable-base')) {
    rows.push('', '| scenario | durable / base build: msgs/s | per CPU-s | base / memory | base / mosquitto |', '| --- | ---: | ---: | ---: | ---: |');
    for (const sc of SCENARIOS) {
      const d = med(sc.name, 'edb-durable', (r) => r.delivered);
      const b = med(sc.name, 'edb-durable-base', (r) => r.delivered);
      rows.push(`| ${sc.title} | ${ratio(d, b)} | ${ratio(med(sc.name, 'edb-durable', (r) => r.perCpuSecond), med(sc.name, 'edb-durable-base', (r) => r.perCpuSecond))} | ${ratio(b, med(sc.name, 'edb-memory', (r) => r.delivered))} | ${ratio(b, med(sc.name, 'mosquitto-persist', (r) => r.delivered))} |`);
    }
  }
  return rows.join('\n');
}

/** A data folder holding `n` stored messages for one offline persistent session. */
async function fill(dir: string, n: number): Promise<number> {
  const storage = new DurableStorage({ dir: path.join(dir, 'storage'), log: pino({ level: 'silent' }), batchSize: 4096, flushIntervalMs: 5, generationMs: 3_600_000, retentionMs: 0, maxBytes: 0 });
  const first = storage.tail;
  storage.setSession({ clientId: 'keeper', expiryInterval: 0xffffffff, subscriptions: [{ topic: 'fill/#', filter: 'fill/#', qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 }], incomingQos2: [] });
  storage.setIterator('keeper', { next: first, done: [], pubrel: [] });
  const payload = Buffer.alloc(64, 7);
  for (let i = 0; i < n; i++) {
    storage.append({ topic: `fill/${i % 100}`, payload, qos: 1, retain: false, senderId: 'filler' });
    if (i % 50_000 === 49_999) await storage.flushed();
  }
  await storage.flushed();
  const bytes = storage.info().log.bytes;
  await storage.close();
  return bytes;
}

async function startOnce(dataDir: string): Promise<{ ms: number; replayMs: number; loadMs: number; queued: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, [CLI, 'start'], {
    env: { ...process.env, EDB_DATA_DIR: dataDir, EDB_MQTT_PORT: '0', EDB_MQTTS_PORT: '-1', EDB_WS_PORT: '-1', EDB_WSS_PORT: '-1', EDB_HTTP_PORT: '-1', EDB_RULES_PORT: '-1', EDB_LOG_FORMAT: 'json', EDB_LOG_LEVEL: 'info', EDB_BACKUP: 'false' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let buf = '';
  let loadMs = NaN;
  let queued = NaN;
  const ms = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`edb start exited with ${code}`)));
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) {
        if (line.includes('"storage: loaded from')) {
          const rec = JSON.parse(line) as { ms: number; queued: number };
          loadMs = rec.ms;
          queued = rec.queued;
        }
        if (line.includes('"listener":"mqtt"')) resolve(performance.now() - started);
      }
    });
  });
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  return { ms, replayMs: NaN, loadMs, queued };
}

async function restart(): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'edb-bench-restart-'));
  try {
    const t0 = performance.now();
    const bytes = await fill(dir, MESSAGES);
    process.stdout.write(`stored ${fmt(MESSAGES)} messages (${(bytes / 1048576).toFixed(1)} MiB of log) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    const runs = [];
    for (let i = 0; i < 3; i++) {
      const r = await startOnce(dir);
      runs.push(r);
      process.stdout.write(`restart ${i + 1}: listening after ${fmt(r.ms)} ms (storage load ${fmt(r.loadMs)} ms, ${fmt(r.queued)} messages queued for the session)\n`);
    }
    // the worst case: no usable checkpoint of the log's tail (lost, or data of a release without
    // one), so the start checks every record of the generation
    const checkpoint = path.join(dir, 'storage', 'log', 'tail.checkpoint');
    const full = [];
    for (let i = 0; i < 3; i++) {
      rmSync(checkpoint, { force: true });
      const r = await startOnce(dir);
      full.push(r);
      process.stdout.write(`restart ${i + 1} without the checkpoint: listening after ${fmt(r.ms)} ms\n`);
    }
    const m = median(runs.map((r) => r.ms));
    const mf = median(full.map((r) => r.ms));
    return `Restart with ${fmt(MESSAGES)} stored messages (${(bytes / 1048576).toFixed(1)} MiB log, one generation; one offline persistent session subscribed to them all): spawn to MQTT listener ${fmt(m)} ms (median of 3: ${runs.map((r) => fmt(r.ms)).join(', ')}); storage load ${runs.map((r) => fmt(r.loadMs)).join(', ')} ms. Target < 3000 ms: ${m < 3000 ? 'MET' : 'MISSED'}. Without the log's checkpoint (every record checked): ${fmt(mf)} ms (${full.map((r) => fmt(r.ms)).join(', ')}).`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const load = os.loadavg().map((x) => x.toFixed(1)).join(' ');
  process.stdout.write(`node dist/bench/storage.js ${args.join(' ')}\nNode ${process.version}, ${os.cpus().length} cores, load average at start ${load}\n`);
  const table = args.includes('--skip-flows') ? 'flows: skipped' : await flows();
  const restartLine = args.includes('--skip-restart') ? 'restart: skipped' : await restart();
  process.stdout.write(`\n${table}\n\n${restartLine}\nload average at end ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
