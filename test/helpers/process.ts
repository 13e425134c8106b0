import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));

export interface BrokerProcess {
  child: ChildProcess;
  /** Port of each listener, from the "listening" log lines. */
  ports: Record<string, number>;
  /** Every JSON log line so far. */
  logs: Record<string, unknown>[];
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Start `edb start` as a real process with EDB_* settings (ports default to 0 / off) and
 * wait until the listeners named in `waitFor` have logged their ports. `wrap`: a command the
 * broker runs under, which must exec it (`ip netns exec NS`, `setpriv ...`).
 */
export async function startBrokerProcess(env: Record<string, string> = {}, waitFor: string[] = ['mqtt'], startTimeoutMs = 60_000, wrap: string[] = []): Promise<BrokerProcess> {
  // `wrap`: a command that execs the broker (`ip netns exec NS ...`): the pid stays the broker's
  const argv = [...wrap, process.execPath, CLI, 'start'];
  const child = spawn(argv[0]!, argv.slice(1), {
    env: {
      ...process.env,
      EDB_MQTT_PORT: '0',
      EDB_MQTTS_PORT: '0',
      EDB_WS_PORT: '-1',
      EDB_WSS_PORT: '-1',
      EDB_HTTP_PORT: '-1',
      EDB_RULES_PORT: '-1',
      EDB_LOG_FORMAT: 'json',
      EDB_LOG_LEVEL: 'info',
      // a data folder of its own, so no run restores another's backup
      EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-data-')),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const ports: Record<string, number> = {};
  const logs: Record<string, unknown>[] = [];
  let buffered = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL'); // not left running behind a failed test
      reject(new Error(`broker did not start in ${startTimeoutMs} ms: ${stderr}`));
    }, startTimeoutMs);
    // a spawn failure emits 'error' and no 'exit'
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited with ${code}: ${stderr}`));
    });
    child.stdout!.on('data', (d: Buffer) => {
      buffered += d.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          logs.push(rec);
          if (typeof rec['listener'] === 'string' && typeof rec['port'] === 'number') ports[rec['listener']] = rec['port'];
        } catch {
          /* not a log line */
        }
      }
      if (waitFor.every((l) => l in ports)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  await ready;
  return {
    child,
    ports,
    logs,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode; // ended already (a signal leaves exitCode null)
      child.kill(signal);
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    },
  };
}
