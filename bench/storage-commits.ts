/**
 * The message log alone (no broker, no network): a closed loop of --window messages, each
 * appended again as soon as its batch is durable (after 0-1 ms, as a client's next PUBLISH
 * would come), with one commit at a time (the log before overlapping commits) against up to
 * three at once. The two alternate in short slices so that the shared disk's drift falls on both.
 *
 *   npm run build && node dist/bench/storage-commits.js [--slices 24] [--slice-ms 400] [--window 256]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { MessageLog } from '../src/storage/log.js';

const args = process.argv.slice(2);
const num = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SLICES = num('slices', 24);
const SLICE_MS = num('slice-ms', 400);
const WINDOW = num('window', 256);
const payload = Buffer.alloc(64, 7);

async function slice(inFlight: number): Promise<{ rate: number; commitMs: number; perBatch: number }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'edb-bench-commits-'));
  const log = MessageLog.open({ dir, log: pino({ level: 'silent' }), batchSize: 256, flushIntervalMs: 2, generationMs: 3_600_000, retentionMs: 0, maxBytes: 0, commitsInFlight: inFlight });
  let acked = 0;
  let stop = false;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let live = WINDOW;
    const one = (): void => {
      if (stop) {
        if (--live === 0) resolve();
        return;
      }
      log.append({ topic: 'in/1', payload, qos: 1, retain: false, senderId: 'p' });
      log.onDurable(() => {
        acked++;
        setTimeout(one, Math.random() < 0.5 ? 0 : 1);
      });
    };
    for (let i = 0; i < WINDOW; i++) one();
    setTimeout(() => (stop = true), SLICE_MS);
  });
  const secs = (performance.now() - t0) / 1000;
  const m = log.metrics;
  await log.close();
  rmSync(dir, { recursive: true, force: true });
  return { rate: acked / secs, commitMs: m.commitMillisTotal / m.commits, perBatch: m.messagesAppended / m.commits };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function main(): Promise<void> {
  process.stdout.write(`node dist/bench/storage-commits.js ${args.join(' ')}\nNode ${process.version}, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}\n`);
  const res: Record<number, { rate: number; commitMs: number; perBatch: number }[]> = { 1: [], 3: [] };
  for (let r = 0; r < SLICES; r++) for (const f of r % 2 ? [3, 1] : [1, 3]) res[f]!.push(await slice(f));
  for (const f of [1, 3]) {
    const xs = res[f]!;
    process.stdout.write(`${f} commit(s) in flight: median ${Math.round(median(xs.map((x) => x.rate)))} msgs/s over ${xs.length} slices (commit ${median(xs.map((x) => x.commitMs)).toFixed(2)} ms, ${Math.round(median(xs.map((x) => x.perBatch)))} messages per batch)\n`);
  }
  process.stdout.write(`ratio 3 / 1: ${(median(res[3]!.map((x) => x.rate)) / median(res[1]!.map((x) => x.rate))).toFixed(2)}x; load average at end ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}\n`);
}

void main();
