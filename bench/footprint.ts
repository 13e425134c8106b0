/**
 * Start-up time and idle memory of `edb start` with every listener on (MQTT, WebSocket,
 * HTTP, rules API; all on port 0), no rules document, default settings otherwise.
 *
 *   npm run build && node dist/bench/footprint.js [--runs 7] [--idle-ms 3000] [--cli PATH]...
 *
 * Each run spawns the broker and measures:
 * - start: from spawn until the last "listening:" log line (every listener bound);
 * - start CPU: user + system CPU of the broker until then (from /proc; steadier than wall
 *   time on a machine others load);
 * - idle RSS: VmRSS from /proc/<pid>/status --idle-ms after the listeners opened, with its
 *   split into anonymous memory (heap, JS and native) and file-backed pages (the node binary,
 *   shared libraries and addons: shared with other processes, reclaimable, but counted in RSS).
 * Several --cli (another checkout's dist/src/cli/main.js) are measured in alternation, so
 * before/after comparisons share the machine's conditions. Medians are printed.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RUNS = opt('runs', 7);
const IDLE_MS = opt('idle-ms', 3000);
const clis: string[] = [];
for (let i = 0; i < args.length; i++) if (args[i] === '--cli') clis.push(args[++i]!);
if (clis.length === 0) clis.push(fileURLToPath(new URL('../src/cli/main.js', import.meta.url)));
const CLOCK_TICKS = 100;

interface Sample {
  startMs: number;
  startCpuMs: number;
  rssMiB: number;
  anonMiB: number;
  fileMiB: number;
}

function status(pid: number): { rss: number; anon: number; file: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(text)?.[1] ?? NaN);
  return { rss: kib('VmRSS') / 1024, anon: kib('RssAnon') / 1024, file: kib('RssFile') / 1024 };
}

function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS) * 1000;
}

async function once(cli: string): Promise<Sample> {
  const dir = mkdtempSync(join(tmpdir(), 'edb-footprint-'));
  const env = {
    ...process.env,
    EDB_DATA_DIR: dir,
    EDB_MQTT_PORT: '0',
    EDB_WS_PORT: '0',
    EDB_HTTP_PORT: '0',
    EDB_RULES_PORT: '0',
    EDB_LOG_FORMAT: 'json',
    EDB_LOG_LEVEL: 'info',
  };
  const t0 = performance.now();
  const child = spawn(process.execPath, [cli, 'start'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const listening = await new Promise<number>((resolve, reject) => {
      let buf = '';
      const expect = 4; // mqtt, ws, http, rules
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        if ((buf.match(/"msg":"listening: /g) ?? []).length >= expect) resolve(performance.now());
      });
      child.once('exit', (code) => reject(new Error(`broker exited with ${code}:\n${buf}`)));
    });
    const startCpuMs = cpuMs(child.pid!);
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const s = status(child.pid!);
    return { startMs: listening - t0, startCpuMs, rssMiB: s.rss, anonMiB: s.anon, fileMiB: s.file };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

const samples = new Map<string, Sample[]>(clis.map((c) => [c, []]));
for (let r = 0; r < RUNS; r++) {
  for (const cli of r % 2 ? [...clis].reverse() : clis) samples.get(cli)!.push(await once(cli));
}
console.log(`edb start, every listener on, ${RUNS} runs each (alternating), idle RSS read ${IDLE_MS} ms after listening; Node ${process.version}`);
console.log('| build | start to listening, ms | start CPU, ms | idle RSS, MiB | anonymous | file-backed |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const [cli, xs] of samples) {
  const m = (k: keyof Sample): string => median(xs.map((x) => x[k])).toFixed(k.endsWith('MiB') ? 1 : 0);
  console.log(`| ${cli} | ${m('startMs')} (${xs.map((x) => x.startMs.toFixed(0)).join(', ')}) | ${m('startCpuMs')} | ${m('rssMiB')} | ${m('anonMiB')} | ${m('fileMiB')} |`);
}
