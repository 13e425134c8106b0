/**
 * EDB_STORAGE=durable: the message log (log.ts, one file per generation under
 * <dataDir>/storage/log) and the keyed stores on LMDB (kv.ts, <dataDir>/storage/kv).
 *
 * onDurable(cb) waits for both: the log batch holding the last append and the LMDB commit
 * holding the last keyed write. LMDB puts made in one turn share a transaction and an fsync.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Message } from '../mqtt/message.js';
import { StorageFullError } from './errors.js';
import { openKv, type KvStores } from './kv.js';
import { MessageLog, type LogEntry, type LogPosition } from './log.js';
import { decodeMessage, encodeMessage } from './record.js';
import type { BrokerStorage, DurableCallback, IteratorRecord, LiveWillRecord, SessionRecord, StorageInfo } from './store.js';

export interface DurableStorageOptions {
  dir: string;
  log: Logger;
  batchSize: number;
  flushIntervalMs: number;
  generationMs: number;
  retentionMs: number;
  maxBytes: number;
  now?: () => number;
}

const STATE_SNAPSHOT = 'state.snapshot';

export class DurableStorage implements BrokerStorage {
  readonly kind = 'durable' as const;
  readonly messages: MessageLog;
  private readonly kv: KvStores;
  /** The last keyed write not yet known durable. */
  private kvLast: Promise<unknown> | undefined;
  private kvError: Error | undefined;
  private nextStateSeq: number;
  private readonly sweepTimer: NodeJS.Timeout;

  constructor(readonly opts: DurableStorageOptions) {
    this.kv = openKv(join(opts.dir, 'kv'));
    try {
      this.messages = MessageLog.open({ ...opts, dir: join(opts.dir, 'log') });
    } catch (err) {
      void this.kv.root.close();
      throw err;
    }
    let last = 0;
    for (const key of this.kv.stateOps.getKeys({ reverse: true, limit: 1 })) last = key;
    this.nextStateSeq = last + 1;
    this.sweepTimer = setInterval(() => {
      try {
        this.messages.sweep();
      } catch (err) {
        opts.log.error({ err: (err as Error).message }, 'storage: sweep failed');
      }
    }, 10_000);
    this.sweepTimer.unref();
  }

  private track(p: Promise<unknown>): void {
    const tracked = p.then(
      () => {
        if (this.kvLast === tracked) this.kvLast = undefined;
      },
      (err: Error) => {
        if (this.kvLast === tracked) this.kvLast = undefined;
        this.kvFailed(err);
        throw err;
      },
    );
    tracked.catch(() => undefined);
    this.kvLast = tracked;
  }

  /** A write acknowledgements do not wait for: only its failure is noted. */
  private watch(p: Promise<unknown>): void {
    p.catch((err: Error) => this.kvFailed(err));
  }

  private kvFailLoggedAt = 0;

  /**
   * A keyed write failed (a full disk: LMDB could not commit). What waited for it is refused;
   * logged at most once a minute, with the cause (lmdb puts it in `commitError`).
   */
  private kvFailed(err: Error): void {
    this.kvError = err;
    const cause = (err as { commitError?: Promise<unknown> }).commitError;
    const now = Date.now();
    const due = now - this.kvFailLoggedAt >= 60_000;
    if (due) this.kvFailLoggedAt = now;
    cause?.catch(() => undefined);
    if (!due) return;
    const log = (reason: string) => this.opts.log.error({ err: reason }, 'storage: a write to the keyed store (LMDB) failed; what waited for it is refused until there is room');
    if (!cause) return log(err.message);
    // the cause, if lmdb settles it soon (it may not)
    let done = false;
    const once = (reason: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      log(reason);
    };
    const timer = setTimeout(() => once(err.message), 100);
    timer.unref();
    cause.then(() => once(err.message), (e: Error) => once(`${err.message}: ${e.message}`));
  }

  retained(): Message[] {
    const out: Message[] = [];
    for (const { value } of this.kv.retained.getRange()) {
      try {
        out.push(decodeMessage(value).message);
      } catch {
        this.opts.log.warn('storage: an unreadable retained message; skipped');
      }
    }
    return out;
  }
  setRetained(message: Message): void {
    if (this.messages.full) throw new StorageFullError('storage full');
    if (message.payload.length === 0) this.track(this.kv.retained.remove(message.topic));
    else this.track(this.kv.retained.put(message.topic, encodeMessage(message, Date.now())));
  }
  clearRetained(): void {
    this.track(this.kv.retained.clearAsync());
  }

  sessions(): SessionRecord[] {
    const out: SessionRecord[] = [];
    for (const { value } of this.kv.sessions.getRange()) out.push(value as SessionRecord);
    return out;
  }
  setSession(record: SessionRecord): void {
    this.track(this.kv.sessions.put(record.clientId, record));
  }
  deleteSession(clientId: string): void {
    this.track(this.kv.sessions.remove(clientId));
    this.track(this.kv.iterators.remove(clientId));
  }
  iterator(clientId: string): IteratorRecord | undefined {
    return this.kv.iterators.get(clientId) as IteratorRecord | undefined;
  }
  setIterator(clientId: string, it: IteratorRecord, lazy = false): void {
    const p = this.kv.iterators.put(clientId, it);
    if (lazy) this.watch(p);
    else this.track(p);
  }

  append(message: Message, direct = false): LogPosition {
    return this.messages.append(message, undefined, direct);
  }
  read(from: LogPosition, max: number): { entries: LogEntry[]; next: LogPosition } {
    return this.messages.read(from, max);
  }
  get tail(): LogPosition {
    return this.messages.tail;
  }
  get full(): boolean {
    return this.messages.full;
  }

  stateLog(): { snapshot: Buffer | undefined; ops: Buffer[] } {
    const ops: Buffer[] = [];
    for (const { value } of this.kv.stateOps.getRange()) ops.push(Buffer.from(value));
    const snap = this.kv.blobs.get(STATE_SNAPSHOT);
    return { snapshot: snap ? Buffer.from(snap) : undefined, ops };
  }
  appendStateOp(op: Buffer): void {
    this.track(this.kv.stateOps.put(this.nextStateSeq++, op));
  }
  compactState(snapshot: Buffer): void {
    const upTo = this.nextStateSeq;
    this.track(
      this.kv.root.transaction(() => {
        void this.kv.blobs.put(STATE_SNAPSHOT, snapshot);
        for (const key of this.kv.stateOps.getKeys({ end: upTo })) void this.kv.stateOps.remove(key);
      }),
    );
  }

  liveWills(): Map<string, LiveWillRecord> {
    const out = new Map<string, LiveWillRecord>();
    for (const { key, value } of this.kv.wills.getRange()) {
      const w = value as LiveWillRecord;
      out.set(key, { ...w, message: { ...w.message, payload: Buffer.from(w.message.payload) } });
    }
    return out;
  }
  setLiveWill(clientId: string, will: LiveWillRecord | undefined): void {
    this.track(will ? this.kv.wills.put(clientId, will) : this.kv.wills.remove(clientId));
  }

  document(name: string): Buffer | undefined {
    const v = this.kv.blobs.get(name);
    return v ? Buffer.from(v) : undefined;
  }
  setDocument(name: string, data: Buffer | undefined): void {
    this.track(data === undefined ? this.kv.blobs.remove(name) : this.kv.blobs.put(name, data));
  }

  onDurable(cb: DurableCallback, arg = 0): void {
    const kv = this.kvLast;
    // nothing keyed pending (the usual case under QoS 1 load): no wrapper per call
    if (!kv) return this.messages.onDurable(cb, arg);
    this.afterBoth(kv, cb, arg);
  }

  /** The log's batch, then the keyed write `kv` (out of onDurable, which then creates no closure on its usual path). */
  private afterBoth(kv: Promise<unknown>, cb: DurableCallback, arg: number): void {
    this.messages.onDurable((err) => {
      if (err) return cb(err, arg);
      kv.then(
        () => cb(undefined, arg),
        (e: Error) => cb(new StorageFullError(e.message), arg),
      );
    });
  }
  flushed(): Promise<void> {
    return new Promise((resolve, reject) => {
      void this.messages.flushed().then(() => this.onDurable((err) => (err ? reject(err) : resolve())), reject);
    });
  }

  info(): StorageInfo {
    const oldest = this.messages.oldestStoredAt();
    return {
      kind: 'durable',
      path: this.opts.dir,
      generations: this.messages.generations(),
      log: { ...this.messages.metrics },
      retained: this.kv.retained.getCount(),
      sessions: this.kv.sessions.getCount(),
      stateOps: this.kv.stateOps.getCount(),
      ...(oldest !== undefined ? { oldestStoredAt: oldest } : {}),
      full: this.messages.reportsFull,
    };
  }

  /** The last keyed write that failed, if any (for the log and metrics). */
  get lastError(): Error | undefined {
    return this.kvError;
  }

  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    await this.messages.close();
    await this.kvLast?.catch(() => undefined);
    await this.kv.root.close();
  }
}
