// Backup and restore of a state store of 1 million keys (16-byte keys, 100-byte values),
// as across a restart: one process fills a store and writes the snapshot through the
// BackupManager; a fresh process restores it (read, checksum, load), as `edb start` does.
//   npm run build && node dist/bench/state/restore.js          (ENTRIES=1000000 ROUNDS=3)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackupManager } from '../../src/persistence/backup.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import type { BrokerApi } from '../../src/broker/api.js';
import { createStateStoreService } from '../../src/state/service.js';

const N = Number(process.env['ENTRIES'] ?? 1_000_000);
const ROUNDS = Number(process.env['ROUNDS'] ?? 3);
const broker = { addHooks() {}, publish() {}, disconnectClient: () => false, maySubscribe: () => true } as unknown as BrokerApi;
const config = testConfig({ stateMaxKeys: N * 2, stateMaxBytes: N * 1000 });

async function write(dir: string): Promise<void> {
  const source = createStateStoreService(broker, config, silentLogger());
  const value = Buffer.alloc(100, 0x63);
  const key = Buffer.alloc(16);
  const now = Date.now();
  for (let i = 0; i < N; i++) {
    key.write(String(i).padStart(16, '0'), 0, 'latin1');
    const v = source.clock.tick();
    source.table.set(key, value, 0, v.wall, v.counter, 0, undefined, now);
  }
  const out = new BackupManager(dir, silentLogger());
  out.register(source.snapshotSection());
  const t = performance.now();
  const bytes = await out.save();
  process.stdout.write(JSON.stringify({ save: performance.now() - t, bytes }));
  await source.close();
}

async function read(dir: string): Promise<void> {
  const target = createStateStoreService(broker, config, silentLogger());
  const back = new BackupManager(dir, silentLogger());
  back.register(target.snapshotSection());
  const t = performance.now();
  const outcome = await back.restore();
  const restore = performance.now() - t;
  if (outcome.status !== 'restored' || target.table.size !== N) throw new Error(`restore failed: ${JSON.stringify(outcome)}`);
  process.stdout.write(JSON.stringify({ restore }));
  await target.close();
}

const [mode, dirArg] = process.argv.slice(2);
if (mode === 'write') await write(dirArg!);
else if (mode === 'read') await read(dirArg!);
else {
  const self = fileURLToPath(import.meta.url);
  const child = (m: string, dir: string) => {
    const r = spawnSync(process.execPath, [self, m, dir], { encoding: 'utf8', env: { ...process.env, ENTRIES: String(N) } });
    if (r.status !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout) as { save?: number; bytes?: number; restore?: number };
  };
  const saves: number[] = [];
  const restores: number[] = [];
  let bytes = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const dir = mkdtempSync(join(tmpdir(), 'edb-restore-bench-'));
    const w = child('write', dir);
    saves.push(w.save!);
    bytes = w.bytes!;
    restores.push(child('read', dir).restore!);
    rmSync(dir, { recursive: true, force: true });
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`${N.toLocaleString('en')} keys, snapshot ${(bytes / 1048576).toFixed(1)} MiB, ${ROUNDS} rounds, each restore in a fresh process`);
  console.log(`  save (write, fsync, rename): median ${median(saves).toFixed(0)} ms  (${saves.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`  restore (read, checksum, load): median ${median(restores).toFixed(0)} ms  (${restores.map((x) => x.toFixed(0)).join(', ')})   [target < 2000 ms]`);
}
