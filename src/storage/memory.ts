/**
 * EDB_STORAGE=memory: the storage interface over plain maps and an array. Nothing reaches
 * the disk here; the backup (src/persistence) saves the broker's state on a graceful stop.
 * Positions are (1, index): one generation that never ends.
 */
import type { Message } from '../mqtt/message.js';
import type { LogEntry, LogMetrics, LogPosition } from './log.js';
import type { BrokerStorage, DurableCallback, IteratorRecord, LiveWillRecord, SessionRecord, StorageInfo } from './store.js';

const clone = <T>(v: T): T => structuredClone(v);

export class MemoryStorage implements BrokerStorage {
  readonly kind = 'memory' as const;
  private readonly retainedByTopic = new Map<string, Message>();
  private readonly sessionRecords = new Map<string, SessionRecord>();
  private readonly iterators = new Map<string, IteratorRecord>();
  private readonly entries: { message: Message; storedAt: number; direct: boolean }[] = [];
  private stateSnapshot: Buffer | undefined;
  private stateOps: Buffer[] = [];
  private readonly docs = new Map<string, Buffer>();
  private readonly wills = new Map<string, LiveWillRecord>();

  retained(): Message[] {
    return [...this.retainedByTopic.values()];
  }
  setRetained(message: Message): void {
    if (message.payload.length === 0) this.retainedByTopic.delete(message.topic);
    else this.retainedByTopic.set(message.topic, message);
  }
  clearRetained(): void {
    this.retainedByTopic.clear();
  }

  sessions(): SessionRecord[] {
    return [...this.sessionRecords.values()].map(clone);
  }
  setSession(record: SessionRecord): void {
    this.sessionRecords.set(record.clientId, clone(record));
  }
  deleteSession(clientId: string): void {
    this.sessionRecords.delete(clientId);
    this.iterators.delete(clientId);
  }
  iterator(clientId: string): IteratorRecord | undefined {
    const it = this.iterators.get(clientId);
    return it && clone(it);
  }
  setIterator(clientId: string, it: IteratorRecord, _lazy?: boolean): void {
    this.iterators.set(clientId, clone(it));
  }

  append(message: Message, direct = false): LogPosition {
    this.entries.push({ message, storedAt: Date.now(), direct });
    return { gen: 1, offset: this.entries.length - 1 };
  }
  read(from: LogPosition, max: number): { entries: LogEntry[]; next: LogPosition } {
    const out: LogEntry[] = [];
    let i = Math.max(0, from.offset);
    while (out.length < max && i < this.entries.length) {
      const e = this.entries[i]!;
      out.push({ pos: { gen: 1, offset: i }, next: { gen: 1, offset: i + 1 }, message: e.message, storedAt: e.storedAt, direct: e.direct });
      i++;
    }
    return { entries: out, next: { gen: 1, offset: i } };
  }
  get tail(): LogPosition {
    return { gen: 1, offset: this.entries.length };
  }
  get full(): boolean {
    return false;
  }

  stateLog(): { snapshot: Buffer | undefined; ops: Buffer[] } {
    return { snapshot: this.stateSnapshot, ops: [...this.stateOps] };
  }
  appendStateOp(op: Buffer): void {
    this.stateOps.push(op);
  }
  compactState(snapshot: Buffer): void {
    this.stateSnapshot = snapshot;
    this.stateOps = [];
  }

  liveWills(): Map<string, LiveWillRecord> {
    return new Map([...this.wills].map(([k, v]) => [k, { ...v, message: { ...v.message } }]));
  }
  setLiveWill(clientId: string, will: LiveWillRecord | undefined): void {
    if (will) this.wills.set(clientId, will);
    else this.wills.delete(clientId);
  }

  document(name: string): Buffer | undefined {
    return this.docs.get(name);
  }
  setDocument(name: string, data: Buffer | undefined): void {
    if (data === undefined) this.docs.delete(name);
    else this.docs.set(name, Buffer.from(data));
  }

  onDurable(cb: DurableCallback, arg = 0): void {
    queueMicrotask(() => cb(undefined, arg));
  }
  flushed(): Promise<void> {
    return Promise.resolve();
  }
  info(): StorageInfo {
    const log: LogMetrics = {
      bytes: 0, generations: 1, messagesAppended: this.entries.length, bytesAppended: 0, commits: 0, commitMillisTotal: 0, commitMillisMax: 0,
      lastBatchMessages: 0, generationsDropped: 0, bytesDropped: 0, tornBytes: 0, damagedBytes: 0, refused: 0, replayMillis: 0,
    };
    return {
      kind: 'memory',
      generations: [{ id: 1, layout: 1, createdAt: 0, bytes: 0, current: true }],
      log,
      retained: this.retainedByTopic.size,
      sessions: this.sessionRecords.size,
      stateOps: this.stateOps.length,
      ...(this.entries[0] ? { oldestStoredAt: this.entries[0].storedAt } : {}),
      full: false,
    };
  }
  async close(): Promise<void> {}
}
