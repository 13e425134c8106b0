/**
 * A read-only look at a storage folder (`edb storage show`), safe while the broker runs: the
 * generation files' headers and sizes, the oldest message, and from LMDB (opened read-only;
 * LMDB allows readers in other processes) the sessions with their lag behind the log's tail.
 * Nothing is cut, repaired or written here.
 */
import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { crc32 } from '../persistence/snapshot.js';
import { StorageOpenError } from './errors.js';
import { checkLmdbFile } from './kv.js';
import { decodeMessage } from './record.js';
import type { IteratorRecord, SessionRecord } from './store.js';

export interface StorageReport {
  dir: string;
  generations: { id: number; layout: number; createdAt: number; bytes: number; valid: boolean }[];
  bytes: number;
  tail: { gen: number; offset: number } | undefined;
  oldestStoredAt: number | undefined;
  retained: number;
  stateWrites: number;
  sessions: { clientId: string; expiryInterval: number; subscriptions: number; online: boolean; lagBytes: number | undefined }[];
}

const FILE_RE = /^gen-(\d{8})\.log$/;

export function inspectStorage(dir: string): StorageReport {
  const logDir = join(dir, 'log');
  const kvDir = join(dir, 'kv');
  if (!existsSync(logDir) && !existsSync(kvDir)) throw new StorageOpenError(dir, 'no durable storage here (EDB_STORAGE=durable has not run with this data folder)');
  const generations: StorageReport['generations'] = [];
  let oldestStoredAt: number | undefined;
  for (const name of existsSync(logDir) ? readdirSync(logDir).sort() : []) {
    const m = FILE_RE.exec(name);
    if (!m) continue;
    const file = join(logDir, name);
    const bytes = statSync(file).size;
    const fd = openSync(file, 'r');
    try {
      const h = Buffer.alloc(32);
      const valid = readSync(fd, h, 0, 32, 0) === 32 && h.toString('latin1', 0, 8) === 'EDBLOG01' && (crc32(h.subarray(0, 28)) >>> 0) === h.readUInt32LE(28);
      generations.push({ id: Number(m[1]), layout: valid ? h.readUInt32LE(8) : 0, createdAt: valid ? h.readDoubleLE(16) : 0, bytes, valid });
      if (valid && oldestStoredAt === undefined && bytes > 40) {
        const frame = Buffer.alloc(8);
        readSync(fd, frame, 0, 8, 32);
        const len = frame.readUInt32LE(0);
        if (len > 0 && 40 + len <= bytes) {
          const body = Buffer.alloc(len);
          readSync(fd, body, 0, len, 40);
          try {
            oldestStoredAt = decodeMessage(body).storedAt;
          } catch {
            /* damaged: the broker cuts it at its next start */
          }
        }
      }
    } finally {
      closeSync(fd);
    }
  }
  const last = generations[generations.length - 1];
  const tail = last ? { gen: last.id, offset: last.bytes } : undefined;
  const bytesBetween = (from: { gen: number; offset: number }): number | undefined => {
    if (!tail) return undefined;
    let n = 0;
    for (const g of generations) {
      if (g.id < from.gen) continue;
      n += g.id === from.gen ? Math.max(0, g.bytes - from.offset) : Math.max(0, g.bytes - 32);
    }
    return n;
  };
  const report: StorageReport = { dir, generations, bytes: generations.reduce((a, g) => a + g.bytes, 0), tail, oldestStoredAt, retained: 0, stateWrites: 0, sessions: [] };
  if (!existsSync(join(kvDir, 'data.mdb'))) return report;
  checkLmdbFile(kvDir);
  let root;
  try {
    // loaded here: a broker on memory storage never needs the native addon (test/e2e/footprint.test.ts)
    const { open } = createRequire(import.meta.url)('lmdb') as typeof import('lmdb');
    root = open({ path: kvDir, readOnly: true, maxDbs: 16 });
  } catch (err) {
    throw new StorageOpenError(kvDir, (err as Error).message);
  }
  try {
    const retained = root.openDB({ name: 'retained', encoding: 'binary' });
    const sessions = root.openDB<SessionRecord, string>({ name: 'sessions', encoding: 'msgpack' });
    const iterators = root.openDB<IteratorRecord, string>({ name: 'iterators', encoding: 'msgpack' });
    const ops = root.openDB({ name: 'state-ops', encoding: 'binary' });
    report.retained = retained.getCount();
    report.stateWrites = ops.getCount();
    for (const { value: s } of sessions.getRange()) {
      const it = iterators.get(s.clientId);
      report.sessions.push({
        clientId: s.clientId,
        expiryInterval: s.expiryInterval,
        subscriptions: s.subscriptions.length,
        online: s.expiresAt === undefined,
        lagBytes: it ? bytesBetween(it.next) : undefined,
      });
    }
  } finally {
    void root.close();
  }
  return report;
}

export function formatStorageReport(r: StorageReport, now = Date.now()): string {
  const lines: string[] = [];
  const mib = (n: number) => `${(n / 1048576).toFixed(2)} MiB`;
  lines.push(`storage: ${r.dir}`);
  lines.push(`log: ${mib(r.bytes)} in ${r.generations.length} generation(s)${r.oldestStoredAt !== undefined ? `, oldest message stored ${new Date(r.oldestStoredAt).toISOString()} (${Math.round((now - r.oldestStoredAt) / 1000)} s ago)` : ', no messages'}`);
  lines.push('');
  lines.push('GENERATION  LAYOUT  CREATED                   BYTES');
  for (const g of r.generations) {
    lines.push(`${String(g.id).padStart(10)}  ${g.valid ? String(g.layout).padStart(6) : ' (bad)'}  ${(g.valid ? new Date(g.createdAt).toISOString() : '').padEnd(24)}  ${String(g.bytes).padStart(10)}`);
  }
  lines.push('');
  lines.push(`retained messages: ${r.retained}; state-store writes since the last snapshot: ${r.stateWrites}`);
  lines.push(`sessions: ${r.sessions.length}`);
  if (r.sessions.length > 0) {
    lines.push('CLIENT ID                         SUBS  EXPIRY (s)  CONNECTED  LAG (bytes)');
    for (const s of r.sessions) {
      lines.push(`${s.clientId.padEnd(32)}  ${String(s.subscriptions).padStart(4)}  ${String(s.expiryInterval).padStart(10)}  ${(s.online ? 'yes' : 'no').padEnd(9)}  ${s.lagBytes === undefined ? '?' : String(s.lagBytes).padStart(11)}`);
    }
  }
  return lines.join('\n') + '\n';
}
