/**
 * Persistent sessions on durable storage (EDB_STORAGE=durable), the EMQX way: a message is
 * stored once in the log, however many sessions want it, and a session keeps a position (its
 * iterator) plus its subscriptions, expiry and will, never copies of messages.
 *
 * While the broker runs, recent deliveries go through each session's queue in memory (the fast
 * path for online clients: no read from disk), up to a window (EDB_STORAGE_SESSION_WINDOW
 * messages offline; online, the outbound queue's bound). Past it the session's backlog stays in
 * the log: the session keeps a read position (`readPos`), and every later QoS 1/2 message for it
 * is left there (Session.defer) and read back in batches (a few hundred messages, 1 MiB, one
 * batch per turn of the event loop) as the client acknowledges, matched against the session's
 * subscriptions as a replay at start is, until the reader meets the log's tail and the session
 * is live again. An offline session's backlog is then bounded by the log's retention and size
 * cap, not by memory; a generation dropped with unread messages of a session moves it to the
 * oldest one kept (counted, logged). What is durable is what a crash needs:
 * - each QoS 1/2 message routed to a persistent session is appended to the log once
 *   (SessionLog.store, from the broker's route) before the publisher's ack;
 * - DurableSession follows every delivery it holds (queued, in flight, answered) by log
 *   position, and its iterator - the oldest position not yet acknowledged, the QoS 2
 *   messages past it already answered (never sent again), the packet ids awaiting PUBCOMP -
 *   is written at the end of the turn in which it changed;
 * - the session record (subscriptions, expiry, will, QoS 2 ids received) when it changes.
 * At start, each stored session is rebuilt and its queue refilled by reading the log from its
 * iterator, matching each message against its subscriptions. What such a replay would not
 * make is listed in the iterator by position (`direct`): a shared subscription's copy (only one
 * member of the group got it) and the retained messages sent to a new subscription (stored as
 * direct copies, which a replay by topic passes over).
 * A connected client's will is stored too (liveWills), and published at the next start if the
 * connection never closed (a crash), as if it had closed then.
 * QoS 1 may come twice after a crash; QoS 2 never:
 * - outbound, a QoS 2 PUBLISH is written once its packet id is on disk (the iterator's `sent`),
 *   a PUBREL once the PUBREC that moved it on is, so a restart resends PUBLISH with DUP and the
 *   same id, or PUBREL, never the message under a new id; a reconnect (takeover) meanwhile does
 *   not resend a PUBLISH still held so (firstSendHeld): the new connection sends it once the id
 *   is on disk;
 * - inbound, PUBREC waits for the message's batch and the session record naming its packet id,
 *   PUBCOMP for the record without it. The id is also written in the message's log record: a
 *   crash between the log's fdatasync and the record's commit is repaired at start by reading
 *   the log from the last position the records were known complete at (QOS2_MARK).
 */
import type { Logger } from 'pino';
import type { Message, QoS } from '../mqtt/message.js';
import { Session, type Delivery, type InflightEntry, type Subscription } from '../session/session.js';
import { MemorySessionStore, type LiveWill, type SessionPersistence } from '../session/store.js';
import { topicMatches } from '../topics/match.js';
import { StorageFullError } from './errors.js';
import { comparePositions, MessagePositions, type LogEntry, type LogPosition } from './log.js';
import type { BrokerStorage, DirectDelivery, IteratorRecord, LiveWillRecord, SentQos2, SessionRecord } from './store.js';

const QUEUED = 0;
const INFLIGHT = 1;
const PUBREL = 2;
const DONE = 3;

/**
 * A delivery of a stored message to one durable session, followed by its log position: the
 * same object is the delivery in the session's queue and, once sent, its in-flight entry
 * (Session.inflightFor), so following a message from queue to PUBACK needs no lookup table
 * (Maps by message and by packet id, written and deleted for every message, were a third of
 * the durable broker's GC under QoS 1 fan-in).
 */
class Tracked implements InflightEntry {
  packetId = 0;
  state: 'publish' | 'pubrel' = 'publish';
  /** QUEUED, INFLIGHT, PUBREL or DONE. */
  phase = QUEUED;
  readonly message: Message;
  readonly qos: QoS;
  readonly retain: boolean;
  readonly subscriptionIds: number[] | undefined;

  constructor(
    readonly owner: DurableSession,
    d: Delivery,
    readonly pos: LogPosition,
    /** Listed in the iterator as recorded (a replay by subscriptions would not make it). */
    readonly direct: boolean,
  ) {
    this.message = d.message;
    this.qos = d.qos;
    this.retain = d.retain;
    this.subscriptionIds = d.subscriptionIds;
  }
}

const FOREVER = 0xffffffff;

/**
 * Document holding the log position before which every message's QoS 2 packet id (inbound) is
 * reflected in the stored session records: written with them, read at start.
 */
export const QOS2_MARK = 'sessions.qos2-mark';

/** Longest a position that only moved forward waits to be written (SessionLog.schedule). */
const LAZY_FLUSH_MS = 20;

/** Messages read from the log per batch when a session's backlog is read back. */
const READ_BATCH = 256;

/** Durable storage on one node: sessions keep a window in memory and read the rest from the log. */
export interface PagingOptions {
  /** QoS 1/2 messages of an offline session held in memory (restored at start, queued while offline). */
  window: number;
  /** Reading back stops once this many messages are queued (online: below the outbound queue's bound)... */
  refillMessages: number;
  /** ... or this many bytes. */
  refillBytes: number;
}

/** What reading sessions' backlogs from the log did (metrics). */
export interface PagingStats {
  /** Messages read back from the log into a session's queue. */
  messagesRead: number;
  /** Times a session's unread messages were in a generation dropped by retention or the size cap. */
  sessionsSkipped: number;
}

/** The log and the stored records behind every DurableSession of one broker. */
export class SessionLog implements SessionPersistence {
  /** Set on one node with durable storage: past a window, a session's backlog is read from the log. */
  paging: PagingOptions | undefined;
  /** Messages were read back into a session's queue: send them if its client is connected. */
  onRefill: ((session: Session) => void) | undefined;
  readonly pagingStats: PagingStats = { messagesRead: 0, sessionsSkipped: 0 };
  /** Sessions whose backlog is (partly) in the log. */
  readonly paged = new Set<DurableSession>();
  /** Where each stored message is in the log (store-once: the second session finds it here). */
  readonly positions = new MessagePositions();
  /** Counts appends: a publish that caused one waits for the commit before its ack. */
  writes = 0;
  refused = 0;
  private readonly dirty = new Set<DurableSession>();
  private readonly dirtyIterators = new Set<DurableSession>();
  private flushScheduled = false;
  private lazyTimer: NodeJS.Timeout | undefined;
  private fullLoggedAt = 0;
  /** A delivery only the iterator can name was tracked: write before the publisher's ack. */
  private urgent = false;
  /**
   * The iterator last written for each session (its JSON): an unchanged one is not written
   * again. An offline session's iterator stays put while messages queue up for it, so fan-out
   * to offline sessions writes nothing per session (store-once on disk, not only in the log).
   */
  private readonly written = new WeakMap<DurableSession, string>();
  /** Client ids with a stored live will. */
  private readonly wills = new Set<string>();
  /** Waiting for what has changed so far to be on disk (afterStored): run after the next flush's commit. */
  private waiting: ((err?: Error) => void)[] = [];
  private markAt = 0;
  private markText = '';

  constructor(
    readonly storage: BrokerStorage,
    private readonly log: Logger,
  ) {}

  /**
   * A QoS 1/2 message on its way to a persistent session: stored once. False when storage is
   * full (the delivery then lives in memory only; the publish was refused before routing if
   * the broker could tell).
   */
  store(message: Message, direct = false): boolean {
    if (this.positions.has(message)) return true;
    try {
      this.positions.set(message, this.storage.append(message, direct));
      this.writes++;
      return true;
    } catch (err) {
      if (!(err instanceof StorageFullError)) throw err;
      this.refused++;
      const now = Date.now();
      if (now - this.fullLoggedAt >= 60_000) {
        this.fullLoggedAt = now;
        this.log.error({ topic: message.topic }, 'storage full: a message for a persistent session is kept in memory only');
      }
      return false;
    }
  }

  storeFor(session: Session, message: Message, shared = false): void {
    if (session.expiryInterval > 0 && session instanceof DurableSession && this.store(message) && shared) session.expectDirect(message);
  }

  /**
   * A retained message for a new subscription of a persistent session: stored as a direct copy
   * of its own (at the tail, so the session's positions stay in log order) and tracked at once,
   * so that the iterator written before the SUBACK lists it. Returns the delivery to send.
   */
  reserveRetained(session: Session, d: Delivery): Delivery {
    if (d.qos === 0 || session.expiryInterval === 0 || !(session instanceof DurableSession)) return d;
    const copy: Message = { ...d.message };
    delete copy.wire;
    delete copy.inboundQos2Id;
    if (!this.store(copy, true)) return d;
    session.expectDirect(copy);
    const out: Delivery = { ...d, message: copy };
    return session.reserve(out);
  }

  liveWill(clientId: string, will: LiveWill | undefined): void {
    if (!will) {
      if (this.wills.delete(clientId)) this.storage.setLiveWill(clientId, undefined);
      return;
    }
    const m = will.message;
    const message: Message = { topic: m.topic, payload: m.payload, qos: m.qos, retain: m.retain };
    if (m.properties) message.properties = m.properties;
    if (m.senderId !== undefined) message.senderId = m.senderId;
    if (m.origin !== undefined) message.origin = m.origin;
    const rec: LiveWillRecord = { message, delaySeconds: will.delaySeconds };
    if (will.expirySeconds !== undefined) rec.expirySeconds = will.expirySeconds;
    if (will.username !== undefined) rec.username = will.username;
    this.wills.add(clientId);
    this.storage.setLiveWill(clientId, rec);
  }

  /**
   * The wills of clients that were connected when the broker last stopped without closing their
   * connections (a crash; a graceful stop closes them), forgotten in storage as they are handed out.
   */
  takeLiveWills(): Map<string, LiveWillRecord> {
    const wills = this.storage.liveWills();
    for (const id of wills.keys()) this.storage.setLiveWill(id, undefined);
    return wills;
  }

  changed(session: Session): void {
    if (!(session instanceof DurableSession)) return;
    this.dirty.add(session);
    this.schedule();
  }

  iteratorChanged(session: DurableSession, urgent = false): void {
    if (urgent) this.urgent = true;
    // several times a message (queued, sent, acknowledged): once in the set and scheduled is enough
    else if (session.iteratorDirty) return;
    session.iteratorDirty = true;
    this.dirtyIterators.add(session);
    this.schedule(!urgent);
  }

  flushUrgent(): void {
    if (this.urgent) this.flush();
  }

  /** Inbound QoS 2 messages received whose ids are not in the stored records yet, by token, oldest first. */
  private readonly pendingQos2 = new Map<object, LogPosition>();

  /** An inbound QoS 2 message is being received: QOS2_MARK stays before it until qos2Done(token). */
  qos2Pending(): object {
    const token = {};
    this.pendingQos2.set(token, this.storage.tail);
    return token;
  }

  qos2Done(token: object): void {
    this.pendingQos2.delete(token);
  }

  /** `cb` runs once everything changed so far (records, iterators, the log) is on disk. */
  afterStored(cb: (err?: Error) => void): void {
    this.waiting.push(cb);
    this.urgent = true;
    this.schedule();
  }

  /**
   * A generation was dropped (retention, size cap): a session whose read position was in it
   * lost what it had not read there; it goes on at the oldest position kept (counted, logged).
   */
  generationDropped(d: { gen: number; reason: string }): void {
    for (const s of this.paged) {
      const pos = s.readPosition;
      if (!pos || pos.gen > d.gen) continue;
      const to = this.storage.read(pos, 0).next; // where the log goes on
      s.skipTo(to);
      this.pagingStats.sessionsSkipped++;
      this.log.warn(
        { clientId: s.clientId, generation: d.gen, reason: d.reason, from: pos, to },
        `storage: generation ${d.gen} was dropped (${d.reason === 'size_cap' ? 'size cap' : d.reason}) with messages session ${s.clientId} had not read yet; they are lost, it goes on at the oldest message kept`,
      );
    }
  }

  private readFailLoggedAt = 0;

  /** Reading a session's backlog failed (an I/O error): logged (once a minute), tried again in a second. */
  readFailed(session: DurableSession, err: unknown): void {
    const now = Date.now();
    if (now - this.readFailLoggedAt >= 60_000) {
      this.readFailLoggedAt = now;
      this.log.error({ clientId: session.clientId, err: (err as Error).message }, 'storage: reading a session\'s messages from the log failed; trying again');
    }
    setTimeout(() => session.refill(), 1000).unref();
  }

  ended(session: Session): void {
    if (!(session instanceof DurableSession)) return;
    session.stopPaging();
    this.dirty.delete(session);
    this.dirtyIterators.delete(session);
    session.iteratorDirty = false;
    this.written.delete(session);
    this.storage.deleteSession(session.clientId);
  }

  /**
   * `lazy`: only positions that moved forward over plain deliveries changed, which nothing waits
   * for: written within LAZY_FLUSH_MS, so that a subscriber acknowledging all the time costs an
   * LMDB commit (an fsync, competing with the log's) every LAZY_FLUSH_MS rather than every turn.
   * A crash then replays at most that much more (QoS 1 may come twice; QoS 2 positions are not lazy).
   */
  private schedule(lazy = false): void {
    if (this.flushScheduled) return;
    if (lazy) {
      if (this.lazyTimer === undefined) {
        this.lazyTimer = setTimeout(this.flushLazy, LAZY_FLUSH_MS);
        this.lazyTimer.unref();
      }
      return;
    }
    this.flushScheduled = true;
    setImmediate(this.flushNow);
  }

  // bound once: schedule() creates no closure (it runs several times a message)
  private readonly flushNow = (): void => this.flush();
  private readonly flushLazy = (): void => {
    this.lazyTimer = undefined;
    this.flush();
  };

  /** Write what changed this turn: session records, then iterators. */
  flush(): void {
    this.flushScheduled = false;
    if (this.lazyTimer) {
      clearTimeout(this.lazyTimer);
      this.lazyTimer = undefined;
    }
    // positions naming direct deliveries are waited for (the acks that depend on them); the
    // rest only move forward, and a lost one replays from earlier: written lazily
    const lazy = !this.urgent;
    this.urgent = false;
    for (const s of this.dirty) {
      if (s.expiryInterval > 0) {
        this.storage.setSession(s.record());
        this.dirtyIterators.add(s); // a new session gets its iterator (at the tail) at once
      } else {
        this.storage.deleteSession(s.clientId); // ends with its connection: nothing to keep
        this.written.delete(s);
      }
    }
    const wroteRecords = this.dirty.size > 0;
    this.dirty.clear();
    const tail = this.storage.tail;
    // every inbound QoS 2 id of a message before `tail` is in the records written so far
    const now = Date.now();
    if (wroteRecords || now - this.markAt >= 1000) {
      let mark = tail;
      for (const p of this.pendingQos2.values()) {
        mark = p; // the oldest: positions are handed out in order
        break;
      }
      const text = JSON.stringify(mark);
      if (text !== this.markText) {
        this.storage.setDocument(QOS2_MARK, Buffer.from(text));
        this.markText = text;
        this.markAt = now;
      }
    }
    for (const s of this.dirtyIterators) {
      s.iteratorDirty = false;
      if (s.expiryInterval === 0) continue;
      const it = s.iteratorRecord(tail);
      const text = JSON.stringify(it);
      const before = this.written.get(s);
      if (before === text) continue;
      this.written.set(s, text);
      // a session's first position is waited for: without it a replay would not know where to start
      this.storage.setIterator(s.clientId, it, lazy && before !== undefined && !it.direct);
    }
    this.dirtyIterators.clear();
    if (this.waiting.length > 0) {
      const cbs = this.waiting;
      this.waiting = [];
      this.storage.onDurable((err) => {
        for (const cb of cbs) cb(err);
      });
    }
  }
}

export class DurableSession extends Session {
  /** Deliveries of stored messages this session holds, in log order. */
  private tracked: Tracked[] = [];
  private head = 0;
  // Created on first use: an idle connection's session (most of them, at 10,000
  // connections) never touches it.
  private directsSet: WeakSet<Message> | undefined;
  /** In SessionLog's set of sessions whose iterator is to be written (set and cleared by SessionLog). */
  iteratorDirty = false;
  /**
   * Paged: where reading its backlog from the log goes on. Every QoS 1/2 message for it from
   * here on is in the log, none in memory past this point (undefined: all of them are in memory).
   */
  private readPos: LogPosition | undefined;
  private reading = false;
  private emptyReads = 0;
  private ended = false;
  /** Paged: deliveries past readPos a read by subscriptions would not make (shared, direct copies), by position. */
  private pagedDirect: Map<string, DirectDelivery> | undefined;
  /** Paged: QoS 2 messages past readPos already answered (restored from the iterator): never sent again. */
  private pagedDone: Set<string> | undefined;
  /** Paged: subscriptions made while paged, from where in the log they apply. */
  private subSince: Map<string, LogPosition> | undefined;

  /** Messages stored for this session alone (a shared subscription's copy, a retained copy) about to be delivered. */
  private get directs(): WeakSet<Message> {
    return (this.directsSet ??= new WeakSet());
  }

  constructor(
    clientId: string,
    private readonly sessionLog: SessionLog,
  ) {
    super(clientId);
  }

  private get persistent(): boolean {
    return this.expiryInterval > 0;
  }

  /** The next delivery of `message` is one a replay by subscriptions would not make. */
  expectDirect(message: Message): void {
    this.directs.add(message);
  }

  /** Where reading the backlog from the log goes on (undefined: not paged). */
  get readPosition(): LogPosition | undefined {
    return this.readPos;
  }

  override setSubscription(topic: string, sub: Subscription): void {
    // a read of the backlog must not deliver what was stored before this subscription existed
    if (this.readPos !== undefined && !this.subscriptions.has(topic)) (this.subSince ??= new Map()).set(topic, this.sessionLog.storage.tail);
    super.setSubscription(topic, sub);
  }

  override get backlogInLog(): boolean {
    return this.sessionLog.paging !== undefined && this.persistent;
  }

  override defer(d: Delivery, full: boolean): boolean {
    if (this.readPos === undefined && !full) return false;
    if (!this.sessionLog.paging || d.qos === 0 || !this.persistent || this.ended) return false;
    const pos = this.sessionLog.positions.get(d.message);
    if (!pos) return false; // not stored (storage full): held in memory
    if (this.readPos === undefined) this.startPaging(pos);
    else if (comparePositions(pos, this.readPos) < 0) return false; // older than the read position: not read again
    if (this.directsSet?.has(d.message)) {
      this.directsSet.delete(d.message);
      const dd: DirectDelivery = { pos, qos: d.qos as 1 | 2, retain: d.retain };
      if (d.subscriptionIds) dd.ids = d.subscriptionIds;
      (this.pagedDirect ??= new Map()).set(posKey(pos), dd);
      // the publisher's ack waits for the iterator naming it
      this.sessionLog.iteratorChanged(this, true);
    }
    return true;
  }

  private startPaging(from: LogPosition): void {
    this.readPos = from;
    this.emptyReads = 0;
    this.sessionLog.paged.add(this);
  }

  private stopPagingState(): void {
    this.readPos = undefined;
    this.pagedDirect = undefined;
    this.pagedDone = undefined;
    this.subSince = undefined;
    this.sessionLog.paged.delete(this);
  }

  /** The session ended: no more reading. */
  stopPaging(): void {
    this.ended = true;
    this.stopPagingState();
  }

  /** Its unread messages before `to` are gone (a dropped generation). */
  skipTo(to: LogPosition): void {
    if (this.readPos === undefined || comparePositions(to, this.readPos) <= 0) return;
    this.readPos = to;
    this.sessionLog.iteratorChanged(this);
  }

  override refill(): void {
    const paging = this.sessionLog.paging;
    if (!paging || this.readPos === undefined || this.reading || this.ended) return;
    if (this.queued > paging.refillMessages >> 1 || this.queueBytes > paging.refillBytes >> 1) return;
    this.reading = true;
    setImmediate(() => this.readBatch());
  }

  /** Read one batch of the backlog into the queue; again next turn while there is room. */
  private readBatch(): void {
    const paging = this.sessionLog.paging!;
    const from = this.readPos;
    if (from === undefined || this.ended) {
      this.reading = false;
      return;
    }
    const log = this.sessionLog.storage;
    let entries: LogEntry[];
    let next: LogPosition;
    try {
      ({ entries, next } = log.read(from, READ_BATCH));
    } catch (err) {
      this.reading = false;
      this.sessionLog.readFailed(this, err);
      return;
    }
    const now = Date.now();
    const plain = [...this.subscriptions.values()].filter((s) => s.shareGroup === undefined);
    let queued = 0;
    for (const e of entries) if (this.readEntry(e, plain, now)) queued++;
    this.readPos = next;
    this.sessionLog.pagingStats.messagesRead += queued;
    const caughtUp = comparePositions(next, log.tail) >= 0;
    if (caughtUp) {
      // everything stored for it is read: from now on its messages queue in memory again
      this.stopPagingState();
      this.reading = false;
    }
    if (queued > 0 || caughtUp) this.sessionLog.iteratorChanged(this);
    if (queued > 0) this.sessionLog.onRefill?.(this);
    if (caughtUp) return;
    if (entries.length === 0) {
      // the rest is still being written (its batch's fdatasync): read on once it is durable
      const delay = this.emptyReads++ > 0 ? 20 : 0;
      log.onDurable(() => setTimeout(() => this.readBatch(), delay).unref());
      return;
    }
    this.emptyReads = 0;
    if (this.queued < paging.refillMessages && this.queueBytes < paging.refillBytes) setImmediate(() => this.readBatch());
    else this.reading = false;
  }

  /** One entry of the backlog: queued if this session gets it. */
  private readEntry(e: LogEntry, plain: Subscription[], now: number): boolean {
    const k = posKey(e.pos);
    if (this.pagedDone?.delete(k)) return false;
    const dd = this.pagedDirect?.get(k);
    if (dd) this.pagedDirect!.delete(k);
    const m = e.message;
    if (m.expiresAt !== undefined && m.expiresAt <= now) return false;
    let d: Delivery | undefined;
    if (dd) d = { message: m, qos: dd.qos, retain: dd.retain, subscriptionIds: dd.ids };
    else if (!e.direct) {
      const since = this.subSince;
      d = deliveryFor(since ? plain.filter((s) => { const p = since.get(s.topic); return p === undefined || comparePositions(p, e.pos) <= 0; }) : plain, m, this.clientId);
    }
    if (!d) return false;
    this.sessionLog.positions.set(m, e.pos);
    if (dd) this.directs.add(m);
    this.enqueue(d);
    return true;
  }

  /** This session's own tracked delivery, or undefined. */
  private own(d: Delivery): Tracked | undefined {
    return d instanceof Tracked && d.owner === this ? d : undefined;
  }

  /** The tracked form of a QoS 1/2 delivery of a stored message (`d` itself if it is one of ours), or undefined. */
  private track(d: Delivery): Tracked | undefined {
    if (d.qos === 0) return undefined;
    const known = this.own(d);
    if (known) return known;
    const pos = this.sessionLog.positions.get(d.message);
    if (!pos || !this.persistent) return undefined;
    const direct = this.directsSet?.delete(d.message) ?? false;
    const t = new Tracked(this, d, pos, direct);
    this.insertTracked(t);
    this.sessionLog.iteratorChanged(this, direct);
    return t;
  }

  /**
   * In log order. Deliveries arrive in log order on one node; in cluster mode a message read
   * back from the stream (a session's catch-up) can be older than one already tracked.
   */
  private insertTracked(t: Tracked): void {
    let i = this.tracked.length;
    while (i > this.head && comparePositions(this.tracked[i - 1]!.pos, t.pos) > 0) i--;
    if (i === this.tracked.length) this.tracked.push(t);
    else this.tracked.splice(i, 0, t);
  }

  private settle(t: Tracked, phase: number): void {
    t.phase = phase;
    if (phase === DONE) this.passDone();
    this.sessionLog.iteratorChanged(this);
  }

  /**
   * Move `head` past the answered deliveries at the front and let go of them, at once rather
   * than at the next (lazy, up to 20 ms later) iterator write: held that long, every message
   * of a busy session outlived two scavenges and was promoted, and the old space filled and
   * was compacted about twice a second under QoS 1 fan-in.
   */
  private passDone(): void {
    while (this.head < this.tracked.length && this.tracked[this.head]!.phase === DONE) this.head++;
    if (this.head > 256 && this.head * 2 > this.tracked.length) {
      this.tracked = this.tracked.slice(this.head);
      this.head = 0;
    }
  }

  override enqueue(delivery: Delivery): void {
    // a stored message is queued as its tracked delivery (one object from queue to PUBACK)
    const t = this.track(delivery);
    super.enqueue(t ?? delivery);
    if (t && t.phase !== QUEUED) this.settle(t, QUEUED);
  }

  override shift(): Delivery | undefined {
    const d = super.shift();
    // taken off the queue: sent (addInflight follows at once) or dropped (expired, not allowed)
    const t = d && this.own(d);
    if (t && t.phase === QUEUED) {
      // not passed yet: addInflight usually follows at once and makes it INFLIGHT again
      t.phase = DONE;
      this.sessionLog.iteratorChanged(this);
    }
    return d;
  }

  override clearQueue(): void {
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const t = this.own(this.queue[i]!);
      if (t && t.phase === QUEUED) t.phase = DONE;
    }
    super.clearQueue();
    this.sessionLog.iteratorChanged(this);
  }

  /** A stored message's delivery goes in flight as its tracked delivery itself. */
  override inflightFor(d: Delivery, packetId: number): InflightEntry {
    const t = this.track(d);
    if (!t) return super.inflightFor(d, packetId);
    t.packetId = packetId;
    t.state = 'publish';
    return t;
  }

  override addInflight(entry: InflightEntry): void {
    // from Outbound, `entry` came from inflightFor; an entry made elsewhere (a session adopted
    // from a backup) is replaced by its tracked form
    let t = this.own(entry);
    if (!t) {
      t = this.track(entry);
      if (t) {
        t.packetId = entry.packetId;
        t.state = entry.state;
      }
    }
    super.addInflight(t ?? entry);
    if (!t) return;
    t.phase = t.state === 'pubrel' ? PUBREL : INFLIGHT;
    this.sessionLog.iteratorChanged(this);
  }

  override afterStored(cb: (err?: Error) => void): boolean {
    if (!this.persistent) return false;
    // a QoS 2 id whose message is not on disk yet: first that, then the record naming the id
    if (this.unstoredQos2 !== undefined && this.unstoredQos2.size > 0) (this.storedWaiters ??= []).push(cb);
    else this.sessionLog.afterStored(cb);
    return true;
  }

  /** QoS 2 packet ids whose first PUBLISH waits for the id to be on disk (holdFirstSend). */
  private heldIds: Set<number> | undefined;

  override holdFirstSend(entry: InflightEntry, write: (err?: Error) => void): boolean {
    if (entry.qos !== 2 || !this.persistent || this.own(entry) === undefined) return false;
    const id = entry.packetId;
    (this.heldIds ??= new Set()).add(id);
    this.sessionLog.afterStored((err) => {
      // on disk now (a second wait for it, after a reconnect, ends after this one)
      this.heldIds?.delete(id);
      write(err);
    });
    return true;
  }

  override firstSendHeld(packetId: number): boolean {
    return this.heldIds?.has(packetId) ?? false;
  }

  override removeInflight(packetId: number): boolean {
    const e = this.inflight.get(packetId);
    const had = super.removeInflight(packetId);
    const t = e && this.own(e);
    if (t) this.settle(t, DONE);
    else if (had) this.sessionLog.iteratorChanged(this); // a restored PUBREL completed
    return had;
  }

  override setPubrel(entry: InflightEntry): void {
    super.setPubrel(entry);
    const t = this.own(entry);
    if (t) t.phase = PUBREL;
    this.sessionLog.iteratorChanged(this);
  }

  /**
   * Inbound QoS 2 ids whose message may not be on disk yet: the stored record leaves them out
   * until it is (a record naming an id whose message a crash lost would make the resent PUBLISH
   * look like a duplicate, and the message would be dropped). Meanwhile the log holds the id
   * with the message, and QOS2_MARK stays before it.
   */
  private unstoredQos2: Map<number, object> | undefined;
  private storedWaiters: ((err?: Error) => void)[] | undefined;

  override receivedQos2(packetId: number): void {
    super.receivedQos2(packetId);
    if (!this.persistent) return;
    const token = this.sessionLog.qos2Pending();
    (this.unstoredQos2 ??= new Map()).set(packetId, token);
    // after the handler's route: the batch that holds the message (if it was stored)
    queueMicrotask(() =>
      this.sessionLog.storage.onDurable(() => {
        if (this.unstoredQos2?.get(packetId) === token) this.qos2Stored(packetId);
      }),
    );
  }

  private qos2Stored(packetId: number): void {
    const token = this.unstoredQos2?.get(packetId);
    if (token === undefined) return;
    this.unstoredQos2!.delete(packetId);
    this.sessionLog.qos2Done(token);
    this.sessionLog.changed(this);
    if (this.unstoredQos2!.size === 0 && this.storedWaiters) {
      const waiters = this.storedWaiters;
      this.storedWaiters = undefined;
      for (const cb of waiters) this.sessionLog.afterStored(cb);
    }
  }

  override releasedQos2(packetId: number): boolean {
    this.qos2Stored(packetId);
    const known = super.releasedQos2(packetId);
    if (known && this.persistent) this.sessionLog.changed(this);
    return known;
  }

  /** The stored form of this session. */
  record(): SessionRecord {
    const r: SessionRecord = {
      clientId: this.clientId,
      expiryInterval: this.expiryInterval,
      subscriptions: [...this.subscriptions.values()],
      incomingQos2: this.unstoredQos2?.size ? [...this.incomingQos2].filter((id) => !this.unstoredQos2!.has(id)) : [...this.incomingQos2],
    };
    if (this.expiresAt !== undefined) r.expiresAt = this.expiresAt;
    if (this.pendingWill && this.willDueAt !== undefined) {
      r.will = { message: this.pendingWill.message, dueAt: this.willDueAt };
      if (this.pendingWill.expirySeconds !== undefined) r.will.expirySeconds = this.pendingWill.expirySeconds;
      if (this.pendingWill.username !== undefined) r.will.username = this.pendingWill.username;
    }
    return r;
  }

  /** The iterator: oldest position not answered, answered QoS 2 past it, ids awaiting PUBCOMP. */
  iteratorRecord(tail: LogPosition): IteratorRecord {
    this.passDone();
    const first = this.tracked[this.head];
    const done: LogPosition[] = [];
    for (let i = this.head; i < this.tracked.length; i++) {
      const t = this.tracked[i]!;
      if ((t.phase === DONE || t.phase === PUBREL) && !this.samePosPending(i)) done.push(t.pos);
    }
    const pubrel: number[] = [];
    for (const e of this.inflight.values()) if (e.state === 'pubrel') pubrel.push(e.packetId);
    let next = first ? first.pos : tail;
    if (this.readPos !== undefined) {
      // paged: what is not read yet comes after the read position
      if (comparePositions(this.readPos, next) < 0) next = this.readPos;
      for (const k of this.pagedDone ?? []) done.push(keyPos(k));
    }
    const rec: IteratorRecord = { next, done, pubrel };
    let sent: SentQos2[] | undefined;
    for (const e of this.inflight.values()) {
      if (e.qos !== 2 || e.state !== 'publish') continue;
      const t = this.own(e);
      if (!t || t.phase !== INFLIGHT) continue;
      const s: SentQos2 = { pos: t.pos, id: e.packetId, retain: e.retain };
      if (e.subscriptionIds) s.ids = e.subscriptionIds;
      (sent ??= []).push(s);
    }
    if (sent) rec.sent = sent;
    let direct: DirectDelivery[] | undefined;
    for (let i = this.head; i < this.tracked.length; i++) {
      const t = this.tracked[i]!;
      if (!t.direct || (t.phase !== QUEUED && t.phase !== INFLIGHT) || (t.phase === INFLIGHT && t.qos === 2)) continue;
      const dd: DirectDelivery = { pos: t.pos, qos: t.qos as 1 | 2, retain: t.retain };
      if (t.subscriptionIds) dd.ids = t.subscriptionIds;
      (direct ??= []).push(dd);
    }
    for (const dd of this.pagedDirect?.values() ?? []) (direct ??= []).push(dd);
    if (direct) rec.direct = direct;
    return rec;
  }

  /**
   * Another delivery of the message at tracked[i]'s position is not answered yet (a message
   * that reached this session twice: a plain and a shared subscription): the position is not
   * listed as done then, or a restart would skip the other delivery too.
   */
  private samePosPending(i: number): boolean {
    const pos = this.tracked[i]!.pos;
    for (let j = i - 1; j >= this.head && comparePositions(this.tracked[j]!.pos, pos) === 0; j--) if (this.tracked[j]!.phase === QUEUED || this.tracked[j]!.phase === INFLIGHT) return true;
    for (let j = i + 1; j < this.tracked.length && comparePositions(this.tracked[j]!.pos, pos) === 0; j++) if (this.tracked[j]!.phase === QUEUED || this.tracked[j]!.phase === INFLIGHT) return true;
    return false;
  }

  /**
   * Track deliveries before they are sent (the retained messages of a new subscription, whose
   * SUBACK waits for the disk): the iterator written next lists them. Returns the delivery to
   * send: its tracked form.
   */
  reserve(d: Delivery): Delivery {
    return this.track(d) ?? d;
  }

  /** Rebuild from storage (at start): record, iterator, and the queue refilled from the log. */
  restore(rec: SessionRecord, it: IteratorRecord | undefined, maxQueued: number, now: number): number {
    this.expiryInterval = rec.expiryInterval;
    for (const sub of rec.subscriptions) this.setSubscription(sub.topic, sub);
    for (const id of rec.incomingQos2) this.restoreQos2(id);
    // offline from now on (it may have been connected when the broker stopped)
    this.expiresAt = rec.expiresAt ?? (rec.expiryInterval >= FOREVER ? undefined : now + rec.expiryInterval * 1000);
    if (rec.will) {
      const m = rec.will.message;
      const message: Message = { ...m, payload: Buffer.from(m.payload) };
      this.pendingWill = { message, expirySeconds: rec.will.expirySeconds, username: rec.will.username };
      this.willDueAt = rec.will.dueAt;
    }
    if (!it) return 0;
    for (const id of it.pubrel) {
      // [MQTT-5-4.4.0-1] PUBREL is sent again on reconnect; the message itself was delivered
      const placeholder: Message = { topic: '', payload: Buffer.alloc(0), qos: 2, retain: false };
      super.addInflight({ message: placeholder, qos: 2, retain: false, subscriptionIds: undefined, packetId: id, state: 'pubrel' });
    }
    const key = (p: LogPosition): string => `${p.gen}:${p.offset}`;
    const skip = new Set(it.done.map(key));
    const log = this.sessionLog.storage;
    let queued = 0;
    for (const s of it.sent ?? []) {
      // [MQTT-5-4.3.3] sent, no PUBREC yet: resent on reconnect with DUP and the same packet id
      const e = log.read(s.pos, 1).entries[0];
      skip.add(key(s.pos));
      if (!e || comparePositions(e.pos, s.pos) !== 0) continue; // dropped with its generation
      const t = new Tracked(this, { message: e.message, qos: 2, retain: s.retain, subscriptionIds: s.ids }, e.pos, false);
      t.packetId = s.id;
      t.phase = INFLIGHT;
      this.restoreInflight(t);
      this.sessionLog.positions.set(e.message, e.pos);
      this.tracked.push(t);
      queued++;
    }
    const direct = new Map((it.direct ?? []).map((d) => [key(d.pos), d]));
    const plain = [...this.subscriptions.values()].filter((s) => s.shareGroup === undefined);
    if (plain.length === 0 && direct.size === 0) return queued;
    const paging = this.sessionLog.paging;
    try {
      queued = this.replay(log, it.next, skip, direct, plain, paging ? paging.window : maxQueued, now, key, queued);
      const from = this.readPos;
      if (from !== undefined) {
        // the rest of the backlog stays in the log: what the iterator says of it is kept for the read
        for (const [k, dd] of direct) if (comparePositions(dd.pos, from) >= 0) (this.pagedDirect ??= new Map()).set(k, dd);
        for (const k of skip) if (comparePositions(keyPos(k), from) >= 0) (this.pagedDone ??= new Set()).add(k);
      }
    } finally {
      // the resent ones and the replayed ones, in log order: the iterator's `next` is the first not done
      this.tracked.sort((a, b) => comparePositions(a.pos, b.pos));
    }
    return queued;
  }

  private replay(
    log: BrokerStorage,
    from: LogPosition,
    skip: Set<string>,
    direct: Map<string, DirectDelivery>,
    plain: Subscription[],
    maxQueued: number,
    now: number,
    key: (p: LogPosition) => string,
    queued: number,
  ): number {
    for (;;) {
      const { entries, next } = log.read(from, 512);
      if (entries.length === 0) break;
      for (const e of entries) {
        const k = key(e.pos);
        if (skip.has(k)) continue;
        const m = e.message;
        if (m.expiresAt !== undefined && m.expiresAt <= now) continue;
        const dd = direct.get(k);
        let d: Delivery | undefined;
        if (dd) d = { message: m, qos: dd.qos, retain: dd.retain, subscriptionIds: dd.ids };
        else if (!e.direct) d = deliveryFor(plain, m, this.clientId);
        if (!d) continue;
        if (queued >= maxQueued) {
          // durable on one node: the rest is read from the log as the queue drains
          if (this.sessionLog.paging) this.startPaging(e.pos);
          return queued;
        }
        this.sessionLog.positions.set(m, e.pos);
        if (dd) this.directs.add(m);
        this.enqueue(d);
        queued++;
      }
      if (comparePositions(next, from) <= 0) break;
      from = next;
    }
    return queued;
  }
}

function posKey(p: LogPosition): string {
  return `${p.gen}:${p.offset}`;
}

function keyPos(k: string): LogPosition {
  const i = k.indexOf(':');
  return { gen: Number(k.slice(0, i)), offset: Number(k.slice(i + 1)) };
}

/** What a subscription set makes of a message (merged as routing does), or undefined / QoS 0. */
export function deliveryFor(subs: Subscription[], m: Message, clientId: string): Delivery | undefined {
  let qos = -1;
  let retain = false;
  let ids: number[] | undefined;
  for (const s of subs) {
    if (s.noLocal && m.senderId === clientId) continue;
    if (!topicMatches(s.filter, m.topic)) continue;
    const q = Math.min(s.qos, m.qos);
    if (q > qos) qos = q;
    if (s.retainAsPublished && m.retain) retain = true;
    if (s.subscriptionIdentifier !== undefined) (ids ??= []).push(s.subscriptionIdentifier);
  }
  if (qos <= 0) return undefined;
  return { message: m, qos: qos as QoS, retain, subscriptionIds: ids };
}

/** The broker's session store with durable sessions. */
export class DurableSessionStore extends MemorySessionStore {
  constructor(readonly sessionLog: SessionLog) {
    super();
  }

  override create(clientId: string): Session {
    const session = new DurableSession(clientId, this.sessionLog);
    this.set(clientId, session);
    return session;
  }

  /**
   * A session restored from a backup (written in memory mode) made durable: its messages are
   * stored in the log, its record and iterator written.
   */
  adopt(plain: Session): DurableSession {
    const s = new DurableSession(plain.clientId, this.sessionLog);
    s.expiryInterval = plain.expiryInterval;
    s.expiresAt = plain.expiresAt;
    s.pendingWill = plain.pendingWill;
    s.willDueAt = plain.willDueAt;
    for (const [k, sub] of plain.subscriptions) s.setSubscription(k, sub);
    for (const id of plain.incomingQos2) s.restoreQos2(id);
    for (const e of plain.inflight.values()) {
      if (e.state === 'publish') this.sessionLog.storeFor(s, e.message);
      s.addInflight({ ...e });
    }
    for (let i = plain.queueHead; i < plain.queue.length; i++) {
      const d = plain.queue[i]!;
      if (d.qos > 0) this.sessionLog.storeFor(s, d.message);
      s.enqueue(d);
    }
    this.sessionLog.changed(s);
    this.sessionLog.iteratorChanged(s);
    return s;
  }

  /** Every stored session, rebuilt (for Broker.restoreSession). */
  load(maxQueued: number, now = Date.now()): { sessions: DurableSession[]; messages: number } {
    const out: DurableSession[] = [];
    let messages = 0;
    const storage = this.sessionLog.storage;
    const received = this.qos2PastMark();
    for (const rec of storage.sessions()) {
      if (rec.expiresAt !== undefined && rec.expiresAt <= now) {
        storage.deleteSession(rec.clientId);
        continue;
      }
      const s = new DurableSession(rec.clientId, this.sessionLog);
      messages += s.restore(rec, storage.iterator(rec.clientId), maxQueued, now);
      const ids = received.get(rec.clientId);
      if (ids) {
        // stored with their messages, PUBREC maybe not sent: a resent PUBLISH is the same message
        for (const id of ids) s.restoreQos2(id);
        this.sessionLog.changed(s);
      }
      out.push(s);
    }
    return { sessions: out, messages };
  }

  /**
   * Inbound QoS 2 packet ids written with their messages past QOS2_MARK (a crash came before
   * the session records naming them were committed), by publisher.
   */
  private qos2PastMark(): Map<string, number[]> {
    const out = new Map<string, number[]>();
    const storage = this.sessionLog.storage;
    const text = storage.document(QOS2_MARK)?.toString();
    if (!text) return out;
    let from: LogPosition;
    try {
      from = JSON.parse(text) as LogPosition;
    } catch {
      return out;
    }
    for (;;) {
      const { entries, next } = storage.read(from, 512);
      if (entries.length === 0) break;
      for (const e of entries) {
        const m = e.message;
        if (e.direct || m.inboundQos2Id === undefined || m.senderId === undefined) continue;
        let ids = out.get(m.senderId);
        if (!ids) out.set(m.senderId, (ids = []));
        ids.push(m.inboundQos2Id);
      }
      if (comparePositions(next, from) <= 0) break;
      from = next;
    }
    return out;
  }
}
