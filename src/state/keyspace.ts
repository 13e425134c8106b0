/**
 * What every way into the state store shares: the table, the clock, the counts, KEYNOTIFY
 * and durable storage, with the few steps they all take after a table call (the version of
 * the entry just read, expired keys notified, table result codes as protocol errors).
 */
import type { Logger } from 'pino';
import type { Answer, StateCounters } from './counters.js';
import type { DurableStateLog } from './durable-log.js';
import type { HybridLogicalClock, Hlc } from './hlc.js';
import type { KeyNotifyRegistry } from './key-notify.js';
import { ERRORS } from './protocol.js';
import { codes, type StateTable } from './table.js';
import type { StateWrite } from './write-log.js';

/**
 * Cluster mode: the cluster-wide copy of the keyspace (src/cluster/state.ts). The table is
 * then this node's mirror of it; a write is answered once the replica has it.
 */
export interface StateReplica {
  /**
   * A write the table just made. Resolves "ok" once replicated; "conflict" when another node
   * wrote the key first (the table now holds that write: run the request again); rejects
   * when it cannot be replicated now (the key is back as it was in the table).
   */
  replicate(w: StateWrite): Promise<'ok' | 'conflict'>;
}

export class StateKeyspace {
  constructor(
    readonly table: StateTable,
    readonly clock: HybridLogicalClock,
    readonly counters: StateCounters,
    readonly keyNotify: KeyNotifyRegistry,
    readonly durable: DurableStateLog | undefined,
    readonly now: () => number,
    readonly log: Logger,
  ) {}

  /** Cluster mode (set at start): writes are replicated, and KEYNOTIFY is told by the replica. */
  replica: StateReplica | undefined;
  /** The replication of the last write record() handed over (taken by the request's answer). */
  pending: Promise<'ok' | 'conflict'> | undefined;

  /** Durable storage refuses appends now: a write that could not be made durable is refused before it is made. */
  get storageFull(): boolean {
    return this.durable?.full === true;
  }

  /** Hand a write to durable storage; false without one. */
  record(w: StateWrite): boolean {
    if (this.replica) {
      this.pending = this.replica.replicate(w);
      return true;
    }
    if (!this.durable) return false;
    this.durable.record(w);
    return true;
  }

  /** A key changed here: its watchers are told (in cluster mode the replica tells them, once the write is replicated). */
  changed(key: Buffer, value: Buffer | undefined, version: Hlc): void {
    if (!this.replica) this.keyNotify.notify(key, value, version);
  }

  /** The version of the entry the last table call found. */
  lastVersion(): Hlc {
    const last = this.table.last;
    return { wall: last.versionWall, counter: last.versionCounter, node: this.clock.node };
  }

  /** A key the table found expired (and removed): counted, and its watchers told of the delete. */
  notifyExpired(key: Buffer): void {
    this.counters.expired++;
    if (this.keyNotify.watches(key)) this.keyNotify.notify(key, undefined, this.clock.tick());
  }

  /** A table result code that is not OK/NONE/MISMATCH, as the protocol's error answer. */
  tableError(r: number): Answer {
    switch (r) {
      case codes.ERR_FENCING_REQUIRED:
        return this.counters.error(ERRORS.fencingRequired);
      case codes.ERR_FENCING_STALE:
        return this.counters.error(ERRORS.fencingStale);
      case codes.ERR_NO_MEMORY:
        this.log.warn('state store: linear memory cannot grow; answering as over quota');
        return this.counters.error(ERRORS.quota);
      default:
        return this.counters.error(ERRORS.quota);
    }
  }
}
