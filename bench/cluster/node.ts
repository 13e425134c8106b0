// One `edb start` process for the cluster benches (cluster.ts, sessions.ts, state-lean.ts):
// MQTT on a free port, every other listener off, JSON logs; with EDB_CLUSTER_NATS, resolved
// once the node has logged `ready` (it has joined and that bucket is ready).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface BenchNode {
  child: ChildProcess;
  port: number;
  dir: string;
}

export interface BenchNodeOptions {
  /** node's own arguments (e.g. --cpu-prof) */
  execArgv?: string[];
  /** the log line a cluster node is ready after (default: the state store's bucket) */
  ready?: RegExp;
  /** prefix of its data folder under the system's temp directory */
  prefix?: string;
  /** the CLI to run (default: this build's dist/src/cli/main.js), e.g. another build's for an A/B run */
  cli?: string;
}

export async function startNode(env: Record<string, string>, options: BenchNodeOptions = {}): Promise<BenchNode> {
  const dir = mkdtempSync(join(tmpdir(), options.prefix ?? 'edb-bench-cluster-'));
  const child = spawn(process.execPath, [...(options.execArgv ?? []), options.cli ?? CLI, 'start'], {
    env: { ...process.env, EDB_MQTT_PORT: '0', EDB_MQTTS_PORT: '-1', EDB_WS_PORT: '-1', EDB_WSS_PORT: '-1', EDB_HTTP_PORT: '-1', EDB_RULES_PORT: '-1', EDB_LOG_FORMAT: 'json', EDB_LOG_LEVEL: 'info', EDB_BACKUP: 'false', EDB_SYS_INTERVAL: '0', EDB_DATA_DIR: dir, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let buf = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"listener":"mqtt"[^\n]*"port":(\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`broker exited ${code}`)));
  });
  if (env['EDB_CLUSTER_NATS']) {
    const ready = options.ready ?? /state store in JetStream bucket/;
    const deadline = Date.now() + 60_000;
    while (!ready.test(buf)) {
      if (Date.now() > deadline) throw new Error('node did not join');
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  child.stdout!.on('data', () => undefined);
  return { child, port, dir };
}
