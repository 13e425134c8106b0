/**
 * The state store service: answers the state-store protocol (docs/state-store.md,
 * /work/shared/specs/state-store.md) on the invoke topic, through the broker's hooks.
 *
 * The parts, each in its own file:
 *  - keyspace.ts      the table, clock, counts, KEYNOTIFY and durable log every path shares;
 *  - request.ts       a RESP request read into a command, arity and options (pure);
 *  - commands.ts      GET/SET/DEL/VDEL/KEYNOTIFY from a client, run against the table;
 *  - invoke.ts        the onPublish hook: response-topic checks and the answer's PUBLISH;
 *  - key-notify.ts    KEYNOTIFY registrations and notifications;
 *  - in-process.ts    the console's and the rules engine's reads and writes;
 *  - section.ts       the backup section / durable snapshot layout;
 *  - durable-log.ts   EDB_STORAGE=durable: the write log, compaction and the load at start.
 * This file wires them and owns the expiry sweep and the metrics.
 */
import type { Logger } from 'pino';
import type { BrokerApi } from '../broker/api.js';
import type { Config } from '../config/schema.js';
import type { SnapshotSection } from '../persistence/snapshot.js';
import type { BrokerStorage } from '../storage/store.js';
import { parseStateStoreSection, StateStoreAuthorizer } from './authorization.js';
import { StateCounters } from './counters.js';
import { DurableStateLog } from './durable-log.js';
import { HybridLogicalClock } from './hlc.js';
import { deleteKey, listKeys, readKey, readValue, writeKey, writeValue, type StateKeyInfo } from './in-process.js';
import { InvokeHandler } from './invoke.js';
import { KeyNotifyRegistry, type KeyListener } from './key-notify.js';
import { StateKeyspace, type StateReplica } from './keyspace.js';
import { restoreStateSection, saveStateSection } from './section.js';
import { createStateTable, type StateTable } from './table.js';

export { STATE_STORE_ID, INVOKE_TOPIC, RESERVED_PREFIX, notifyTopic, ERRORS } from './protocol.js';
export { MAX_REGISTRATIONS_PER_CLIENT } from './key-notify.js';
export type { StateKeyInfo } from './in-process.js';

const SWEEP_MAX_PER_TICK = 10_000;

export interface StateStoreMetrics {
  keys: number;
  bytes: number;
  memoryBytes: number | undefined;
  maxKeys: number;
  maxBytes: number;
  /** Requests by command ("GET", ..., "invalid" for requests that name none). */
  ops: Record<string, number>;
  /** `-ERR` answers by message. */
  errors: Record<string, number>;
  notifications: number;
  expired: number;
  keyNotifyRegistrations: number;
}

export interface StateStoreService {
  readonly table: StateTable;
  readonly clock: HybridLogicalClock;
  /** The `state` backup section (register it with the BackupManager). */
  snapshotSection(): SnapshotSection;
  metrics(): StateStoreMetrics;
  /** One line for the status page. */
  statusLine(): string;
  /**
   * The console's admin API (/api/state): keys in byte order from `after`, with a prefix.
   * Walks the whole table per page (fine for a console; not for a hot path).
   */
  listKeys(prefix: Buffer, after: Buffer | undefined, limit: number): { keys: StateKeyInfo[]; more: boolean };
  /** One key's value, version and expiry (0: none). */
  readKey(key: Buffer): { value: Buffer; version: string; expiresAt: number } | undefined;
  /** SET from the console: versioned and notified to watchers like an MQTT SET. */
  writeKey(key: Buffer, value: Buffer, ttlMs: number): { ok: true; version: string } | { ok: false; error: string };
  /**
   * The console's "watch a key": `listener` after each change of the key (the value after a
   * SET, undefined after DEL, VDEL or expiry), as KEYNOTIFY would tell a client; returns the
   * function that stops it.
   */
  watchKey(key: Buffer, listener: KeyListener): () => void;
  /** DEL from the console: true deleted, false absent. */
  deleteKey(key: Buffer): { ok: true; deleted: boolean } | { ok: false; error: string };
  /** Run the expiry sweep now (the timer does it every stateSweepIntervalMs). */
  sweep(): number;
  /**
   * EDB_STORAGE=durable: rebuild the table from the stored snapshot and the writes since
   * (before listeners open). Returns the keys loaded and the writes replayed.
   */
  loadFromStorage(): { keys: number; writes: number };
  /** EDB_STORAGE=memory after durable: take the table from that storage once (its snapshot and writes). */
  importFrom(storage: BrokerStorage): { keys: number; writes: number };
  /** Durable storage: store the whole table now as its snapshot (after a backup was imported). */
  checkpoint(): void;
  /** In-process read, no round trip (the rules engine's state()): the current value, or undefined. */
  read(key: Buffer): Buffer | undefined;
  /**
   * In-process SET (the rules engine's set_state): a new version, KEYNOTIFY notifications and
   * quotas as for a client's SET; `px` ms expiry. Returns "OK" or the error the request would get.
   */
  write(key: Buffer, value: Buffer, px?: number): string;
  /**
   * Cluster mode (before listeners open): the keyspace becomes this node's mirror of the
   * cluster-wide store `make` builds over it; writes are answered once it has them.
   */
  attachReplica(make: (space: StateKeyspace) => StateReplica): void;
  close(): Promise<void>;
}

export interface StateStoreOptions {
  /** "wasm" (default) or the Map reference. */
  table?: 'wasm' | 'map';
  /** Clock for expiry and versions (tests). */
  now?: () => number;
  /**
   * Durable storage: each write that changes the table is stored, and its answer sent only
   * once it is on disk (a SET answered OK survives a crash).
   */
  storage?: BrokerStorage;
}

export function createStateStoreService(broker: BrokerApi, config: Config, log: Logger, options: StateStoreOptions = {}): StateStoreService {
  const section = parseStateStoreSection(config.sections['stateStore']);
  const authorizer = new StateStoreAuthorizer(section.authorization);
  const now = options.now ?? Date.now;
  const clock = new HybridLogicalClock(section.nodeId ?? 'edb', now);
  const table = createStateTable(options.table ?? 'wasm');
  table.setLimits(config.stateMaxKeys, config.stateMaxBytes);
  const slog = log.child({ part: 'state' });
  const counters = new StateCounters();
  const keyNotify = new KeyNotifyRegistry(broker, counters);
  const save = (): Buffer => saveStateSection(table, clock, now());
  const restore = (data: Buffer): void => restoreStateSection(data, table, clock, now(), slog);
  const durable = options.storage ? new DurableStateLog(options.storage, save) : undefined;
  const space = new StateKeyspace(table, clock, counters, keyNotify, durable, now, slog);
  const invoke = new InvokeHandler(broker, space, authorizer);

  broker.addHooks({
    onPublish: (message, client) => invoke.onPublish(message, client),
    onDisconnect(client) {
      // [state-store: Notifications] registrations end when the client disconnects
      keyNotify.dropClient(client.clientId);
    },
  });

  function sweep(): number {
    const removed = table.sweep(now(), SWEEP_MAX_PER_TICK, (key) => space.notifyExpired(key));
    table.maintain();
    return removed;
  }

  const sweepTimer = setInterval(() => {
    try {
      sweep();
    } catch (err) {
      slog.error({ err: (err as Error).message }, 'state store: sweep failed');
    }
  }, config.stateSweepIntervalMs);
  sweepTimer.unref();

  return {
    table,
    clock,
    listKeys: (prefix, after, limit) => listKeys(space, prefix, after, limit),
    readKey: (key) => readKey(space, key),
    writeKey: (key, value, ttlMs) => writeKey(space, key, value, ttlMs),
    deleteKey: (key) => deleteKey(space, key),
    watchKey: (key, listener) => keyNotify.listen(key, listener),
    snapshotSection(): SnapshotSection {
      return {
        name: 'state',
        save,
        restore,
        reset() {
          table.clear();
        },
      };
    },
    checkpoint() {
      durable?.compact();
    },
    loadFromStorage() {
      if (!durable) return { keys: 0, writes: 0 };
      return durable.load(table, clock, restore, slog);
    },
    importFrom(storage) {
      return new DurableStateLog(storage, save).load(table, clock, restore, slog);
    },
    metrics(): StateStoreMetrics {
      const s = table.stats();
      return {
        keys: s.keys,
        bytes: s.dataBytes,
        memoryBytes: s.memoryBytes,
        maxKeys: config.stateMaxKeys,
        maxBytes: config.stateMaxBytes,
        ops: { ...counters.ops },
        errors: { ...counters.errors },
        notifications: counters.notifications,
        expired: counters.expired,
        keyNotifyRegistrations: keyNotify.registrations,
      };
    },
    statusLine(): string {
      const s = table.stats();
      const mib = (n: number) => (n / 1048576).toFixed(1);
      const mem = s.memoryBytes !== undefined ? `, ${mib(s.memoryBytes)} MiB of memory` : '';
      return `State store: ${s.keys} of ${config.stateMaxKeys} keys, ${mib(s.dataBytes)} of ${mib(config.stateMaxBytes)} MiB${mem}, ${keyNotify.registrations} key notifications`;
    },
    sweep,
    read: (key) => readValue(space, key),
    write: (key, value, px) => writeValue(space, key, value, px),
    attachReplica(make) {
      space.replica = make(space);
    },
    async close() {
      clearInterval(sweepTimer);
      // the next start loads one snapshot instead of replaying every write
      if (durable && durable.writesSinceCompaction > 0) durable.compact();
      keyNotify.clear();
    },
  };
}
