/**
 * What the broker and its services keep across restarts, behind one interface with two
 * implementations: MemoryStorage (EDB_STORAGE=memory: in memory, saved only by the backup
 * on a graceful stop) and DurableStorage (EDB_STORAGE=durable: the message log plus LMDB).
 * One conformance suite (test/unit/storage-conformance.test.ts) runs against both.
 *
 * Writes are synchronous calls that return at once; `onDurable(cb)` runs `cb` once
 * everything written before the call is on disk (at once for memory). That is how an
 * acknowledgement waits for the disk without a promise per message.
 */
import type { Message } from '../mqtt/message.js';
import type { Subscription } from '../session/session.js';
import type { DurableCallback, GenerationInfo, LogEntry, LogMetrics, LogPosition } from './log.js';

/** Called once what it waited for is on disk (err: it could not be written); `arg` as passed to onDurable. Defined in log.ts (no import circle). */
export type { DurableCallback };

export interface WillRecord {
  message: Message;
  /** When it is due (ms since epoch). */
  dueAt: number;
  expirySeconds?: number;
  username?: string;
}

/** A persistent session, as stored. */
export interface SessionRecord {
  clientId: string;
  expiryInterval: number;
  /** When the offline session ends (ms since epoch); undefined while connected, or never. */
  expiresAt?: number;
  subscriptions: Subscription[];
  will?: WillRecord;
  /** [MQTT-5-4.3.3] QoS 2 packet ids received and answered with PUBREC, awaiting PUBREL. */
  incomingQos2: number[];
}

/**
 * A session's place in the log: `next` is the oldest message it has not acknowledged; `done`
 * lists QoS 2 messages past `next` already answered (PUBREC or PUBCOMP), which a replay must
 * not send again; `pubrel` the packet ids awaiting PUBCOMP; `sent` the QoS 2 messages sent
 * and not yet answered with PUBREC, with their packet ids (resent with DUP and the same id).
 */
export interface IteratorRecord {
  next: LogPosition;
  done: LogPosition[];
  pubrel: number[];
  sent?: SentQos2[];
  /**
   * Deliveries past `next` that a replay by the session's subscriptions would not make: a
   * shared subscription's copy (one member of the group got it) and retained messages sent to
   * a new subscription (stored as direct copies). Replayed as recorded.
   */
  direct?: DirectDelivery[];
}

/** [MQTT-5-4.3.3] a QoS 2 PUBLISH sent with `id`, awaiting PUBREC: a reconnect resends it with DUP and that id. */
export interface SentQos2 {
  pos: LogPosition;
  id: number;
  retain: boolean;
  ids?: number[];
}

export interface DirectDelivery {
  pos: LogPosition;
  qos: 1 | 2;
  retain: boolean;
  ids?: number[];
}

/** The will of a client connected now: published at the next start if the broker never saw the connection close (a crash). */
export interface LiveWillRecord {
  message: Message;
  /** Will Delay Interval (seconds). */
  delaySeconds: number;
  expirySeconds?: number;
  username?: string;
}

export interface StorageInfo {
  kind: 'memory' | 'durable';
  path?: string;
  generations: GenerationInfo[];
  log: LogMetrics;
  retained: number;
  sessions: number;
  stateOps: number;
  oldestStoredAt?: number;
  full: boolean;
}

export interface BrokerStorage {
  readonly kind: 'memory' | 'durable';

  retained(): Message[];
  /** [MQTT-5-3.3.1-6] an empty payload clears the topic. */
  setRetained(message: Message): void;
  clearRetained(): void;

  sessions(): SessionRecord[];
  setSession(record: SessionRecord): void;
  deleteSession(clientId: string): void;
  iterator(clientId: string): IteratorRecord | undefined;
  /**
   * `lazy`: acknowledgements need not wait for this write (onDurable does not). True for a
   * position that only moved forward over plain deliveries: if a crash loses it, the older one
   * on disk replays from earlier (QoS 1 may come twice), never past anything unacknowledged.
   */
  setIterator(clientId: string, it: IteratorRecord, lazy?: boolean): void;

  /**
   * Store a message once; throws StorageFullError when there is no room (answer 0x97).
   * `direct`: a copy only the sessions whose iterators list it will read (IteratorRecord.direct).
   */
  append(message: Message, direct?: boolean): LogPosition;
  read(from: LogPosition, max: number): { entries: LogEntry[]; next: LogPosition };
  readonly tail: LogPosition;
  /** Appends are refused now (disk full or EDB_STORAGE_MAX_BYTES reached). */
  readonly full: boolean;

  /** The state store: its last snapshot and the writes since. */
  stateLog(): { snapshot: Buffer | undefined; ops: Buffer[] };
  appendStateOp(op: Buffer): void;
  /** Replace the snapshot and forget the writes it includes. */
  compactState(snapshot: Buffer): void;

  /** Wills of connected clients (LiveWillRecord), by client id. */
  liveWills(): Map<string, LiveWillRecord>;
  setLiveWill(clientId: string, will: LiveWillRecord | undefined): void;

  document(name: string): Buffer | undefined;
  setDocument(name: string, data: Buffer | undefined): void;

  /**
   * `cb(err, arg)` once everything written so far is on disk. `arg` is handed back as given, so
   * a caller waiting for many writes (a PUBACK per message) can pass one function for all of
   * them instead of a closure each.
   */
  onDurable(cb: DurableCallback, arg?: number): void;
  flushed(): Promise<void>;
  info(): StorageInfo;
  close(): Promise<void>;
}
