/**
 * The state store cluster-wide: one JetStream key-value bucket, edb_<cluster>_state
 * (R EDB_CLUSTER_REPLICAS, history 1), one key per state key (base64url), holding the key's
 * whole state after its last write. Each node's table is its mirror of the bucket, kept
 * by a watch, so GET and KEYNOTIFY stay local; a write is executed against the mirror with
 * the usual semantics (versions, NX/NEX, fencing tokens, PX) and then stored in the bucket
 * with compare-and-set on the key's revision (the revision this node last saw). The
 * answer waits for that: OK means the bucket's quorum has it (R3: it survives the loss of
 * any one node). When another node wrote the key first the CAS fails, the mirror takes the
 * bucket's value and the request runs again; so per key the writes form one order and no
 * two values share a version. Without a quorum (a partition's minority) the write is
 * refused with an error and the mirror's key is put back.
 *
 * [layout] the value of a key in the bucket:
 *   u8 kind (1 value, 0 deleted), f64 version wall, u32 version counter, f64 expiresAt
 *   (0: none), u8 has fencing token [f64 wall, u32 counter, u16 node length, node],
 *   u16 version node length, version node, then the value bytes (kind 1).
 *
 * KEYNOTIFY: every node tells its own registered clients of every change it sees in the
 * bucket (its own writes once replicated, other nodes' through the watch); expiry is
 * noticed by each node's sweep and told to its own clients, once, as on a single node.
 *
 * Expired keys leave the bucket: the node holding the cluster's lease (rule-buffer.ts: one
 * node at a time) deletes them every SWEEP_MS, a delete marker with compare-and-set on the
 * revision it saw (a key written again meanwhile is left alone), at most SWEEP_BATCH at a
 * time. Every node's watch sees the marker: the key leaves its mirror, and a node whose own
 * sweep had not yet removed it tells its clients of the expiry then (never twice).
 */
import type { Logger } from 'pino';
import type { NatsConnection } from '@nats-io/nats-core';
import type { KV, KvEntry } from '@nats-io/kv';
import type { Hlc } from '../state/hlc.js';
import type { StateKeyspace, StateReplica } from '../state/keyspace.js';
import type { StateWrite } from '../state/write-log.js';
import { codes } from '../state/table.js';
import type { ClusterStats } from './status.js';

interface KeyState {
  deleted: boolean;
  wall: number;
  counter: number;
  node: string;
  expiresAt: number;
  ft: Hlc | undefined;
  value: Buffer;
}

/** A fencing token above any real one: lets the mirror remove a key whatever token protects it. */
const ANY_TOKEN: Hlc = { wall: 8.64e15, counter: 0xffffffff, node: '\uffff' };

export function encodeKeyState(s: KeyState): Buffer {
  const ftNode = s.ft ? Buffer.from(s.ft.node, 'utf8') : undefined;
  const vNode = Buffer.from(s.node, 'utf8');
  const b = Buffer.allocUnsafe(1 + 8 + 4 + 8 + 1 + (ftNode ? 14 + ftNode.length : 0) + 2 + vNode.length + (s.deleted ? 0 : s.value.length));
  let p = 0;
  b[p++] = s.deleted ? 0 : 1;
  b.writeDoubleLE(s.wall, p);
  b.writeUInt32LE(s.counter >>> 0, p + 8);
  b.writeDoubleLE(s.expiresAt, p + 12);
  p += 20;
  b[p++] = ftNode ? 1 : 0;
  if (ftNode && s.ft) {
    b.writeDoubleLE(s.ft.wall, p);
    b.writeUInt32LE(s.ft.counter >>> 0, p + 8);
    b.writeUInt16LE(ftNode.length, p + 12);
    ftNode.copy(b, p + 14);
    p += 14 + ftNode.length;
  }
  b.writeUInt16LE(vNode.length, p);
  vNode.copy(b, p + 2);
  p += 2 + vNode.length;
  if (!s.deleted) s.value.copy(b, p);
  return b;
}

/** Throws RangeError on a record that runs short. */
export function decodeKeyState(data: Uint8Array): KeyState {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let p = 0;
  const kind = b[p++];
  if (kind !== 0 && kind !== 1) throw new RangeError(`state record: unknown kind ${kind}`);
  const wall = b.readDoubleLE(p);
  const counter = b.readUInt32LE(p + 8);
  const expiresAt = b.readDoubleLE(p + 12);
  p += 20;
  let ft: Hlc | undefined;
  if (b[p++] === 1) {
    const n = b.readUInt16LE(p + 12);
    ft = { wall: b.readDoubleLE(p), counter: b.readUInt32LE(p + 8), node: b.toString('utf8', p + 14, p + 14 + n) };
    p += 14 + n;
  }
  const vn = b.readUInt16LE(p);
  if (p + 2 + vn > b.length) throw new RangeError('state record: truncated');
  const node = b.toString('utf8', p + 2, p + 2 + vn);
  p += 2 + vn;
  return { deleted: kind === 0, wall, counter, node, expiresAt, ft, value: Buffer.from(b.subarray(p)) };
}

/** The table's snapshot record for one key (table.ts importRecords layout). */
function tableRecord(key: Uint8Array, s: KeyState): Buffer {
  const ftNode = s.ft ? Buffer.from(s.ft.node, 'utf8') : undefined;
  const ftLen = ftNode ? 12 + ftNode.length : 0;
  const rec = Buffer.alloc(codes.RECORD_HEADER + key.length + s.value.length + ftLen);
  rec.writeUInt32LE(key.length, 0);
  rec.writeUInt32LE(s.value.length, 4);
  rec.writeDoubleLE(s.wall, 8);
  rec.writeUInt32LE(s.counter >>> 0, 16);
  rec.writeUInt32LE(ftLen, 20);
  rec.writeDoubleLE(s.expiresAt, 24);
  let p = codes.RECORD_HEADER;
  rec.set(key, p);
  p += key.length;
  p += s.value.copy(rec, p);
  if (ftNode && s.ft) {
    rec.writeDoubleLE(s.ft.wall, p);
    rec.writeUInt32LE(s.ft.counter >>> 0, p + 8);
    ftNode.copy(rec, p + 12);
  }
  return rec;
}

const keyOf = (key: Uint8Array): string => Buffer.from(key).toString('base64url');

/** How often the lease holder removes expired keys from the bucket, and how many per round. */
export const SWEEP_MS = 1000;
const SWEEP_BATCH = 512;

function isConflict(err: unknown): boolean {
  const e = err as { code?: number; message?: string };
  // JetStream 10071: wrong last sequence (someone else wrote the key since the revision given)
  return e?.code === 10071 || /wrong last sequence|key exists/i.test(e?.message ?? '');
}

export class ClusterStateStore implements StateReplica {
  private kv: KV | undefined;
  /** What this node last saw of each key in the bucket: its revision and state. */
  private readonly seen = new Map<string, { rev: number; state: KeyState }>();
  private closed = false;
  private watcher: { stop(): void } | undefined;
  private lastErrorLog = 0;
  stateText = 'connecting';
  /** Keys with an expiry, as the bucket holds them: key -> expiresAt (what the sweep looks at). */
  private readonly expiring = new Map<string, number>();
  private sweeping = false;
  private lastSweep = 0;

  constructor(
    private readonly space: StateKeyspace,
    private readonly node: string,
    private readonly cluster: string,
    private readonly replicas: number,
    private readonly log: Logger,
    private readonly stats: ClusterStats,
  ) {}

  get bucketName(): string {
    return `edb_${this.cluster}_state`;
  }

  get keys(): number {
    let n = 0;
    for (const v of this.seen.values()) if (!v.state.deleted) n++;
    return n;
  }

  async attach(nc: NatsConnection): Promise<void> {
    if (this.kv) return;
    const { Kvm } = await import('@nats-io/kv');
    let wait = 250;
    while (!this.closed && !nc.isClosed()) {
      try {
        const kv = await new Kvm(nc).create(this.bucketName, { replicas: this.replicas, history: 1, description: 'Edge Data Broker: the state store, one key per state key' });
        // the mirror starts from the bucket: what this node held alone is replaced
        this.space.table.clear();
        const iter = await kv.watch();
        this.watcher = iter;
        this.kv = kv;
        this.stateText = 'ready';
        this.log.info({ bucket: this.bucketName, replicas: this.replicas }, `cluster: state store in JetStream bucket ${this.bucketName} (R${this.replicas})`);
        void (async () => {
          try {
            for await (const e of iter) this.applyEntry(e);
          } catch (err) {
            if (!this.closed) this.error('the state bucket watch stopped', err);
          }
        })();
        return;
      } catch (err) {
        this.error(`bucket ${this.bucketName} not available; retrying`, err);
        await new Promise((r) => setTimeout(r, wait).unref());
        wait = Math.min(wait * 2, 4000);
      }
    }
  }

  private applyEntry(e: KvEntry): void {
    if (e.operation !== 'PUT') return this.removed(e.key, e.revision); // the sweep's delete marker (or a purge)
    try {
      this.apply(Buffer.from(e.key, 'base64url'), e.key, e.revision, decodeKeyState(e.value));
    } catch (err) {
      this.stats.badMessages++;
      this.error(`a malformed state record under ${e.key}`, err);
    }
  }

  /** The bucket's state of a key at `rev` into the mirror; watchers told when it is news here. */
  private apply(key: Buffer, k: string, rev: number, state: KeyState): void {
    const known = this.seen.get(k);
    if (known && known.rev >= rev) return; // this node has it already (its own write, acknowledged first)
    this.seen.set(k, { rev, state });
    if (!state.deleted && state.expiresAt !== 0) this.expiring.set(k, state.expiresAt);
    else this.expiring.delete(k);
    this.put(key, state);
    const version: Hlc = { wall: state.wall, counter: state.counter, node: state.node };
    this.space.clock.observe(version);
    if (state.deleted) this.space.keyNotify.notify(key, undefined, version);
    else if (state.expiresAt === 0 || state.expiresAt > this.space.now()) this.space.keyNotify.notify(key, state.value, version);
  }

  /** A key deleted in the bucket (delete marker at `rev`): out of the mirror; its watchers told once. */
  private removed(k: string, rev: number): void {
    const known = this.seen.get(k);
    if (known && known.rev >= rev) return;
    const key = Buffer.from(k, 'base64url');
    const base = known?.state;
    this.seen.set(k, { rev, state: { deleted: true, wall: base?.wall ?? 0, counter: base?.counter ?? 0, node: base?.node ?? this.node, expiresAt: 0, ft: undefined, value: Buffer.alloc(0) } });
    this.expiring.delete(k);
    const { table } = this.space;
    const now = this.space.now();
    // an expired key still in the table goes the way of a local expiry (counted, watchers told);
    // one this node's sweep removed already was told then
    const live = table.get(key, now);
    if (table.last.expired) this.space.notifyExpired(key);
    else if (live !== undefined) {
      table.delete(key, undefined, ANY_TOKEN, now);
      this.space.notifyExpired(key);
    }
  }

  /**
   * On the lease holder, every tick: delete the keys whose expiry has passed from the bucket
   * (at most every SWEEP_MS, SWEEP_BATCH at a time, one round at a time).
   */
  sweepExpired(): void {
    const kv = this.kv;
    const now = Date.now();
    if (!kv || this.sweeping || now - this.lastSweep < SWEEP_MS) return;
    this.lastSweep = now;
    const at = this.space.now();
    const due: [string, number][] = [];
    for (const [k, expiresAt] of this.expiring) {
      if (expiresAt > at) continue;
      const known = this.seen.get(k);
      if (known && !known.state.deleted) due.push([k, known.rev]);
      if (due.length >= SWEEP_BATCH) break;
    }
    if (due.length === 0) return;
    this.sweeping = true;
    void Promise.all(
      due.map(([k, rev]) =>
        kv.delete(k, { previousSeq: rev }).then(
          () => {
            this.stats.expiredSwept++;
          },
          (err: unknown) => {
            // written again since (a conflict): the new value stays
            if (!isConflict(err)) {
              this.stats.jetstreamErrors++;
              this.error('an expired state key could not be removed from the bucket', err);
            }
          },
        ),
      ),
    ).finally(() => {
      this.sweeping = false;
    });
  }

  /** Make the mirror's key `state` whatever it holds now. */
  private put(key: Buffer, state: KeyState | undefined): void {
    const { table } = this.space;
    const now = this.space.now();
    if (!state || state.deleted) {
      table.delete(key, undefined, ANY_TOKEN, now);
      return;
    }
    table.importRecords(tableRecord(key, state), now);
  }

  replicate(w: StateWrite): Promise<'ok' | 'conflict'> {
    const kv = this.kv;
    const key = Buffer.from(w.key);
    const k = keyOf(key);
    const before = this.seen.get(k);
    if (!kv) {
      this.put(key, before?.state);
      return Promise.reject(new Error('the state bucket is not reachable yet'));
    }
    const deleted = w.value === undefined || w.op !== 1;
    const state: KeyState = {
      deleted,
      wall: w.version.wall,
      counter: w.version.counter,
      node: this.node,
      expiresAt: deleted ? 0 : w.expiresAt,
      ft: w.ft,
      value: deleted ? Buffer.alloc(0) : Buffer.from(w.value!),
    };
    const data = encodeKeyState(state);
    const written = before ? kv.update(k, data, before.rev) : kv.create(k, data);
    return written.then(
      (rev) => {
        this.apply(key, k, rev, state);
        return 'ok' as const;
      },
      async (err: unknown) => {
        if (isConflict(err)) {
          // another node wrote the key first: the mirror takes the bucket's value, the request runs again
          try {
            const e = await kv.get(k);
            if (e && e.operation === 'PUT') this.apply(key, k, e.revision, decodeKeyState(e.value));
            return 'conflict' as const;
          } catch (e2) {
            err = e2;
          }
        }
        this.stats.jetstreamErrors++;
        this.error('a state-store write could not be replicated', err);
        // not replicated: the mirror's key goes back to what the bucket had
        const now = this.seen.get(k);
        this.put(key, now?.state);
        throw err instanceof Error ? err : new Error(String(err));
      },
    );
  }

  private error(what: string, err: unknown): void {
    const text = err instanceof Error ? err.message : String(err);
    if (!this.kv) this.stateText = `error: ${text}`;
    const now = Date.now();
    if (now - this.lastErrorLog >= 10_000) {
      this.lastErrorLog = now;
      this.log.warn({ err: text, bucket: this.bucketName }, `cluster: ${what}`);
    }
  }

  close(): void {
    this.closed = true;
    this.watcher?.stop();
  }
}
