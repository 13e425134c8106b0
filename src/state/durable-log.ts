/**
 * EDB_STORAGE=durable for the state store: each write that changed the table is handed to
 * storage as a write-log record (write-log.ts); every COMPACT_EVERY writes, and at close,
 * the table is stored whole as the snapshot that replaces them. At start the snapshot is
 * loaded and the writes since replayed.
 */
import type { Logger } from 'pino';
import type { BrokerStorage } from '../storage/store.js';
import type { HybridLogicalClock } from './hlc.js';
import type { StateTable } from './table.js';
import { decodeStateWrite, encodeStateWrite, OP_SET, OP_VDEL, type StateWrite } from './write-log.js';

/** Writes between two compactions of the stored write log into a snapshot. */
const COMPACT_EVERY = 10_000;

export class DurableStateLog {
  /** Writes stored since the last snapshot. */
  writesSinceCompaction = 0;

  constructor(
    readonly storage: BrokerStorage,
    /** The whole table as a section (section.ts). */
    private readonly snapshot: () => Buffer,
  ) {}

  /** Appends are refused now (disk full or the size cap reached). */
  get full(): boolean {
    return this.storage.full;
  }

  record(w: StateWrite): void {
    this.storage.appendStateOp(encodeStateWrite(w));
    if (++this.writesSinceCompaction >= COMPACT_EVERY) this.compact();
  }

  compact(): void {
    this.writesSinceCompaction = 0;
    this.storage.compactState(Buffer.from(this.snapshot()));
  }

  /** Rebuilds the table: the stored snapshot (through `restore`), then the writes since. */
  load(table: StateTable, clock: HybridLogicalClock, restore: (snapshot: Buffer) => void, log: Logger): { keys: number; writes: number } {
    const { snapshot, ops: writes } = this.storage.stateLog();
    if (snapshot) restore(snapshot);
    let replayed = 0;
    for (const raw of writes) {
      let w;
      try {
        w = decodeStateWrite(raw);
      } catch (err) {
        log.error({ err: (err as Error).message }, 'state store: an unreadable stored write; skipped');
        continue;
      }
      if (w.op === OP_SET) table.set(w.key, w.value!, w.flags, w.version.wall, w.version.counter, w.expiresAt, w.ft, w.now);
      else table.delete(w.key, w.op === OP_VDEL ? w.value : undefined, w.ft, w.now);
      clock.restore(w.version.wall, w.version.counter);
      replayed++;
    }
    this.writesSinceCompaction = replayed;
    // one snapshot from now on: the next start replays nothing old
    if (replayed > 0) this.compact();
    log.info({ keys: table.size, writes: replayed }, 'state store loaded from durable storage');
    return { keys: table.size, writes: replayed };
  }
}
