// Backup and restore of a state store of 1 million keys (16-byte keys, 100-byte values):
// the snapshot written through the BackupManager, then read back into a new store.
//   npm run build && node dist/bench/state/restore.js
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupManager } from '../../src/persistence/backup.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import type { BrokerApi } from '../../src/broker/api.js';
import { createStateStoreService } from '../../src/state/service.js';

const N = Number(process.env['ENTRIES'] ?? 1_000_000);
const broker = { addHooks() {}, publish() {}, disconnectClient: () => false } as unknown as BrokerApi;
const config = testConfig({ stateMaxKeys: N * 2, stateMaxBytes: N * 1000 });

const source = createStateStoreService(broker, config, silentLogger());
const value = Buffer.alloc(100, 0x63);
const key = Buffer.alloc(16);
const now = Date.now();
for (let i = 0; i < N; i++) {
  key.write(String(i).padStart(16, '0'), 0, 'latin1');
  const v = source.clock.tick();
  source.table.set(key, value, 0, v.wall, v.counter, 0, undefined, now);
}
const dir = mkdtempSync(join(tmpdir(), 'edb-restore-bench-'));
const runs: { save: number; restore: number; bytes: number }[] = [];
for (let run = 0; run < 3; run++) {
  const out = new BackupManager(dir, silentLogger());
  out.register(source.snapshotSection());
  let t = performance.now();
  const bytes = await out.save();
  const save = performance.now() - t;
  const target = createStateStoreService(broker, config, silentLogger());
  const back = new BackupManager(dir, silentLogger());
  back.register(target.snapshotSection());
  t = performance.now();
  const outcome = await back.restore();
  const restore = performance.now() - t;
  if (outcome.status !== 'restored' || target.table.size !== N) throw new Error(`restore failed: ${JSON.stringify(outcome)}`);
  runs.push({ save, restore, bytes });
  await target.close();
}
await source.close();
rmSync(dir, { recursive: true, force: true });
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`${N.toLocaleString('en')} keys, snapshot ${(runs[0]!.bytes / 1048576).toFixed(1)} MiB`);
console.log(`  save (write, fsync, rename): median ${median(runs.map((r) => r.save)).toFixed(0)} ms`);
console.log(`  restore (read, checksum, load): median ${median(runs.map((r) => r.restore)).toFixed(0)} ms   [target < 2000 ms]`);
