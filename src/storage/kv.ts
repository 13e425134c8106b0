/**
 * The keyed part of durable storage, on LMDB (the `lmdb` package; prebuilt for linux x64 and
 * arm64 inside its npm packages): retained messages, session records, the state store's
 * write log and snapshot, and small documents (the rules). LMDB is copy-on-write with two
 * meta pages, so a crash leaves the last committed transaction whole; commits are synchronous
 * (overlappingSync off): a write's promise resolves once it is on disk. Writes made in one
 * turn of the event loop share one transaction and one fsync.
 *
 * Before LMDB maps the file, its meta pages are checked: a file that is not LMDB's, or is
 * shorter than its own last page (truncated), would otherwise crash the process (SIGBUS) or
 * be misread. Such a folder is refused with StorageOpenError (exit code 2).
 */
import { closeSync, existsSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import type { Database, RootDatabase } from 'lmdb';
import { StorageOpenError } from './errors.js';

const MAGIC = 0xbeefc0de;

/**
 * Where the meta fields sit in lmdb-js's LMDB, by word size (the file is native: a 64-bit
 * and a 32-bit build, such as armhf, lay it out differently). `meta`: after the page header;
 * then magic, version, address and map size (pointer-sized), two MDB_db (page size in the
 * first one's pad), last page and transaction id (pointer-sized). Taken from data.mdb files
 * written on linux x64 and on armhf (Debian 13, emulated).
 */
const LAYOUTS = [
  { bits: 64, meta: 24, psize: 24, last: 120, txn: 128, word: 8 },
  { bits: 32, meta: 16, psize: 16, last: 72, txn: 76, word: 4 },
] as const;

/** Check data.mdb's meta pages; throws StorageOpenError naming the problem. */
export function checkLmdbFile(dir: string): void {
  const file = join(dir, 'data.mdb');
  if (!existsSync(file)) return;
  const size = statSync(file).size;
  if (size === 0) return; // created, nothing committed: LMDB starts it afresh
  const fd = openSync(file, 'r');
  try {
    const page0 = Buffer.alloc(256);
    readSync(fd, page0, 0, 256, 0);
    const layout = LAYOUTS.find((l) => page0.readUInt32LE(l.meta) === MAGIC);
    if (!layout) throw new StorageOpenError(dir, `${file} is not an LMDB file (garbage or a foreign file)`);
    const { meta, word } = layout;
    const read = (page: Buffer, at: number): bigint => (word === 8 ? page.readBigUInt64LE(meta + at) : BigInt(page.readUInt32LE(meta + at)));
    const psize = page0.readUInt32LE(meta + layout.psize);
    if (psize < 512 || psize > 65536 || (psize & (psize - 1)) !== 0) throw new StorageOpenError(dir, `${file}: damaged meta page (page size ${psize})`);
    let best = { txn: -1n, last: 0n };
    for (const base of [0, psize]) {
      const page = Buffer.alloc(256);
      if (readSync(fd, page, 0, 256, base) < 256 || page.readUInt32LE(meta) !== MAGIC) continue;
      const last = read(page, layout.last);
      const txn = read(page, layout.txn);
      if (txn > best.txn) best = { txn, last };
    }
    const needed = (Number(best.last) + 1) * psize;
    if (size < needed) throw new StorageOpenError(dir, `${file} is truncated: ${size} bytes, its last page ends at ${needed}`);
  } finally {
    closeSync(fd);
  }
}

export interface KvStores {
  readonly root: RootDatabase;
  /** topic -> encoded message (record.ts) */
  readonly retained: Database<Buffer, string>;
  /** client id -> session record */
  readonly sessions: Database<unknown, string>;
  /** client id -> log position of the next message not yet acknowledged */
  readonly iterators: Database<unknown, string>;
  /** client id -> the will of a client connected now (published at start after a crash) */
  readonly wills: Database<unknown, string>;
  /** sequence -> state store write */
  readonly stateOps: Database<Buffer, number>;
  /** name -> small document (state snapshot, rules document, rule buffer, import markers) */
  readonly blobs: Database<Buffer, string>;
}

/**
 * lmdb-js (3.5.6, the newest) rejects a promise of its own, made for the end of each write
 * batch and handed to no caller, when a commit fails (ENOSPC on a full disk, EIO): an unhandled
 * rejection, which ends the process. Every write of ours has its own promise that rejects too
 * (DurableStorage handles it: the acknowledgements waiting for it are refused), so this one
 * carries nothing we need: it is recognised by lmdb's message and its `commitError` promise
 * (handled as well) and dropped. Any other unhandled rejection still ends the process as Node's
 * default does (unless someone else, a test runner, listens for them).
 */
export function isLmdbCommitFailure(reason: unknown): boolean {
  return reason instanceof Error && reason.message.startsWith('Commit failed') && 'commitError' in reason;
}

let commitGuard = false;

function guardLmdbCommitFailures(): void {
  if (commitGuard) return;
  commitGuard = true;
  process.on('unhandledRejection', (reason) => {
    if (isLmdbCommitFailure(reason)) {
      (reason as { commitError?: Promise<unknown> }).commitError?.catch(() => undefined);
      return;
    }
    if (process.listenerCount('unhandledRejection') > 1) return; // another listener decides
    throw reason; // as Node does without a listener: an uncaught exception
  });
}

export function openKv(dir: string): KvStores {
  guardLmdbCommitFailures();
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new StorageOpenError(dir, (err as Error).message);
  }
  checkLmdbFile(dir);
  let root: RootDatabase;
  try {
    // loaded here, not at the top: with EDB_STORAGE=memory (the default) the native addon
    // and its modules are never needed
    const { open } = createRequire(import.meta.url)('lmdb') as typeof import('lmdb');
    root = open({ path: dir, overlappingSync: false, maxDbs: 16, compression: false });
  } catch (err) {
    throw new StorageOpenError(dir, (err as Error).message);
  }
  try {
    return {
      root,
      retained: root.openDB<Buffer, string>({ name: 'retained', encoding: 'binary' }),
      sessions: root.openDB<unknown, string>({ name: 'sessions', encoding: 'msgpack' }),
      iterators: root.openDB<unknown, string>({ name: 'iterators', encoding: 'msgpack' }),
      wills: root.openDB<unknown, string>({ name: 'wills', encoding: 'msgpack' }),
      stateOps: root.openDB<Buffer, number>({ name: 'state-ops', encoding: 'binary' }),
      blobs: root.openDB<Buffer, string>({ name: 'blobs', encoding: 'binary' }),
    };
  } catch (err) {
    void root.close();
    throw new StorageOpenError(dir, (err as Error).message);
  }
}
