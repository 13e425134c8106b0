/**
 * Opening the storage EDB_STORAGE names: DurableStorage under <dataDir>/storage, or
 * MemoryStorage. Bad durations are configuration errors; an unusable folder is a
 * StorageOpenError (both exit code 2 from `edb start`).
 */
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { DurableStorage } from './durable.js';
import { MemoryStorage } from './memory.js';
import type { BrokerStorage } from './store.js';

export type { BrokerStorage, DirectDelivery, IteratorRecord, LiveWillRecord, SessionRecord, StorageInfo, WillRecord } from './store.js';
export { StorageFullError, StorageOpenError } from './errors.js';
export { DurableStorage } from './durable.js';
export { MemoryStorage } from './memory.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "7d", "1h", "30m", "10s", "500ms", or "0". */
export function parseDuration(text: string, setting: string): number {
  const m = /^\s*(\d+)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) throw new ConfigError(`${setting}=${text}: expected a duration such as 7d, 12h, 30m or 10s`);
  const n = Number(m[1]);
  if (n !== 0 && !m[2]) throw new ConfigError(`${setting}=${text}: give a unit (s, m, h or d)`);
  return n * UNITS[m[2] ?? 'ms']!;
}

export function storageDir(config: Config): string {
  return resolve(join(config.dataDir, 'storage'));
}

export function openStorage(config: Config, log: Logger): BrokerStorage {
  if (config.storage === 'memory') return new MemoryStorage();
  const generationMs = parseDuration(config.storageGeneration, 'EDB_STORAGE_GENERATION');
  if (generationMs < 1000) throw new ConfigError(`EDB_STORAGE_GENERATION=${config.storageGeneration}: at least 1s`);
  return new DurableStorage({
    dir: storageDir(config),
    log: log.child({ part: 'storage' }),
    batchSize: config.storageBatchSize,
    flushIntervalMs: config.storageFlushIntervalMs,
    generationMs,
    retentionMs: parseDuration(config.storageRetention, 'EDB_STORAGE_RETENTION'),
    maxBytes: config.storageMaxBytes,
  });
}
