/**
 * A restart with a stored rules document: how long `edb start` takes until MQTT clients are
 * let in (the document is active before the listeners open), and the process's memory then,
 * with the compiled module in the data folder (the cache) and without it (asc in the
 * worker, as at the first start). Runs alternate; medians and ratios.
 *
 *   npm run build && node dist/bench/rules/startup.js [statements=1000] [runs=3]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { documentText } from '../../src/rules/pipeline.js';
import { DOCUMENT_FILE } from '../../src/rules/store.js';
import { MODULE_FILE } from '../../src/rules/module-cache.js';
import { mixedDocument } from './documents.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const STATEMENTS = Number(process.argv[2] ?? 1000);
const RUNS = Number(process.argv[3] ?? 3);

interface Start {
  readyMillis: number;
  rssMiB: number;
  fromCache: boolean;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Start edb on `dataDir`; resolve when MQTT listens; SIGTERM it. */
function startOnce(dataDir: string): Promise<Start> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [CLI, 'start'], {
      env: {
        ...process.env,
        EDB_DATA_DIR: dataDir,
        EDB_BACKUP: 'false',
        EDB_MQTT_PORT: '0',
        EDB_MQTTS_PORT: '-1',
        EDB_WS_PORT: '-1',
        EDB_WSS_PORT: '-1',
        EDB_HTTP_PORT: '-1',
        EDB_RULES_PORT: '-1',
        EDB_LOG_FORMAT: 'json',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let fromCache: boolean | undefined;
    let listening = false;
    let buffered = '';
    child.stdout.on('data', (d: Buffer) => {
      buffered += d.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const rec = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>;
        buffered = buffered.slice(nl + 1);
        if (rec['msg'] === 'rules document active') fromCache = rec['fromCache'] === true;
        if (rec['listener'] === 'mqtt' && typeof rec['port'] === 'number') {
          const readyMillis = performance.now() - t0;
          listening = true;
          const rss = rssMiB(child.pid!);
          if (fromCache === undefined) reject(new Error('no "rules document active" before MQTT listened'));
          child.kill('SIGTERM');
          child.once('exit', () => resolve({ readyMillis, rssMiB: rss, fromCache: fromCache! }));
        }
      }
    });
    child.once('exit', (code) => {
      if (!listening) reject(new Error(`edb exited with ${code} before listening`));
    });
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'edb-bench-startup-'));
  writeFileSync(join(dataDir, DOCUMENT_FILE), documentText(mixedDocument(STATEMENTS)));
  const cold: Start[] = [];
  const cached: Start[] = [];
  await startOnce(dataDir); // writes the module file; also warms the disk cache for both
  for (let r = 0; r < RUNS; r++) {
    const c = await startOnce(dataDir);
    if (!c.fromCache) throw new Error('expected the module from the cache');
    cached.push(c);
    rmSync(join(dataDir, MODULE_FILE));
    const n = await startOnce(dataDir);
    if (n.fromCache) throw new Error('expected a compile');
    cold.push(n);
  }
  const row = (name: string, s: Start[]): string =>
    `| ${name} | ${median(s.map((x) => x.readyMillis)).toFixed(0)} ms | ${median(s.map((x) => x.rssMiB)).toFixed(0)} MiB |`;
  console.log(`edb start with a stored ${STATEMENTS}-statement document, ${RUNS} runs each, alternating (node ${process.version})`);
  console.log('| module | until MQTT listens (median) | RSS then (median) |');
  console.log('| --- | ---: | ---: |');
  console.log(row('compiled (asc in the worker)', cold));
  console.log(row('from the cache', cached));
  const t = median(cold.map((x) => x.readyMillis)) / median(cached.map((x) => x.readyMillis));
  const m = median(cold.map((x) => x.rssMiB)) / median(cached.map((x) => x.rssMiB));
  console.log(`cache: start-up ${t.toFixed(1)}x faster, ${m.toFixed(1)}x less memory at start`);
  rmSync(dataDir, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
