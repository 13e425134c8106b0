// State-store round trips with loaders that cost little CPU: the lean MQTT loader
// (bench/loaders/statestore-load.mjs: prebuilt MQTT 5 requests patched in place, a minimal
// frame reader) against the broker, and redis-benchmark (C) against redis-server, 50 clients
// each, one request in flight per client, SET/GET of 100-byte values, rounds alternating.
//   npm run build && node dist/bench/state/lean.js      (CLIENTS=50 SECONDS=5 ROUNDS=3)
//   EDB_STORAGE=durable REDIS_FSYNC=always node dist/bench/state/lean.js   (both answer a write once on disk)
// Prints req/s, the server's and the loader's CPU per request (from /proc), and the ratio.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { readFileSync, mkdtempSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLIENTS = Number(process.env['CLIENTS'] ?? 50);
const SECONDS = Number(process.env['SECONDS'] ?? 5);
const ROUNDS = Number(process.env['ROUNDS'] ?? 3);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const LOADER = fileURLToPath(new URL('../../../bench/loaders/statestore-load.mjs', import.meta.url));

const cpu = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
const run = (cmd: string, args: string[]): Promise<string> =>
  new Promise((resolve, reject) => execFile(cmd, args, { maxBuffer: 1 << 24 }, (err, out) => (err ? reject(err) : resolve(String(out)))));

async function startBroker(): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [CLI, 'start'], {
    env: { ...process.env, EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-lean-')), EDB_MQTT_PORT: '0', EDB_MQTTS_PORT: '-1', EDB_WS_PORT: '-1', EDB_WSS_PORT: '-1', EDB_HTTP_PORT: '-1', EDB_RULES_PORT: '-1', EDB_LOG_FORMAT: 'json', EDB_LOG_LEVEL: 'info', EDB_BACKUP: 'false', EDB_SYS_INTERVAL: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"listener":"mqtt"[^\n]*"port":(\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`broker exited ${code}`)));
  });
  child.stdout!.resume();
  return { child, port };
}

async function startRedis(): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  // REDIS_FSYNC=always: Redis writes its append-only file and fsyncs it before answering (one
  // fsync per event-loop turn, for every client's writes of that turn): what a durable broker
  // (EDB_STORAGE=durable, a SET answered once committed) compares with
  const durable = process.env['REDIS_FSYNC'] === 'always' ? ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', mkdtempSync(join(tmpdir(), 'edb-lean-redis-'))] : ['--appendonly', 'no'];
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...durable], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (ok) return { child, port };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('redis-server did not start');
}

interface Round {
  rate: number;
  serverUs: number;
  loaderUs: number;
}

async function edbRound(b: { child: ChildProcess; port: number }): Promise<Round> {
  const c0 = cpu(b.child.pid!);
  const out = JSON.parse((await run(process.execPath, [LOADER, String(b.port), '--clients', String(CLIENTS), '--seconds', String(SECONDS)])).trim().split('\n').pop()!) as { ops: number; opsPerSec: number; loaderCpuS: number; errors: number };
  if (out.errors) throw new Error(`${out.errors} wrong answers`);
  return { rate: out.opsPerSec, serverUs: ((cpu(b.child.pid!) - c0) / out.ops) * 1e6, loaderUs: (out.loaderCpuS / out.ops) * 1e6 };
}

async function redisRound(r: { child: ChildProcess; port: number }): Promise<Round> {
  // about SECONDS of SET then GET at the rate this machine gives Redis (sized from a first probe)
  const n = String(Math.max(20_000, Math.round(90_000 * SECONDS)));
  const c0 = cpu(r.child.pid!);
  const t0 = performance.now();
  const child = spawn('redis-benchmark', ['-p', String(r.port), '-c', String(CLIENTS), '-t', 'set,get', '-d', '100', '-n', n, '-q', '--csv'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const usage = await new Promise<{ cpuS: number }>((resolve) => {
    let last = 0;
    const poll = setInterval(() => {
      try {
        last = cpu(child.pid!);
      } catch {
        /* exited */
      }
    }, 100);
    child.once('exit', () => (clearInterval(poll), resolve({ cpuS: last })));
  });
  const secs = (performance.now() - t0) / 1000;
  const ops = 2 * Number(n);
  void out;
  return { rate: ops / secs, serverUs: ((cpu(r.child.pid!) - c0) / ops) * 1e6, loaderUs: (usage.cpuS / ops) * 1e6 };
}

const broker = await startBroker();
const redis = await startRedis();
try {
  console.log(`state store vs redis-server, lean loaders, ${CLIENTS} clients, ~${SECONDS} s per round, ${ROUNDS} rounds (alternating); load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
  await edbRound(broker); // warm-up
  const ratios: number[] = [];
  const fmt = (x: Round): string => `${Math.round(x.rate).toLocaleString('en')} req/s, server ${x.serverUs.toFixed(1)} µs/req, loader ${x.loaderUs.toFixed(1)} µs/req`;
  for (let i = 0; i < ROUNDS; i++) {
    const e = await edbRound(broker);
    const r = await redisRound(redis);
    ratios.push(e.rate / r.rate);
    console.log(`  round ${i + 1}: edb ${fmt(e)} | redis ${fmt(r)} | ratio ${(e.rate / r.rate).toFixed(2)} (CPU per request, redis/edb: ${(r.serverUs / e.serverUs).toFixed(2)})`);
  }
  ratios.sort((a, b) => a - b);
  console.log(`edb / redis (lean loaders): median ${ratios[Math.floor(ratios.length / 2)]!.toFixed(2)}   [target >= 0.50]`);
} finally {
  broker.child.kill('SIGTERM');
  redis.child.kill('SIGTERM');
}
