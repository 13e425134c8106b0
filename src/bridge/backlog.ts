/**
 * What a bridge holds for its remote: a bounded buffer of QoS 0 messages (memory only) and
 * the QoS 1/2 backlog. The backlog is a consumer of the durable log: each message in it was
 * stored once in the log (by whoever stored it first: a persistent session or this bridge),
 * and the bridge keeps only its position: the oldest message the remote has not acknowledged.
 * After a crash the backlog is read back from the log from that position; the entries here
 * are the working copy (the same Message objects the broker routes, not copies).
 *
 * Bounds (messages, bytes, age) drop the oldest and count them by reason. Acknowledgements
 * may come in any order; the position moves past a run of acknowledged entries at the head.
 */
import type { Message } from '../mqtt/message.js';
import type { LogPosition } from '../storage/log.js';

export interface BacklogEntry {
  readonly message: Message;
  /** Its place in the durable log; undefined with EDB_STORAGE=memory. */
  readonly pos: LogPosition | undefined;
  /** QoS towards the remote (the message's, capped by the topic line's). */
  readonly qos: 0 | 1 | 2;
  readonly remoteTopic: string;
  readonly bytes: number;
  readonly storedAt: number;
  /** 0 waiting, 1 sent and not yet acknowledged, 2 acknowledged (or dropped). */
  state: number;
}

export const WAITING = 0;
export const SENT = 1;
export const DONE = 2;

export interface Bounds {
  maxMessages: number;
  /** 0: no bound. */
  maxBytes: number;
  /** 0: no bound. */
  maxAgeMs: number;
}

/**
 * Counts of dropped messages by reason: "buffer_full" (messages or bytes), "too_old" (age),
 * and for the QoS 1/2 backlog "retention" and "size_cap": the durable log dropped the
 * generation holding them (EDB_STORAGE_RETENTION, EDB_STORAGE_MAX_BYTES) before the remote
 * acknowledged them.
 */
export type DropReason = 'buffer_full' | 'too_old' | 'retention' | 'size_cap';
export type DropCounts = Record<DropReason, number>;
export const DROP_REASONS: readonly DropReason[] = ['buffer_full', 'too_old', 'retention', 'size_cap'];

/** A FIFO of entries with bounds, a send cursor and a head that moves past acknowledged entries. */
export class Backlog {
  private items: BacklogEntry[] = [];
  /** Index of the oldest entry not done (or items.length). */
  private head = 0;
  /** Next entry to send (index into items, >= head). */
  private cursor = 0;
  /** Entries not done, and their bytes. */
  private count = 0;
  private byteCount = 0;
  readonly dropped: DropCounts = { buffer_full: 0, too_old: 0, retention: 0, size_cap: 0 };

  constructor(public bounds: Bounds) {}

  get size(): number {
    return this.count;
  }
  get bytes(): number {
    return this.byteCount;
  }
  /** When the oldest entry still held was stored (ms), or undefined. */
  get oldestStoredAt(): number | undefined {
    return this.items[this.head]?.storedAt;
  }
  /** The position of the oldest entry still held, if it has one. */
  get headPosition(): LogPosition | undefined {
    return this.items[this.head]?.pos;
  }

  /** Add at the end; returns how many of the oldest the bounds dropped. */
  push(entry: BacklogEntry): number {
    this.items.push(entry);
    this.count++;
    this.byteCount += entry.bytes;
    return this.enforce(entry.storedAt);
  }

  /** Drop the oldest past the bounds; returns how many went. */
  enforce(now: number): number {
    const b = this.bounds;
    let n = 0;
    while (this.count > 0 && (this.count > b.maxMessages || (b.maxBytes > 0 && this.byteCount > b.maxBytes))) {
      this.dropHead('buffer_full');
      n++;
    }
    if (b.maxAgeMs > 0) {
      const cutoff = now - b.maxAgeMs;
      while (this.count > 0 && this.items[this.head]!.storedAt < cutoff) {
        this.dropHead('too_old');
        n++;
      }
    }
    return n;
  }

  /**
   * The durable log dropped generation `gen` (and so every older one): the entries stored
   * there that are waiting to be sent are dropped and counted under `reason`; the next one
   * sent is the oldest message the log still holds. Entries in flight stay until their
   * acknowledgement (the remote may have them). Entries are in log order, so this walks
   * only the dropped ones. Returns how many went.
   */
  dropStoredThrough(gen: number, reason: 'retention' | 'size_cap'): number {
    let n = 0;
    for (let i = this.head; i < this.items.length; i++) {
      const e = this.items[i]!;
      if (!e.pos) continue; // kept in memory only (storage was full)
      if (e.pos.gen > gen) break;
      if (e.state !== WAITING) continue;
      this.release(e);
      this.dropped[reason]++;
      n++;
    }
    this.advance();
    return n;
  }

  private dropHead(reason: DropReason): void {
    this.release(this.items[this.head]!);
    this.dropped[reason]++;
    this.advance();
  }

  private release(e: BacklogEntry): void {
    e.state = DONE;
    this.count--;
    this.byteCount -= e.bytes;
  }

  /** Move the head past entries done (acknowledged out of order, or dropped). */
  private advance(): void {
    while (this.head < this.items.length && this.items[this.head]!.state === DONE) this.head++;
    if (this.cursor < this.head) this.cursor = this.head;
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.cursor -= this.head;
      this.head = 0;
    }
  }

  /** The next entry to send, marked sent; undefined when all have been sent. */
  nextToSend(): BacklogEntry | undefined {
    while (this.cursor < this.items.length) {
      const e = this.items[this.cursor++]!;
      if (e.state === WAITING) {
        e.state = SENT;
        return e;
      }
    }
    return undefined;
  }

  /** Whether there is something not yet sent. */
  get hasUnsent(): boolean {
    for (let i = this.cursor; i < this.items.length; i++) if (this.items[i]!.state === WAITING) return true;
    return false;
  }

  /** The remote acknowledged `entry` (or it is not wanted any more): released. */
  done(entry: BacklogEntry): void {
    if (entry.state === DONE) return;
    this.release(entry);
    if (this.items[this.head] === entry) this.advance();
  }

  /**
   * The link went down: everything sent and not acknowledged is sent again, in order; except
   * `keep` (QoS 2 in flight, which the bridge completes with its own packet ids).
   */
  rewind(keep?: ReadonlySet<BacklogEntry>): void {
    for (let i = this.head; i < this.items.length; i++) {
      const e = this.items[i]!;
      if (e.state === SENT && !keep?.has(e)) e.state = WAITING;
    }
    this.cursor = this.head;
  }

  /** Entries still held, oldest first (for the backup). */
  *pending(): IterableIterator<BacklogEntry> {
    for (let i = this.head; i < this.items.length; i++) if (this.items[i]!.state !== DONE) yield this.items[i]!;
  }

  clear(): void {
    for (const e of this.items) e.state = DONE; // a late acknowledgement of one is ignored
    this.items = [];
    this.head = this.cursor = this.count = this.byteCount = 0;
  }
}
