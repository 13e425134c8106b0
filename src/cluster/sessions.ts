/**
 * Persistent sessions cluster-wide (issue 12): a session resumes on whichever node its client
 * reconnects to, with its subscriptions and its QoS 1/2 messages not yet acknowledged.
 *
 * This is the JetStream backend of the storage interface (storage/store.ts, BrokerStorage)
 * for the session part; the broker keeps using DurableSession and SessionLog
 * (storage/sessions.ts) unchanged: a message is stored once, a session keeps a position.
 *  - messages: one stream, edb_<cluster>_session_msgs (subject edb.<cluster>.smsg,
 *    R EDB_CLUSTER_REPLICAS, kept EDB_STORAGE_RETENTION). A QoS 1/2 message that a
 *    persistent session anywhere in the cluster wants is published there once, by the node
 *    where it arrives, before it is delivered anywhere; its stream sequence (Message.clusterSeq)
 *    is its position, carried to the other nodes in the forwarded copy. The publisher's PUBACK /
 *    PUBREC waits for the stream's publish ack (a JetStream quorum).
 *  - records and positions: one key-value bucket, edb_<cluster>_sessions: `r.<id>` the session
 *    record (subscriptions, expiry, will, QoS 2 ids received) and the node holding it, `i.<id>`
 *    its iterator (oldest sequence not acknowledged, answered QoS 2 past it, PUBRELs pending),
 *    written by the holding node as the client acknowledges; `w.<node>.<id>` the will of a
 *    client connected on that node (published by another node if that node dies).
 *  - a QoS 2 message's stream record carries the publisher's packet id: a client whose node died
 *    after storing it and before writing the record naming the id sends it again; the node it
 *    resumes on finds it in the stream (loadResent) and does not deliver it twice.
 *  - every node watches the records: the subscriptions of every persistent session of the
 *    cluster (connected, offline, or left behind by a dead node) decide what is stored, so a
 *    message published while a session's node is down is still kept for it.
 *  - a client that connects on node C with a session held elsewhere: C asks the holding node
 *    to let it go (it disconnects the client with 0x8E, writes its last position and ends its
 *    copy without touching the bucket; a dead node does not answer), reads the record and
 *    position, reads the stream from that position and filters it by the session's
 *    subscriptions (as the local log's replay does: nats-server 2.9 allows one filter subject
 *    per consumer), installs the session (CONNACK with session present 1), and reads the stream
 *    once or twice more for what was stored while the subscriptions moved.
 * The single-node durable log stays the default; without EDB_CLUSTER_NATS none of this loads.
 */
import type { Logger } from 'pino';
import type { Msg, NatsConnection } from '@nats-io/nats-core';
import type { KV, KvEntry, KvWatchEntry } from '@nats-io/kv';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { ClientInfo } from '../broker/hooks.js';
import type { SessionLoader } from '../broker/core.js';
import type { Message } from '../mqtt/message.js';
import { RC } from '../mqtt/reason-codes.js';
import type { Delivery, Session } from '../session/session.js';
import { StorageFullError } from '../storage/errors.js';
import type { LogEntry, LogPosition } from '../storage/log.js';
import { DurableSession, DurableSessionStore, SessionLog, deliveryFor } from '../storage/sessions.js';
import type { BrokerStorage, DirectDelivery, DurableCallback, IteratorRecord, LiveWillRecord, SentQos2, SessionRecord, StorageInfo } from '../storage/store.js';
import { TopicTrie } from '../topics/trie.js';
import type { ClusterBroker } from './broker-view.js';
import type { ClusterStats } from './status.js';
import { watchBucket } from './watch.js';
import { decodeMessage, encodeMessage, keyTopic, topicKey } from './wire.js';

const FOREVER = 0xffffffff;
/** After a session moved here, the stream is read again at these delays for what was stored while its subscriptions moved. */
const CATCH_UP_MS = [1000, 3000];
/** A position written before the stream's end was known: "the end, once known". */
const TAIL_UNKNOWN = 0;

interface StoredRecord {
  v: 1;
  node: string;
  rec: Omit<SessionRecord, 'will'> & { will?: Omit<NonNullable<SessionRecord['will']>, 'message'> & { m: string } };
}

export function encodeRecord(rec: SessionRecord, node: string): string {
  const { will, ...rest } = rec;
  const out: StoredRecord = { v: 1, node, rec: rest };
  if (will) {
    const { message, ...w } = will;
    out.rec.will = { ...w, m: Buffer.from(encodeMessage(message, node)).toString('base64') };
  }
  return JSON.stringify(out);
}

export function decodeRecord(data: Uint8Array): { rec: SessionRecord; node: string } {
  const r = JSON.parse(Buffer.from(data).toString('utf8')) as StoredRecord;
  if (!r || typeof r.node !== 'string' || !r.rec || typeof r.rec.clientId !== 'string' || !Array.isArray(r.rec.subscriptions)) throw new Error('not a session record');
  const { will, ...rest } = r.rec;
  const rec: SessionRecord = { ...rest, incomingQos2: Array.isArray(rest.incomingQos2) ? rest.incomingQos2 : [] };
  if (will) {
    const { m, ...w } = will;
    rec.will = { ...w, message: decodeMessage(Buffer.from(m, 'base64')).message };
  }
  return { rec, node: r.node };
}

interface StoredWill {
  v: 1;
  node: string;
  /** The run of the node that wrote it (ClusterNode.startedAt): a will of an earlier run is a crashed connection's. */
  st: number;
  id: string;
  rec: Omit<LiveWillRecord, 'message'> & { m: string };
}

export function encodeWill(clientId: string, will: LiveWillRecord, node: string, st: number): string {
  const { message, ...rest } = will;
  const out: StoredWill = { v: 1, node, st, id: clientId, rec: { ...rest, m: Buffer.from(encodeMessage(message, node)).toString('base64') } };
  return JSON.stringify(out);
}

export function decodeWill(data: Uint8Array): { clientId: string; node: string; st: number; will: LiveWillRecord } {
  const r = JSON.parse(Buffer.from(data).toString('utf8')) as StoredWill;
  if (!r || typeof r.node !== 'string' || typeof r.id !== 'string' || typeof r.st !== 'number' || !r.rec || typeof r.rec.m !== 'string') throw new Error('not a will record');
  const { m, ...rest } = r.rec;
  return { clientId: r.id, node: r.node, st: r.st, will: { ...rest, message: decodeMessage(Buffer.from(m, 'base64')).message } };
}

/** A will whose node died is published once it has been seen dead this long (past the 4 s a node takes to be dropped). */
const ORPHAN_WILL_MS = 3000;
/** A node judges other nodes' wills only once it has been connected this long (it has heard every running node). */
const WILL_GRACE_MS = 5000;
/** A resent QoS 2 PUBLISH is looked for in the stream this far back (a client finds its node dead and reconnects within it). */
const RESENT_WINDOW_MS = 120_000;
const RESENT_SCAN_MAX = 200_000;

const idKey = (clientId: string): string => topicKey(clientId);
const willKey = (node: string, clientId: string): string => `w.${node}.${idKey(clientId)}`;
const recordKey = (clientId: string): string => `r.${idKey(clientId)}`;
const iteratorKey = (clientId: string): string => `i.${idKey(clientId)}`;

/**
 * BrokerStorage with the session part in JetStream; everything else (retained messages, the
 * state store's log, live wills, documents) is the node's own storage, as on one node.
 */
export class ClusterSessionStorage implements BrokerStorage {
  kv: KV | undefined;
  /** The stream's last sequence as far as this node knows (publish acks, forwarded copies, its info). */
  lastSeq = 0;
  tailKnown = false;
  /** What a session's restore reads (storage.read), filled from the stream by the loader. */
  reading: LogEntry[] | undefined;
  /** Client ids whose local session ends because the session went to another node: the bucket is left alone. */
  private readonly handedOver = new Set<string>();
  /** Client ids this node wrote a record for (a delete of any other id is not sent). */
  private readonly written = new Set<string>();
  /** Writes waiting for the bucket (not attached, or a failed write), latest per key; null: a delete. */
  private readonly waiting = new Map<string, string | null>();
  /** The newest write issued per key while one is in flight: a failed older write must not come back over a newer one. */
  private readonly issued = new Map<string, number>();
  private writeSeq = 0;
  private readonly lazy = new Map<string, IteratorRecord>();
  /**
   * Iterator writes that only moved forward: the session log coalesces them for 20 ms
   * (storage/sessions.ts LAZY_FLUSH_MS); they go to the bucket at the end of that turn (a lost
   * one replays from earlier: QoS 1 may come twice, QoS 2 positions are never lazy).
   */
  private lazyTimer: NodeJS.Immediate | undefined;
  private last: Promise<unknown> | undefined;
  private lastErrorLog = 0;
  /** Known records in the bucket (mirror), to skip deletes of ids the cluster never held. */
  hasRecord: (clientId: string) => boolean = () => false;
  /** This node's run (ClusterNode.startedAt), written with its clients' wills. */
  incarnation = 0;
  /** Client ids with a live will in the bucket under this node's name. */
  private readonly wills = new Set<string>();

  constructor(
    readonly local: BrokerStorage,
    private readonly node: string,
    private readonly log: Logger,
  ) {}

  /** Counts a failed JetStream write (set by ClusterSessions to the node's metrics). */
  countError: () => void = () => undefined;

  get kind(): 'memory' | 'durable' {
    return this.local.kind;
  }

  // ---------------------------------------------------------------- the session part

  sessions(): SessionRecord[] {
    return []; // loaded when their client connects (ClusterSessions.load)
  }

  setSession(record: SessionRecord): void {
    this.written.add(record.clientId);
    this.put(recordKey(record.clientId), encodeRecord(record, this.node), true);
  }

  deleteSession(clientId: string): void {
    this.lazy.delete(clientId);
    if (this.handedOver.delete(clientId)) return;
    if (!this.written.delete(clientId) && !this.hasRecord(clientId)) return;
    this.put(recordKey(clientId), null, true);
    this.put(iteratorKey(clientId), null, true);
  }

  /** The local session of `clientId` ends because it went elsewhere: no write to the bucket. */
  handOver(clientId: string): void {
    this.handedOver.add(clientId);
    this.written.delete(clientId);
    this.lazy.delete(clientId);
  }

  cancelHandOver(clientId: string): void {
    this.handedOver.delete(clientId);
  }

  /** Restore reads its position from the loader, not from here. */
  iterator(): IteratorRecord | undefined {
    return undefined;
  }

  setIterator(clientId: string, it: IteratorRecord, lazy = false): void {
    if (!this.tailKnown && it.next.offset === this.tail.offset) it = { ...it, next: { gen: 0, offset: TAIL_UNKNOWN } };
    if (lazy) {
      this.lazy.set(clientId, it);
      this.lazyTimer ??= setImmediate(() => this.flushLazy());
      return;
    }
    this.lazy.delete(clientId);
    this.put(iteratorKey(clientId), JSON.stringify(it), true);
  }

  flushLazy(): void {
    if (this.lazyTimer) clearImmediate(this.lazyTimer);
    this.lazyTimer = undefined;
    const list = [...this.lazy];
    this.lazy.clear();
    for (const [id, it] of list) this.put(iteratorKey(id), JSON.stringify(it), false);
  }

  /** Messages reach a session's position only through the stream (ClusterSessions.persist). */
  append(message: Message, direct = false): LogPosition {
    if (direct || message.clusterSeq === undefined) throw new StorageFullError('not in the cluster stream');
    return { gen: 0, offset: message.clusterSeq };
  }

  read(from: LogPosition, max: number): { entries: LogEntry[]; next: LogPosition } {
    const list = this.reading ?? [];
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.pos.offset < from.offset) lo = mid + 1;
      else hi = mid;
    }
    const entries = list.slice(lo, lo + max);
    const next = entries.length > 0 ? entries[entries.length - 1]!.next : from;
    return { entries, next };
  }

  get tail(): LogPosition {
    return { gen: 0, offset: this.lastSeq + 1 };
  }

  noteSeq(seq: number): void {
    if (seq > this.lastSeq) this.lastSeq = seq;
  }

  get full(): boolean {
    return this.local.full;
  }

  /** The stream's end is known (attached): positions written meanwhile get it. */
  attached(kv: KV, lastSeq: number): void {
    this.kv = kv;
    this.noteSeq(lastSeq);
    this.tailKnown = true;
    this.retry();
  }

  /** Write what waited (not attached, or failed). */
  retry(): void {
    if (!this.kv || this.waiting.size === 0) return;
    const list = [...this.waiting];
    this.waiting.clear();
    for (const [key, value] of list) {
      let v = value;
      if (v !== null && key.startsWith('i.')) {
        const it = JSON.parse(v) as IteratorRecord;
        if (it.next.offset === TAIL_UNKNOWN) v = JSON.stringify({ ...it, next: this.tail });
      }
      this.put(key, v, false);
    }
  }

  private put(key: string, value: string | null, track: boolean): void {
    const kv = this.kv;
    const seq = ++this.writeSeq;
    this.issued.set(key, seq);
    if (!kv) {
      this.waiting.set(key, value);
      return;
    }
    const p = (value === null ? kv.delete(key) : kv.put(key, value)).then(
      () => {
        if (this.issued.get(key) === seq) this.issued.delete(key);
      },
      (err: Error) => {
        this.countError();
        // only the newest write of a key is written again: a will's PUT that failed after its
        // DELETE (both sent while NATS was going away) would otherwise bring the will back
        if (this.issued.get(key) === seq) this.waiting.set(key, value);
        const now = Date.now();
        if (now - this.lastErrorLog >= 10_000) {
          this.lastErrorLog = now;
          this.log.warn({ err: err.message, key }, 'cluster: a session record could not be written to JetStream; it will be written again');
        }
        throw err;
      },
    );
    p.catch(() => undefined);
    if (track) {
      const tracked = p.finally(() => {
        if (this.last === tracked) this.last = undefined;
      });
      tracked.catch(() => undefined);
      this.last = tracked;
    }
  }

  /** Every tracked write so far is in the bucket (or failed). */
  async settled(): Promise<void> {
    for (let i = 0; i < 100 && this.last; i++) await this.last.catch(() => undefined);
  }

  onDurable(cb: DurableCallback, arg = 0): void {
    const last = this.last;
    this.local.onDurable((err) => {
      if (err) return cb(err, arg);
      if (!last) return cb(undefined, arg);
      last.then(
        () => cb(undefined, arg),
        (e: Error) => cb(e, arg),
      );
    });
  }

  // ---------------------------------------------------------------- the node's own storage

  retained(): Message[] {
    return this.local.retained();
  }
  setRetained(message: Message): void {
    this.local.setRetained(message);
  }
  clearRetained(): void {
    this.local.clearRetained();
  }
  stateLog(): { snapshot: Buffer | undefined; ops: Buffer[] } {
    return this.local.stateLog();
  }
  appendStateOp(op: Buffer): void {
    this.local.appendStateOp(op);
  }
  compactState(snapshot: Buffer): void {
    this.local.compactState(snapshot);
  }
  liveWills(): Map<string, LiveWillRecord> {
    return new Map(); // in the bucket: a node that died has its clients' wills published by another (ClusterSessions.tick)
  }
  /**
   * A connected client's will: in the sessions bucket under this node's name (w.<node>.<id>),
   * so that if this node dies without closing the connection another node publishes it.
   */
  setLiveWill(clientId: string, will: LiveWillRecord | undefined): void {
    if (!will) {
      if (this.wills.delete(clientId)) this.put(willKey(this.node, clientId), null, true);
      return;
    }
    this.wills.add(clientId);
    this.put(willKey(this.node, clientId), encodeWill(clientId, will, this.node, this.incarnation), true);
  }
  document(name: string): Buffer | undefined {
    return this.local.document(name);
  }
  setDocument(name: string, data: Buffer | undefined): void {
    this.local.setDocument(name, data);
  }
  async flushed(): Promise<void> {
    this.flushLazy();
    await this.local.flushed();
    await this.settled();
  }
  info(): StorageInfo {
    return this.local.info();
  }
  async close(): Promise<void> {
    this.flushLazy();
    await this.settled();
  }
}

/** SessionLog over the cluster storage: a message has its position once the stream has it. */
export class ClusterSessionLog extends SessionLog {
  /** Sessions that just moved here: the sequences delivered to them live (their catch-up skips these). */
  readonly catchingUp = new Map<Session, Set<number>>();
  /** Copies of retained messages stored in the stream for one session's new subscription (ClusterSessions.storeRetained). */
  readonly retainedCopies = new WeakSet<Message>();

  constructor(
    readonly clusterStorage: ClusterSessionStorage,
    log: Logger,
  ) {
    super(clusterStorage, log);
  }

  override store(message: Message, direct = false): boolean {
    if (this.positions.has(message)) return true;
    const seq = message.clusterSeq;
    if (direct || seq === undefined) return false; // held in memory only (see docs/cluster.md)
    this.positions.set(message, { gen: 0, offset: seq });
    this.clusterStorage.noteSeq(seq);
    return true;
  }

  /**
   * A retained message for a new subscription of a persistent session: tracked at its position
   * when ClusterSessions.storeRetained stored a copy of it in the stream (a direct copy, listed
   * in the session's position), so a resume on another node sends it again until acknowledged;
   * otherwise (NATS unreachable, or the stream refused it) delivered from memory only.
   */
  override reserveRetained(session: Session, d: Delivery): Delivery {
    const m = d.message;
    if (d.qos === 0 || session.expiryInterval === 0 || !(session instanceof DurableSession) || !this.retainedCopies.has(m) || m.clusterSeq === undefined) return d;
    this.retainedCopies.delete(m);
    this.positions.set(m, { gen: 0, offset: m.clusterSeq });
    this.clusterStorage.noteSeq(m.clusterSeq);
    this.writes++;
    session.expectDirect(m);
    session.reserve(d);
    return d;
  }

  override storeFor(session: Session, message: Message, shared = false): void {
    super.storeFor(session, message, shared);
    const seq = message.clusterSeq;
    if (seq === undefined || session.expiryInterval === 0) return;
    this.catchingUp.get(session)?.add(seq);
    // a shared delivery is named in the session's position, written before the publisher's ack
    if (shared) this.writes++;
  }
}

interface MirrorEntry {
  filters: { filter: string; group: string | undefined }[];
  node: string;
  expiresAt: number | undefined;
  expiryInterval: number;
  /** When this node first saw it held by no running node. */
  orphanSince?: number;
}

interface WillEntry {
  clientId: string;
  node: string;
  st: number;
  rev: number;
  will: LiveWillRecord;
  /** When this node first saw its node's run gone. */
  orphanSince?: number;
  claiming?: boolean;
}

export interface ClusterSessionsOptions {
  cluster: string;
  node: string;
  replicas: number;
  /** Stream retention (ms, 0: no limit). */
  retentionMs: number;
  maxQueued: number;
}

/** The cluster's persistent sessions as one node serves them (see the file comment). */
export class ClusterSessions implements SessionLoader {
  readonly storage: ClusterSessionStorage;
  readonly sessionLog: ClusterSessionLog;
  readonly store: DurableSessionStore;
  readonly counts = { stored: 0, storeErrors: 0, resumed: 0, caughtUp: 0, resentFound: 0, imported: 0, retainedStored: 0 };
  /**
   * Set by server.ts when the node has a local durable log (EDB_STORAGE=durable): the
   * persistent sessions it holds from running alone, imported into the cluster once.
   */
  importFrom: { load(): DurableSession[]; forget(clientId: string): void } | undefined;
  private broker: ClusterBroker | undefined;
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private jsm: JetStreamManager | undefined;
  private kv: KV | undefined;
  private readonly mirror = new Map<string, MirrorEntry>();
  /** Live wills of the cluster's clients (w.<node>.<id>), by key. */
  private readonly willMirror = new Map<string, WillEntry>();
  private readonly trie = new TopicTrie<true>();
  private readonly pending = new WeakMap<Message, Promise<boolean>>();
  /** Per client id: its QoS 2 messages in the stream that a node which died may not have answered (loadResent). */
  private readonly resent = new Map<string, { until: number; ids: Map<number, { seq: number; topic: string; payload: Buffer }> }>();
  private attaching = false;
  private closed = false;
  private watcher: { stop(): void } | undefined;
  private willWatcher: { stop(): void } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastErrorLog = 0;
  stateText = 'connecting';
  private forward: (m: Message) => void = () => undefined;
  private connected: () => boolean = () => false;
  private alive: (node: string) => boolean = () => false;
  private incarnation: (node: string) => number | undefined = () => undefined;
  private connectedFor: () => number = () => -1;
  private hold: (m: Message) => boolean = () => false;
  private outboxBusy: () => boolean = () => false;
  private stats: Pick<ClusterStats, 'jetstreamErrors' | 'takeovers' | 'orphanWills' | 'watchRestarts'> = { jetstreamErrors: 0, takeovers: 0, orphanWills: 0, watchRestarts: 0 };

  constructor(
    local: BrokerStorage,
    readonly opts: ClusterSessionsOptions,
    private readonly log: Logger,
  ) {
    this.storage = new ClusterSessionStorage(local, opts.node, log);
    this.storage.countError = () => void this.stats.jetstreamErrors++;
    this.storage.hasRecord = (id) => this.mirror.has(id);
    this.sessionLog = new ClusterSessionLog(this.storage, log);
    this.store = new DurableSessionStore(this.sessionLog);
  }

  get bucketName(): string {
    return `edb_${this.opts.cluster}_sessions`;
  }
  get streamName(): string {
    return `edb_${this.opts.cluster}_session_msgs`;
  }
  get subject(): string {
    return `edb.${this.opts.cluster}.smsg`;
  }
  /** Persistent sessions in the cluster (records in the bucket). */
  get sessionCount(): number {
    return this.mirror.size;
  }

  /** Wire to the node (before it starts). */
  bind(
    broker: ClusterBroker,
    parts: {
      stats: ClusterStats;
      forward: (m: Message) => void;
      connected: () => boolean;
      alive: (node: string) => boolean;
      /** The run (startedAt) of a running node, undefined for one not running. */
      incarnation: (node: string) => number | undefined;
      /** Milliseconds since this node (re)connected to NATS, -1 while it is not. */
      connectedFor: () => number;
      /** Keep a message of the broker's own in the node's outbox until NATS is back (false: full). */
      hold: (m: Message) => boolean;
      outboxBusy: () => boolean;
    },
  ): void {
    this.broker = broker;
    this.stats = parts.stats;
    this.forward = parts.forward;
    this.connected = parts.connected;
    this.alive = parts.alive;
    this.incarnation = parts.incarnation;
    this.connectedFor = parts.connectedFor;
    this.hold = parts.hold;
    this.outboxBusy = parts.outboxBusy;
    this.storage.incarnation = parts.incarnation(this.opts.node) ?? 0;
    broker.sessionLoader = this;
  }

  async attach(nc: NatsConnection): Promise<void> {
    if (this.attaching || this.kv) return;
    this.attaching = true;
    this.nc = nc;
    const { Kvm } = await import('@nats-io/kv');
    const { jetstream, jetstreamManager } = await import('@nats-io/jetstream');
    let wait = 250;
    while (!this.closed && !nc.isClosed()) {
      try {
        const jsm = await jetstreamManager(nc);
        let last = 0;
        try {
          last = (await jsm.streams.info(this.streamName)).state.last_seq;
        } catch {
          const created = await jsm.streams.add({
            name: this.streamName,
            subjects: [this.subject],
            num_replicas: this.opts.replicas,
            max_age: this.opts.retentionMs * 1_000_000,
            description: 'Edge Data Broker: QoS 1/2 messages persistent sessions need, stored once',
          });
          last = created.state.last_seq;
        }
        const kv = await new Kvm(nc).create(this.bucketName, { replicas: this.opts.replicas, history: 1, description: 'Edge Data Broker: persistent sessions (r.<id> record, i.<id> position)' });
        this.js = jetstream(nc);
        await this.importLocal(kv, this.js, last);
        const watchOpts = { bucket: this.bucketName, log: this.log, stats: this.stats, onError: (what: string, err: unknown) => this.error(what, err) };
        this.watcher = await watchBucket(nc, kv, { ...watchOpts, what: 'the sessions bucket', key: 'r.>' }, (e) => this.applyMirror(e));
        this.willWatcher = await watchBucket(nc, kv, { ...watchOpts, what: 'the wills', key: 'w.>' }, (e) => this.applyWill(e));
        this.jsm = jsm;
        this.kv = kv;
        this.storage.attached(kv, last);
        this.stateText = 'ready';
        this.timer = setInterval(() => this.tick(), 2000);
        this.timer.unref();
        this.log.info({ bucket: this.bucketName, stream: this.streamName, replicas: this.opts.replicas }, `cluster: persistent sessions in JetStream bucket ${this.bucketName} and stream ${this.streamName} (R${this.opts.replicas})`);
        break;
      } catch (err) {
        this.error(`sessions bucket or stream not available (JetStream may still be electing a leader); retrying`, err);
        await new Promise((r) => setTimeout(r, wait).unref());
        wait = Math.min(wait * 2, 4000);
      }
    }
    this.attaching = false;
  }

  /**
   * The persistent sessions of the node's local log (it ran alone with EDB_STORAGE=durable),
   * once: each goes into the cluster's bucket with its queued and in-flight QoS 1/2 messages
   * (stored in the stream as copies for it alone, named in its position), then leaves the
   * local log, so a restart does not import it again. A client id the cluster already holds
   * a session for keeps the cluster's (the local one is dropped).
   */
  private async importLocal(kv: KV, js: JetStreamClient, last: number): Promise<void> {
    const from = this.importFrom;
    if (!from) return;
    let list: DurableSession[];
    try {
      list = from.load();
    } catch (err) {
      this.error('reading the local durable log sessions to import', err);
      return;
    }
    if (list.length === 0) return;
    let imported = 0;
    let messages = 0;
    let kept = 0;
    for (const s of list) {
      const id = s.clientId;
      if (s.expiryInterval === 0) {
        from.forget(id);
        continue;
      }
      const existing = await kv.get(recordKey(id));
      if (existing && existing.operation === 'PUT') {
        kept++;
        from.forget(id);
        continue;
      }
      let first: number | undefined;
      const store = async (m: Message): Promise<{ gen: number; offset: number }> => {
        const copy: Message = { ...m };
        delete copy.wire;
        delete copy.clusterSeq;
        const ack = await js.publish(this.subject, encodeMessage(copy, this.opts.node, undefined, { direct: true }), { timeout: 5000 });
        first ??= ack.seq;
        this.storage.noteSeq(ack.seq);
        return { gen: 0, offset: ack.seq };
      };
      const direct: DirectDelivery[] = [];
      const sent: SentQos2[] = [];
      const pubrel: number[] = [];
      // in flight first (older), then queued: the order they would have been sent in
      for (const e of s.inflight.values()) {
        if (e.state === 'pubrel') {
          pubrel.push(e.packetId);
          continue;
        }
        const pos = await store(e.message);
        if (e.qos === 2) sent.push({ pos, id: e.packetId, retain: e.retain, ...(e.subscriptionIds ? { ids: e.subscriptionIds } : {}) });
        else direct.push({ pos, qos: 1, retain: e.retain, ...(e.subscriptionIds ? { ids: e.subscriptionIds } : {}) });
      }
      for (let i = s.queueHead; i < s.queue.length; i++) {
        const d = s.queue[i]!;
        if (d.qos === 0) continue;
        const pos = await store(d.message);
        direct.push({ pos, qos: d.qos, retain: d.retain, ...(d.subscriptionIds ? { ids: d.subscriptionIds } : {}) });
      }
      const it: IteratorRecord = { next: { gen: 0, offset: first ?? Math.max(last, this.storage.lastSeq) + 1 }, done: [], pubrel };
      if (sent.length > 0) it.sent = sent;
      if (direct.length > 0) it.direct = direct;
      await kv.put(iteratorKey(id), JSON.stringify(it));
      await kv.put(recordKey(id), encodeRecord(s.record(), this.opts.node));
      from.forget(id);
      imported++;
      messages += direct.length + sent.length;
    }
    this.counts.imported += imported;
    this.log.info(
      { imported, messages, kept },
      `cluster: ${imported} persistent sessions of this node's local durable log imported into the cluster (${messages} queued messages)` + (kept > 0 ? `; ${kept} not imported: the cluster holds a session with the same client id` : ''),
    );
  }

  private applyWill(e: KvWatchEntry): void {
    if (e.operation !== 'PUT') {
      this.willMirror.delete(e.key);
      return;
    }
    try {
      const w = decodeWill(e.value);
      this.willMirror.set(e.key, { clientId: w.clientId, node: w.node, st: w.st, rev: e.revision, will: w.will });
    } catch (err) {
      this.willMirror.delete(e.key);
      this.error(`a malformed will record under ${e.key}`, err);
    }
  }

  /**
   * Wills of connections a node left open when it died (kill -9, power loss) or that an earlier
   * run of a restarted node left: published once by one node (the first whose compare-and-set
   * delete of the key succeeds), after the Will Delay; a session resumed on another node
   * within the delay cancels it [MQTT-5-3.1.3-9].
   */
  private orphanWills(now: number): void {
    const kv = this.kv;
    if (!kv || this.willMirror.size === 0 || this.connectedFor() < WILL_GRACE_MS) return;
    for (const [key, e] of this.willMirror) {
      if (e.claiming) continue;
      if (this.incarnation(e.node) === e.st) {
        delete e.orphanSince;
        continue;
      }
      e.orphanSince ??= now;
      if (now - e.orphanSince < ORPHAN_WILL_MS) continue;
      const rec = this.mirror.get(e.clientId);
      const delay = Math.min(e.will.delaySeconds, rec?.expiryInterval ?? 0);
      const resumed = rec !== undefined && rec.node !== e.node;
      if (delay > 0 && resumed) void this.claimWill(kv, key, e, false);
      else if (now >= e.orphanSince + delay * 1000) void this.claimWill(kv, key, e, true);
    }
  }

  private async claimWill(kv: KV, key: string, e: WillEntry, publish: boolean): Promise<void> {
    e.claiming = true;
    try {
      await kv.delete(key, { previousSeq: e.rev });
    } catch {
      e.claiming = false; // another node took it (or JetStream did not answer: tried again)
      return;
    }
    this.willMirror.delete(key);
    if (!publish) {
      this.log.info({ clientId: e.clientId, node: e.node }, `cluster: the will of ${e.clientId} (left by node ${e.node}) is cancelled: its session resumed on another node within the Will Delay`);
      return;
    }
    this.stats.orphanWills++;
    this.log.info({ clientId: e.clientId, node: e.node, topic: e.will.message.topic }, `cluster: node ${e.node} stopped without closing ${e.clientId}; its will is published here`);
    try {
      this.broker?.recoverWill(e.clientId, { message: e.will.message, expirySeconds: e.will.expirySeconds, username: e.will.username }, 0);
    } catch (err) {
      this.error(`publishing the will of ${e.clientId}`, err);
    }
  }

  private applyMirror(e: KvWatchEntry): void {
    const id = keyTopic(e.key.slice(2));
    const old = this.mirror.get(id);
    if (old) for (const f of old.filters) this.trie.remove(f.filter, id, f.group);
    if (e.operation !== 'PUT') {
      this.mirror.delete(id);
      return;
    }
    try {
      const { rec, node } = decodeRecord(e.value);
      const filters = rec.expiryInterval > 0 ? rec.subscriptions.filter((s) => s.qos > 0).map((s) => ({ filter: s.filter, group: s.shareGroup })) : [];
      for (const f of filters) this.trie.add(f.filter, id, true, f.group);
      this.mirror.set(id, { filters, node, expiresAt: rec.expiresAt, expiryInterval: rec.expiryInterval });
    } catch (err) {
      this.mirror.delete(id);
      this.error(`a malformed session record under ${e.key}`, err);
    }
  }

  /** Every 2 s: the stream's end, writes that waited, and sessions whose node is gone past their expiry. */
  private tick(): void {
    this.storage.retry();
    this.orphanWills(Date.now());
    const jsm = this.jsm;
    if (jsm && this.connected()) {
      jsm.streams.info(this.streamName).then(
        (i) => this.storage.noteSeq(i.state.last_seq),
        () => undefined,
      );
    }
    const now = Date.now();
    for (const [id, e] of this.mirror) {
      const held = e.node === this.opts.node ? this.broker?.sessions.has(id) === true : this.alive(e.node);
      if (held) {
        delete e.orphanSince;
        continue;
      }
      e.orphanSince ??= now;
      const due = e.expiresAt ?? (e.expiryInterval >= FOREVER ? Infinity : e.orphanSince + e.expiryInterval * 1000);
      if (due <= now && this.kv) {
        // [MQTT-5-3.1.2-23] its node is gone and nobody resumed it in time: it ends
        this.log.info({ clientId: id, node: e.node }, 'cluster: a persistent session left by a stopped node expired');
        this.mirror.delete(id);
        this.kv.delete(recordKey(id)).catch(() => undefined);
        this.kv.delete(iteratorKey(id)).catch(() => undefined);
      }
    }
  }

  // ---------------------------------------------------------------- publish side

  /** Does a persistent session anywhere in the cluster want this QoS 1/2 message? */
  private wanted(message: Message): boolean {
    if (this.broker?.needsStorage(message)) return true;
    if (this.mirror.size === 0) return false;
    let found = false;
    this.trie.match(message.topic, {
      subscription: () => {
        found = true;
      },
      shared: () => {
        found = true;
      },
    });
    return found;
  }

  /**
   * From the onPublish hook: a message a persistent session wants is held back (true) until
   * the stream has it, then routed here and forwarded with its sequence.
   */
  intercept(message: Message, publisher: ClientInfo | undefined, own = false): boolean {
    if (message.qos === 0 || message.clusterSeq !== undefined || message.fromNode !== undefined || !this.broker) return false;
    if (message.topic.startsWith('$SYS')) return false;
    if (publisher !== undefined && message.inboundQos2Id !== undefined) {
      const seq = this.takeResent(message);
      if (seq !== undefined) {
        // stored (and delivered) by the node that died before its PUBREC: not a second message [MQTT-5-4.3.3-10]
        this.counts.resentFound++;
        this.log.info({ clientId: message.senderId, packetId: message.inboundQos2Id, seq }, `cluster: a QoS 2 PUBLISH ${message.senderId} sent again is in the session stream already (at ${seq}); not delivered twice`);
        this.pending.set(message, Promise.resolve(true));
        return true;
      }
    }
    if (!this.wanted(message)) return false;
    // the broker's own message (a will, a rule's output) while NATS is unreachable: it waits
    // in the outbox, delivered nowhere until the stream has it
    if (own && (!this.connected() || this.outboxBusy()) && this.hold(message)) return true;
    const p = this.persist(message, publisher !== undefined, own);
    this.pending.set(message, p);
    return true;
  }

  stored(message: Message): Promise<boolean> | undefined {
    return this.pending.get(message);
  }

  /** From the outbox, NATS back: store and deliver a held message of the broker's own (false: JetStream failed; it stays held). */
  async storeHeld(message: Message): Promise<boolean> {
    if (this.wanted(message)) {
      try {
        const js = this.js;
        if (!js || !this.connected()) return false;
        const ack = await js.publish(this.subject, encodeMessage(message, this.opts.node), { timeout: 5000 });
        message.clusterSeq = ack.seq;
        this.storage.noteSeq(ack.seq);
        this.counts.stored++;
      } catch (err) {
        this.counts.storeErrors++;
        this.stats.jetstreamErrors++;
        this.error('a message from the outbox could not be stored in JetStream yet', err);
        return false;
      }
    }
    try {
      this.forward(message);
      this.broker!.routeLocal(message, undefined);
    } catch (err) {
      this.error('routing a stored message', err);
    }
    return true;
  }

  /**
   * Before the SUBACK of a persistent session's SUBSCRIBE: each QoS 1/2 retained message it gets
   * is stored in the stream as a direct copy for it (as the single-node log stores one), so
   * its position names it and a resume on any node sends it until the client acknowledges it.
   * Undefined when there is nothing to store (or NATS is unreachable: then from memory only).
   */
  storeRetained(session: Session, list: Delivery[]): Promise<Delivery[]> | undefined {
    const js = this.js;
    if (session.expiryInterval === 0 || !js || !this.connected() || !list.some((d) => d.qos > 0)) return undefined;
    return Promise.all(
      list.map(async (d) => {
        if (d.qos === 0) return d;
        const copy: Message = { ...d.message };
        delete copy.wire;
        delete copy.inboundQos2Id;
        delete copy.clusterSeq;
        try {
          const ack = await js.publish(this.subject, encodeMessage(copy, this.opts.node, undefined, { direct: true }), { timeout: 5000 });
          copy.clusterSeq = ack.seq;
          this.storage.noteSeq(ack.seq);
          this.sessionLog.retainedCopies.add(copy);
          this.counts.retainedStored++;
          return { ...d, message: copy };
        } catch (err) {
          this.counts.storeErrors++;
          this.stats.jetstreamErrors++;
          this.error('a retained message for a persistent session could not be stored in JetStream; delivered from memory only', err);
          return d;
        }
      }),
    );
  }

  private async persist(message: Message, fromClient: boolean, own = false): Promise<boolean> {
    try {
      const js = this.js;
      if (!js || !this.connected()) throw new Error('not connected to NATS');
      const ack = await js.publish(this.subject, encodeMessage(message, this.opts.node, undefined, { qos2Id: true }), { timeout: 5000 });
      message.clusterSeq = ack.seq;
      this.storage.noteSeq(ack.seq);
      this.counts.stored++;
    } catch (err) {
      this.counts.storeErrors++;
      this.stats.jetstreamErrors++;
      this.error('a message for a persistent session could not be stored in JetStream', err);
      // a client's PUBLISH is refused (it sends it again); a message of the broker's own (a
      // will, a rule's output) waits in the outbox (when full: delivered without the stream)
      if (fromClient) return false;
      if (own && this.hold(message)) return false;
    }
    try {
      this.forward(message);
      this.broker!.routeLocal(message, undefined);
    } catch (err) {
      this.error('routing a stored message', err);
    }
    return message.clusterSeq !== undefined;
  }

  // ---------------------------------------------------------------- resuming here

  /** Before CONNACK (SessionLoader): bring a session held elsewhere, or left in the bucket. */
  async load(clientId: string, clean: boolean): Promise<void> {
    if (clean || !this.kv || !this.connected() || !this.broker) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the cluster did not answer in 10 s')), 10_000);
    });
    try {
      await Promise.race([this.loadNow(clientId), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async getRecord(clientId: string): Promise<{ rec: SessionRecord; node: string; created: number } | undefined> {
    const e: KvEntry | null = await this.kv!.get(recordKey(clientId));
    if (!e || e.operation !== 'PUT') return undefined;
    return { ...decodeRecord(e.value), created: e.created.getTime() };
  }

  private async loadNow(clientId: string): Promise<void> {
    const broker = this.broker!;
    // the watch of the bucket answers most connections without a round trip: no record of
    // this id in the cluster, or one this node holds
    const known = this.mirror.get(clientId);
    if (!known || (known.node === this.opts.node && broker.sessions.has(clientId))) return;
    let found = await this.getRecord(clientId);
    if (!found) return;
    const local = broker.sessions.get(clientId);
    if (found.node === this.opts.node && local) return; // held here already
    if (found.node !== this.opts.node) {
      await this.release(found.node, clientId);
      found = await this.getRecord(clientId);
      if (!found) return;
    }
    const { rec } = found;
    const now = Date.now();
    if (rec.expiresAt !== undefined && rec.expiresAt <= now) {
      this.storage.deleteSession(clientId);
      return;
    }
    const ie = await this.kv!.get(iteratorKey(clientId));
    let it = ie && ie.operation === 'PUT' ? (JSON.parse(Buffer.from(ie.value).toString('utf8')) as IteratorRecord) : undefined;
    if (it && it.next.offset === TAIL_UNKNOWN) it = { ...it, next: this.storage.tail };
    let entries: LogEntry[] = [];
    let last = this.storage.lastSeq;
    if (it) ({ entries, last } = await this.readStream(it.next.offset));
    // its QoS 2 messages stored after its record was written (a node that died before the PUBREC)
    await this.loadResent(clientId, found.created);
    if (broker.client(clientId)) return; // connected here meanwhile (a slow load that timed out)
    const s = new DurableSession(clientId, this.sessionLog);
    this.storage.reading = entries;
    let queued: number;
    try {
      queued = s.restore(rec, it, this.opts.maxQueued, now);
    } finally {
      this.storage.reading = undefined;
    }
    if (broker.sessions.get(clientId)) this.storage.handOver(clientId); // a stale copy here is replaced, the bucket kept
    broker.restoreSession(s);
    this.sessionLog.catchingUp.set(s, new Set());
    this.counts.resumed++;
    this.log.info({ clientId, from: found.node, queued, position: it?.next.offset }, `cluster: session ${clientId} resumed here (it was on node ${found.node}), ${queued} messages queued`);
    void this.catchUp(s, last, 0);
  }

  /** Ask the node holding the session to let it go; a node that is gone does not answer. */
  private async release(node: string, clientId: string): Promise<void> {
    const nc = this.nc;
    if (!nc || !this.alive(node)) return;
    try {
      await nc.request(`edb.${this.opts.cluster}.release.${node}`, JSON.stringify({ id: clientId, n: this.opts.node }), { timeout: 3000 });
    } catch (err) {
      this.error(`node ${node} did not release session ${clientId}; resuming from its last stored position`, err);
    }
  }

  /** Subject edb.<cluster>.release.<this node>: another node resumes a session held here. */
  async onRelease(m: Msg): Promise<void> {
    const broker = this.broker;
    let req: { id: string; n: string };
    try {
      req = m.json<{ id: string; n: string }>();
    } catch {
      return;
    }
    if (!broker || typeof req.id !== 'string') return;
    const id = req.id;
    if (broker.client(id)) {
      this.stats.takeovers++;
      broker.disconnectClient(id, RC.SESSION_TAKEN_OVER, `session taken over on node ${req.n}`);
      for (let i = 0; i < 100 && broker.client(id); i++) await new Promise((r) => setTimeout(r, 10));
    }
    if (broker.sessions.has(id)) {
      // its last position and record, then its copy here ends without touching the bucket
      this.sessionLog.flush();
      this.storage.flushLazy();
      await this.storage.settled();
      this.storage.handOver(id);
      if (!broker.endSession(id)) this.storage.cancelHandOver(id);
    }
    m.respond(JSON.stringify({ ok: true }));
  }

  /**
   * The QoS 2 messages this client published that the stream holds since its record was last
   * written (at most RESENT_WINDOW_MS back): a node that died after storing one and before
   * writing the record naming its packet id leaves the client sending it again, with that id,
   * to the node it resumes on. Kept for RESENT_WINDOW_MS, used by intercept().
   */
  private async loadResent(clientId: string, since: number): Promise<void> {
    const jsm = this.jsm!;
    const js = this.js!;
    const end = (await jsm.streams.info(this.streamName)).state.last_seq;
    if (end === 0) return;
    const { DeliverPolicy } = await import('@nats-io/jetstream');
    const start = Math.max(since - 1000, Date.now() - RESENT_WINDOW_MS);
    const consumer = await js.consumers.get(this.streamName, { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(start).toISOString() });
    const found = new Map<number, { seq: number; topic: string; payload: Buffer }>();
    let read = 0;
    try {
      let seq = 0;
      while (seq < end && read < RESENT_SCAN_MAX) {
        const batch = await consumer.fetch({ max_messages: 1000, expires: 2000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          read++;
          seq = m.seq;
          try {
            const d = decodeMessage(m.data);
            if (d.qos2Id !== undefined && d.message.senderId === clientId) found.set(d.qos2Id, { seq: m.seq, topic: d.message.topic, payload: d.message.payload });
          } catch {
            /* a malformed record: not one of its messages */
          }
          if (m.seq >= end) break;
        }
        if (got === 0) break;
      }
    } finally {
      await consumer.delete().catch(() => undefined);
    }
    if (found.size > 0) this.resent.set(clientId, { until: Date.now() + RESENT_WINDOW_MS, ids: found });
    else this.resent.delete(clientId);
  }

  /** A QoS 2 PUBLISH whose packet id the session does not hold: the stream's sequence when it is one loadResent() found. */
  private takeResent(message: Message): number | undefined {
    const id = message.inboundQos2Id;
    const sender = message.senderId;
    if (id === undefined || sender === undefined || this.resent.size === 0) return undefined;
    const r = this.resent.get(sender);
    if (!r) return undefined;
    if (r.until <= Date.now()) {
      this.resent.delete(sender);
      return undefined;
    }
    const e = r.ids.get(id);
    if (!e) return undefined;
    r.ids.delete(id); // once: a later PUBLISH with this id is a new message
    if (r.ids.size === 0) this.resent.delete(sender);
    return e.topic === message.topic && e.payload.equals(message.payload) ? e.seq : undefined;
  }

  /** Read the stream from `from` to its end now, as log entries. */
  private async readStream(from: number): Promise<{ entries: LogEntry[]; last: number }> {
    const jsm = this.jsm!;
    const js = this.js!;
    const end = (await jsm.streams.info(this.streamName)).state.last_seq;
    this.storage.noteSeq(end);
    const entries: LogEntry[] = [];
    if (end < from) return { entries, last: end };
    const { DeliverPolicy } = await import('@nats-io/jetstream');
    const consumer = await js.consumers.get(this.streamName, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(1, from) });
    let seq = from - 1;
    try {
      while (seq < end) {
        const batch = await consumer.fetch({ max_messages: Math.min(1000, end - seq), expires: 2000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          seq = m.seq;
          try {
            const { message, direct } = decodeMessage(m.data);
            message.clusterSeq = m.seq;
            entries.push({ pos: { gen: 0, offset: m.seq }, next: { gen: 0, offset: m.seq + 1 }, message, storedAt: Math.round(Number(m.info.timestampNanos) / 1e6), direct: direct === true });
          } catch (err) {
            this.error(`a malformed message at ${m.seq} in ${this.streamName}`, err);
          }
          if (m.seq >= end) break;
        }
        if (got === 0) break;
      }
    } finally {
      await consumer.delete().catch(() => undefined);
    }
    return { entries, last: Math.max(end, seq) };
  }

  /** What was stored past `from` while the session's subscriptions moved here, not yet delivered live. */
  private async catchUp(s: DurableSession, from: number, round: number): Promise<void> {
    await new Promise((r) => setTimeout(r, CATCH_UP_MS[round]!).unref());
    const seen = this.sessionLog.catchingUp.get(s);
    const broker = this.broker;
    if (!seen || !broker || this.closed || broker.sessions.get(s.clientId) !== s) {
      this.sessionLog.catchingUp.delete(s);
      return;
    }
    let last = from;
    try {
      const r = await this.readStream(from + 1);
      last = r.last;
      const plain = [...s.subscriptions.values()].filter((x) => x.shareGroup === undefined);
      const now = Date.now();
      for (const e of r.entries) {
        const seq = e.pos.offset;
        if (seen.has(seq) || e.direct) continue;
        if (e.message.expiresAt !== undefined && e.message.expiresAt <= now) continue;
        const d = deliveryFor(plain, e.message, s.clientId);
        if (!d) continue;
        seen.add(seq);
        this.sessionLog.positions.set(e.message, e.pos);
        broker.deliverStored(s, d);
        this.counts.caughtUp++;
      }
    } catch (err) {
      this.error(`reading the stream again for session ${s.clientId}`, err);
    }
    if (round + 1 < CATCH_UP_MS.length) void this.catchUp(s, last, round + 1);
    else this.sessionLog.catchingUp.delete(s);
  }

  private error(what: string, err: unknown): void {
    const text = err instanceof Error ? err.message : String(err);
    if (!this.kv) this.stateText = `error: ${text}`;
    const now = Date.now();
    if (now - this.lastErrorLog >= 10_000) {
      this.lastErrorLog = now;
      this.log.warn({ err: text }, `cluster: ${what}`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.sessionLog.flush();
    await this.storage.close();
    this.watcher?.stop();
    this.willWatcher?.stop();
  }
}
