/**
 * The state store cluster-wide: one JetStream key-value bucket, edb_<cluster>_state
 * (R EDB_CLUSTER_REPLICAS, history 1), one key per state key (base64url), holding the key's
 * whole state after its last write. Each node's table is its mirror of the bucket, kept
 * by a watch, so GET and KEYNOTIFY stay local; a write is executed against the mirror with
 * the usual semantics (versions, NX/NEX, fencing tokens, PX), the mirror's key is put back at
 * once (the mirror holds only what the bucket confirmed), and the write is stored in the
 * bucket with compare-and-set on the key's revision (the revision this node last saw; 0 for
 * a key the bucket never held), also for a plain SET. The answer waits for that: OK means
 * the bucket's quorum has it (R3: it survives the loss of any one node), and the mirror
 * takes it then. When another node wrote the key first the CAS fails, the mirror takes the
 * bucket's value and the request runs again; so per key the writes form one order and no
 * two values share a version.
 *
 * A deadline: each write carries one (the writer's clock + WRITE_DEADLINE_MS). An entry the
 * bucket stored after its deadline (the leader's timestamp of the message: a request held
 * in a cut route and delivered when a partition heals, say) is void: every node ignores it
 * (the key stays as it was, only its revision moves) and writes the key's previous state
 * back over it (compare-and-set on the void entry's revision: whoever is first; a newer write
 * stays). The writer answers OK only for an entry within its deadline; a write it could not
 * confirm (no ack within PUBLISH_TIMEOUT_MS, a partition's minority) is answered with an
 * error, and if it shows up later within its deadline (stored, but the ack lost), the writer
 * puts the previous state back over it the same way. So a write answered with an error does
 * not stay in the bucket, and every node ends on the bucket's value.
 *
 * [layout] the value of a key in the bucket:
 *   u8 kind (bit 0: 1 value, 0 deleted; bit 1: a deadline follows), [f64 deadline (ms since
 *   the epoch), f64 the revision the write expected (0: none)], f64 version wall, u32 version counter, f64 expiresAt
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
import type { Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/nats-core';
import type { KV, KvEntry } from '@nats-io/kv';
import type { MsgRequest, StoredMsg } from '@nats-io/jetstream';
import type { Hlc } from '../state/hlc.js';
import type { StateKeyspace, StateReplica } from '../state/keyspace.js';
import type { StateWrite } from '../state/write-log.js';
import { codes } from '../state/table.js';
import type { ClusterStats } from './status.js';
import { watchBucket } from './watch.js';

interface KeyState {
  deleted: boolean;
  wall: number;
  counter: number;
  node: string;
  expiresAt: number;
  ft: Hlc | undefined;
  value: Buffer;
  /** The writer's deadline (ms since the epoch); 0 for a record without one. */
  deadline: number;
  /** The bucket revision the write expected (compare-and-set), with a deadline. */
  prevRev: number;
}

/** A fencing token above any real one: lets the mirror remove a key whatever token protects it. */
const ANY_TOKEN: Hlc = { wall: 8.64e15, counter: 0xffffffff, node: '\uffff' };

export function encodeKeyState(s: KeyState): Buffer {
  const ftNode = s.ft ? Buffer.from(s.ft.node, 'utf8') : undefined;
  const vNode = Buffer.from(s.node, 'utf8');
  const dl = s.deadline > 0 ? 16 : 0;
  const b = Buffer.allocUnsafe(1 + dl + 8 + 4 + 8 + 1 + (ftNode ? 14 + ftNode.length : 0) + 2 + vNode.length + (s.deleted ? 0 : s.value.length));
  let p = 0;
  b[p++] = (s.deleted ? 0 : 1) | (dl ? 2 : 0);
  if (dl) {
    b.writeDoubleLE(s.deadline, p);
    b.writeDoubleLE(s.prevRev, p + 8);
    p += 16;
  }
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
  const kind = b[p++]!;
  if (kind > 3) throw new RangeError(`state record: unknown kind ${kind}`);
  let deadline = 0;
  let prevRev = 0;
  if (kind & 2) {
    deadline = b.readDoubleLE(p);
    prevRev = b.readDoubleLE(p + 8);
    p += 16;
  }
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
  return { deleted: (kind & 1) === 0, wall, counter, node, expiresAt, ft, value: Buffer.from(b.subarray(p)), deadline, prevRev };
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
/** A write stored later than this after the writer sent it is void (see above). */
export const WRITE_DEADLINE_MS = 4000;
/** How long a write waits for the bucket's ack before it is answered with an error. */
export const PUBLISH_TIMEOUT_MS = 5000;
/** An ack that arrives this close to the deadline (or later) is checked against the entry's stored time. */
const DEADLINE_MARGIN_MS = 500;
/** Writes answered with an error that could still appear, remembered this long (and at most REFUSED_MAX). */
const REFUSED_KEEP_MS = 3_600_000;
const REFUSED_MAX = 10_000;
/**
 * How long a deleted key's record (a DEL, or the sweep's delete marker) stays in the bucket
 * before the lease holder purges it: longer than the stream's duplicate window (2 minutes) and
 * any write's deadline, so that no write still in flight expects that revision. `ms` is
 * changed only by tests.
 */
export const tombstoneAge = { ms: 10 * 60_000 };
const PURGE_BATCH = 64;

const sameVersion = (a: KeyState, b: KeyState): boolean => a.deleted === b.deleted && a.wall === b.wall && a.counter === b.counter && a.node === b.node;
const DELETED: KeyState = { deleted: true, wall: 0, counter: 0, node: '', expiresAt: 0, ft: undefined, value: Buffer.alloc(0), deadline: 0, prevRev: 0 };

/**
 * JetStream publishes to the state bucket, with their acks on one inbox subscription and one
 * timer for all (nats.js's request builds a timer and error objects per request).
 *
 * Compare-and-set: nats-server 2.9 checks `Nats-Expected-Last-Subject-Sequence` against the
 * stored messages only, so two writes of one key in flight at once on the bucket's leader
 * can both pass it (measured: five concurrent updates on the same revision, all five
 * stored). Each write with an expected revision r > 0 also carries the message id
 * `<key>:<r>` ("the successor of revision r"), which the stream's duplicate window
 * (2 minutes) holds from the moment the leader receives it: of several writes on revision r
 * only the first is stored, the others get a duplicate ack and are treated as conflicts. A
 * new key (r = 0) is checked by the server exactly.
 */
class BucketWriter {
  private readonly inbox: string;
  private readonly sub: Subscription;
  private readonly pending = new Map<number, { resolve: (seq: number) => void; reject: (err: Error) => void; at: number }>();
  private next = 0;
  private readonly timer: NodeJS.Timeout;
  /** Writes of this turn of the event loop, published together (one socket write to NATS, not one per write). */
  private queue: { subject: string; data: Uint8Array; reply: string; headers: MsgHdrs; id: number }[] = [];
  private flushing = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly prefix: string,
    private readonly newHeaders: () => MsgHdrs,
    inbox: string,
  ) {
    this.inbox = `${inbox}.`;
    this.sub = nc.subscribe(`${inbox}.*`, { callback: (_err, m) => this.reply(m) });
    this.timer = setInterval(() => this.expire(), 100);
    this.timer.unref();
  }

  /** Store `data` under key `k` (base64url) expecting revision `prevRev`; `del` writes a delete marker. Resolves the new revision. */
  write(k: string, data: Uint8Array, prevRev: number, del = false): Promise<number> {
    const h = this.newHeaders();
    h.set('Nats-Expected-Last-Subject-Sequence', String(prevRev));
    if (prevRev > 0) h.set('Nats-Msg-Id', `${k}:${prevRev}`);
    if (del) h.set('KV-Operation', 'DEL');
    const id = ++this.next;
    return new Promise<number>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, at: Date.now() });
      this.queue.push({ subject: this.prefix + k, data, reply: this.inbox + id, headers: h, id });
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushing = false;
    const q = this.queue;
    this.queue = [];
    for (const w of q) {
      try {
        this.nc.publish(w.subject, w.data, { reply: w.reply, headers: w.headers });
      } catch (err) {
        const p = this.pending.get(w.id);
        this.pending.delete(w.id);
        p?.reject(err instanceof Error ? err : new Error(String(err)));
      }
    }
  }

  private reply(m: Msg): void {
    const id = Number(m.subject.slice(this.inbox.length));
    const p = this.pending.get(id);
    if (!p) return; // answered after its timeout
    this.pending.delete(id);
    if (m.data.length === 0) {
      // a status message: 503, no JetStream responder (no leader, or not reachable)
      p.reject(new Error(`JetStream not available (${m.headers?.code ?? 'no answer'})`));
      return;
    }
    let ack: { seq?: number; duplicate?: boolean; error?: { err_code?: number; description?: string } };
    try {
      ack = JSON.parse(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength).toString('utf8')) as typeof ack;
    } catch {
      p.reject(new Error('JetStream: an ack that is not JSON'));
      return;
    }
    if (ack.error) p.reject(Object.assign(new Error(ack.error.description ?? 'JetStream error'), { code: ack.error.err_code }));
    else if (ack.duplicate) p.reject(Object.assign(new Error('wrong last sequence (another write of this revision came first)'), { code: 10071 }));
    else if (typeof ack.seq === 'number') p.resolve(ack.seq);
    else p.reject(new Error('JetStream: an ack without a sequence'));
  }

  private expire(): void {
    const old = Date.now() - PUBLISH_TIMEOUT_MS;
    for (const [id, p] of this.pending) {
      if (p.at > old) break; // in the order sent
      this.pending.delete(id);
      p.reject(new Error('timeout: no JetStream ack'));
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.sub.unsubscribe();
    for (const p of this.pending.values()) p.reject(new Error('closed'));
    this.pending.clear();
  }
}

function isConflict(err: unknown): boolean {
  const e = err as { code?: number; message?: string };
  // JetStream 10071: wrong last sequence (someone else wrote the key since the revision given)
  return e?.code === 10071 || /wrong last sequence|key exists/i.test(e?.message ?? '');
}

export class ClusterStateStore implements StateReplica {
  private kv: KV | undefined;
  private writer: BucketWriter | undefined;
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
  /** This node's writes answered with an error: "wall:counter" of their version -> when. */
  private readonly refused = new Map<string, number>();
  /** Deleted keys in the bucket: key -> when this node saw the deletion (oldest first). */
  private readonly tombstones = new Map<string, number>();
  private purging = false;
  private jsm: { streams: { purge(name: string, opts: { filter: string; seq: number }): Promise<unknown>; getMessage(stream: string, query: MsgRequest): Promise<StoredMsg | null>; info(stream: string): Promise<{ state: { last_seq: number } }> } } | undefined;
  /** A check of the mirror against the stream's leader (resync()) running, and the lowest revision still to check after it. */
  private resyncing = false;
  private resyncAgain: number | undefined;

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
        this.watcher = await watchBucket(nc, kv, { what: 'the state bucket', bucket: this.bucketName, log: this.log, stats: this.stats, onError: (what, err) => this.error(what, err), onRejoin: (from) => this.resync(from) }, (e) => this.applyEntry(e));
        const { createInbox, headers } = await import('@nats-io/nats-core');
        this.writer = new BucketWriter(nc, `$KV.${this.bucketName}.`, headers, createInbox());
        const { jetstreamManager } = await import('@nats-io/jetstream');
        this.jsm = await jetstreamManager(nc);
        this.kv = kv;
        this.stateText = 'ready';
        this.log.info({ bucket: this.bucketName, replicas: this.replicas }, `cluster: state store in JetStream bucket ${this.bucketName} (R${this.replicas})`);
        return;
      } catch (err) {
        this.error(`bucket ${this.bucketName} not available; retrying`, err);
        await new Promise((r) => setTimeout(r, wait).unref());
        wait = Math.min(wait * 2, 4000);
      }
    }
  }

  private applyEntry(e: KvEntry): void {
    const known = this.seen.get(e.key);
    if (known && known.rev >= e.revision) return; // this node has it already (its own write, acknowledged first)
    if (e.operation !== 'PUT') return this.removed(e.key, e.revision); // a delete marker (the sweep's, or a compensation)
    try {
      const state = decodeKeyState(e.value);
      if (state.deadline > 0 && e.created.getTime() > state.deadline) return this.voided(e.key, e.revision, state, e.value);
      if (state.node === this.node && this.refused.size > 0 && this.refused.delete(`${state.wall}:${state.counter}`)) {
        // a write of this node answered with an error, stored within its deadline after all
        // (its ack was lost): the previous state goes back over it
        this.compensate(e.key, e.revision, known && known.rev === state.prevRev ? known.state : state.prevRev === 0 ? DELETED : undefined, e.value);
      }
      this.apply(Buffer.from(e.key, 'base64url'), e.key, e.revision, state);
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
    this.tombstone(k, state.deleted);
    this.put(key, state);
    if (known && sameVersion(known.state, state)) return; // a compensation: the state this node had already
    const version: Hlc = { wall: state.wall, counter: state.counter, node: state.node };
    this.space.clock.observe(version);
    if (state.deleted) this.space.keyNotify.notify(key, undefined, version);
    else if (state.expiresAt === 0 || state.expiresAt > this.space.now()) this.space.keyNotify.notify(key, state.value, version);
  }

  /**
   * An entry stored after its deadline (its writer answered, or will answer, with an error):
   * the key stays as this node had it, at the entry's revision, and the previous state is
   * written back over it when this node knows it (it held the revision the write expected).
   */
  private voided(k: string, rev: number, state: KeyState, data: Uint8Array): void {
    const known = this.seen.get(k);
    const prev = known && known.rev === state.prevRev ? known.state : state.prevRev === 0 && !known ? DELETED : undefined;
    this.stats.voidedWrites++;
    this.log.info({ key: Buffer.from(k, 'base64url').toString(), revision: rev }, 'cluster: a state-store write stored after its deadline is ignored (its writer answered with an error); the previous value is written back');
    if (!known) {
      // this node never saw the key's previous state (it joined since): absent until the compensation
      this.seen.set(k, { rev, state: DELETED });
      this.put(Buffer.from(k, 'base64url'), undefined);
    } else this.seen.set(k, { rev, state: known.state });
    if (this.refused.size > 0) this.refused.delete(`${state.wall}:${state.counter}`);
    this.compensate(k, rev, prev, data);
  }

  /**
   * Put `prev` (undefined: not known here) back over the entry at `rev` (`data`, as this node's
   * watch delivered it), compare-and-set on it; only once the stream's leader confirms that its
   * entry at `rev` is that one. nats-server 2.9 can leave a server that was cut off with entries
   * of its own at revisions the majority used for other writes (a replica that diverged): a
   * watch reading that server delivers them, and a compare-and-set on such a revision would
   * overwrite the majority's write there. Then nothing is written, and the mirror is checked
   * against the leader from that revision on (resync()).
   */
  private compensate(k: string, rev: number, prev: KeyState | undefined, data: Uint8Array): void {
    const writer = this.writer;
    if (!writer || !prev) return;
    void this.leaderHas(k, rev, data).then((found) => {
      if (found === 'same') this.writeBack(writer, k, rev, prev);
      else if (found === 'other') {
        this.log.warn({ key: Buffer.from(k, 'base64url').toString(), revision: rev }, 'cluster: the state bucket entry this node saw at this revision is not the one its stream leader holds (a replica that diverged in a partition); not undone, the mirror is checked against the leader');
        this.resync(rev);
      }
      // 'gone': the key was written since (one value per key): nothing to undo, the newer write stays;
      // undefined: the leader did not answer, the write-back is left out (the check after healing resyncs)
    });
  }

  /**
   * The stream leader's entry at `rev`: 'same' (key `k` with `data`), 'other' (another entry:
   * this node's view diverged), 'gone' (none: the key was written since), undefined (no answer).
   */
  private async leaderHas(k: string, rev: number, data: Uint8Array): Promise<'same' | 'other' | 'gone' | undefined> {
    const jsm = this.jsm;
    if (!jsm) return undefined;
    try {
      const m = await jsm.streams.getMessage(`KV_${this.bucketName}`, { seq: rev });
      if (!m) return 'gone';
      return m.subject === `$KV.${this.bucketName}.${k}` && Buffer.from(m.data).equals(Buffer.from(data)) ? 'same' : 'other';
    } catch {
      return undefined;
    }
  }

  /**
   * The mirror checked against the stream's leader from revision `from` on (after a partition,
   * or a diverged entry found): every entry the leader holds from there is taken where this
   * node holds another one at that revision or an older one, and each key this node holds at a
   * revision from there that the leader does not confirm is read from the leader again (taken,
   * or removed when the leader has no entry for it). Leader-only reads (STREAM.MSG.GET), one per
   * entry: meant for the few entries of a partition.
   */
  resync(from: number): void {
    if (this.resyncing) {
      this.resyncAgain = Math.min(this.resyncAgain ?? from, from);
      return;
    }
    const jsm = this.jsm;
    if (!jsm) return;
    this.resyncing = true;
    const stream = `KV_${this.bucketName}`;
    const prefix = `$KV.${this.bucketName}.`;
    void (async () => {
      let taken = 0;
      const confirmed = new Set<string>();
      try {
        // up to the stream's end as the leader has it now (later entries come through the watch)
        const end = (await jsm.streams.info(stream)).state.last_seq;
        for (let seq = from; seq <= end; ) {
          const m = await jsm.streams.getMessage(stream, { seq, next_by_subj: `${prefix}>` } as unknown as MsgRequest);
          if (!m || m.seq > end) break;
          const k = m.subject.slice(prefix.length);
          if (this.takeFromLeader(k, m)) taken++;
          confirmed.add(k);
          seq = m.seq + 1;
        }
        for (const [k, v] of [...this.seen]) {
          if (v.rev < from || v.rev > end || confirmed.has(k)) continue;
          const m = await jsm.streams.getMessage(stream, { last_by_subj: `${prefix}${k}` });
          if (m ? this.takeFromLeader(k, m) : this.dropKey(k)) taken++;
        }
        this.log.info({ from, taken }, `cluster: state mirror checked against the stream leader from revision ${from}: ${taken} keys taken from it`);
      } catch (err) {
        // not answering (cut off again): the next rejoin or diverged entry starts it again
        this.resyncAgain = Math.min(this.resyncAgain ?? from, from);
        this.error('the state mirror could not be checked against the stream leader now', err);
      } finally {
        this.resyncing = false;
        const again = this.resyncAgain;
        this.resyncAgain = undefined;
        if (again !== undefined && !this.closed) setTimeout(() => this.resync(again), 1000).unref();
      }
    })();
  }

  /** The leader's entry `m` for key `k`, into the mirror unless this node holds it (or a newer one) already. */
  private takeFromLeader(k: string, m: StoredMsg): boolean {
    const known = this.seen.get(k);
    if (known && known.rev > m.seq) return false;
    const op = m.header?.get('KV-Operation') || 'PUT';
    if (known && known.rev === m.seq && op === 'PUT' && !known.state.deleted) {
      try {
        if (sameVersion(known.state, decodeKeyState(m.data))) return false;
      } catch {
        /* taken below, and reported there */
      }
    }
    if (known && known.rev === m.seq && op !== 'PUT' && known.state.deleted) return false;
    // what this node held stays its "previous state" (for KEYNOTIFY), below the leader's revision
    if (known) this.seen.set(k, { rev: m.seq - 1, state: known.state });
    this.applyEntry({ key: k, revision: m.seq, operation: op, value: m.data, created: m.time } as unknown as KvEntry);
    return true;
  }

  /** A key the leader has no entry for: out of the mirror (watchers told when it held a value). */
  private dropKey(k: string): boolean {
    const known = this.seen.get(k);
    if (!known) return false;
    this.seen.delete(k);
    this.expiring.delete(k);
    this.tombstones.delete(k);
    if (known.state.deleted) return false;
    const key = Buffer.from(k, 'base64url');
    this.put(key, undefined);
    this.space.keyNotify.notify(key, undefined, { wall: known.state.wall, counter: known.state.counter, node: known.state.node });
    return true;
  }

  private writeBack(writer: BucketWriter, k: string, rev: number, prev: KeyState): void {
    const done = (at: number): void => {
      this.stats.compensations++;
      this.log.info({ key: Buffer.from(k, 'base64url').toString(), over: rev, revision: at, version: `${prev.wall}.${prev.counter}.${prev.node}` }, 'cluster: a state-store write undone (its previous state written back)');
    };
    const failed = (err: unknown): void => {
      if (isConflict(err)) return; // another node put it back first, or a newer write came: that stays
      this.stats.jetstreamErrors++;
      this.error('a void state-store write could not be undone now', err);
    };
    if (prev.deleted && prev.wall === 0) {
      void writer.write(k, new Uint8Array(0), rev, true).then(done, failed);
      return;
    }
    const data = encodeKeyState({ ...prev, deadline: Date.now() + WRITE_DEADLINE_MS, prevRev: rev });
    void writer.write(k, data, rev).then(done, failed);
  }

  /** A key deleted in the bucket (delete marker at `rev`): out of the mirror; its watchers told once. */
  private removed(k: string, rev: number): void {
    const known = this.seen.get(k);
    if (known && known.rev >= rev) return;
    const key = Buffer.from(k, 'base64url');
    const base = known?.state;
    this.seen.set(k, { rev, state: { deleted: true, wall: base?.wall ?? 0, counter: base?.counter ?? 0, node: base?.node ?? this.node, expiresAt: 0, ft: undefined, value: Buffer.alloc(0), deadline: 0, prevRev: 0 } });
    this.expiring.delete(k);
    this.tombstone(k, true);
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

  private tombstone(k: string, deleted: boolean): void {
    this.tombstones.delete(k);
    if (deleted) this.tombstones.set(k, Date.now());
  }

  /**
   * On the lease holder: the records of keys deleted longer than tombstoneAge ago leave the
   * bucket (a stream purge of the key's subject up to the deletion's revision: a write that came
   * after it stays). The other nodes keep the key as deleted; a write of it there finds the
   * subject empty, a conflict, and runs again on revision 0.
   */
  private purgeTombstones(now: number): void {
    const jsm = this.jsm;
    if (!jsm || this.purging || this.tombstones.size === 0) return;
    const due: [string, number][] = [];
    for (const [k, at] of this.tombstones) {
      if (at > now - tombstoneAge.ms || due.length >= PURGE_BATCH) break;
      const known = this.seen.get(k);
      if (known?.state.deleted) due.push([k, known.rev]);
      else this.tombstones.delete(k);
    }
    if (due.length === 0) return;
    this.purging = true;
    const stream = `KV_${this.bucketName}`;
    void Promise.all(
      due.map(([k, rev]) =>
        jsm.streams.purge(stream, { filter: `$KV.${this.bucketName}.${k}`, seq: rev + 1 }).then(
          () => {
            this.stats.tombstonesPurged++;
            if (this.seen.get(k)?.rev === rev) {
              this.seen.delete(k);
              this.tombstones.delete(k);
            }
          },
          (err: unknown) => {
            this.stats.jetstreamErrors++;
            this.error('a deleted state key could not be purged from the bucket', err);
          },
        ),
      ),
    ).finally(() => {
      this.purging = false;
    });
  }

  /**
   * On the lease holder, every tick: delete the keys whose expiry has passed from the bucket
   * (at most every SWEEP_MS, SWEEP_BATCH at a time, one round at a time).
   */
  sweepExpired(): void {
    const writer = this.writer;
    const now = Date.now();
    if (!writer || this.sweeping || now - this.lastSweep < SWEEP_MS) return;
    this.lastSweep = now;
    this.purgeTombstones(now);
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
        writer.write(k, new Uint8Array(0), rev, true).then(
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
    const writer = this.writer;
    const key = Buffer.from(w.key);
    const k = keyOf(key);
    const before = this.seen.get(k);
    if (!kv || !writer) {
      this.put(key, before?.state);
      return Promise.reject(new Error('the state bucket is not reachable yet'));
    }
    const deleted = w.value === undefined || w.op !== 1;
    const sent = Date.now();
    const prevRev = before?.rev ?? 0;
    const state: KeyState = {
      deleted,
      wall: w.version.wall,
      counter: w.version.counter,
      node: this.node,
      expiresAt: deleted ? 0 : w.expiresAt,
      ft: w.ft,
      value: deleted ? Buffer.alloc(0) : Buffer.from(w.value!),
      deadline: sent + WRITE_DEADLINE_MS,
      prevRev,
    };
    const data = encodeKeyState(state);
    // the mirror holds only what the bucket confirmed: the key goes back until the ack
    this.put(key, before?.state);
    // compare-and-set on the revision this node saw, 0 for a key the bucket never held
    const written = writer.write(k, data, prevRev);
    return written.then(
      async (rev) => {
        if (Date.now() > state.deadline - DEADLINE_MARGIN_MS) {
          // a late ack: the entry counts only if the bucket stored it within the deadline
          const e = await kv.get(k, { revision: rev }).catch(() => null);
          if (!e || e.created.getTime() > state.deadline) {
            this.stats.jetstreamErrors++;
            this.error('a state-store write was stored after its deadline (void)', new Error(`revision ${rev}`));
            throw new Error('stored after its deadline');
          }
        }
        this.apply(key, k, rev, state);
        return 'ok' as const;
      },
      async (err: unknown) => {
        if (isConflict(err)) {
          // another node wrote the key first: the mirror takes the bucket's value, the request runs again
          this.log.debug({ key: w.key.toString(), prevRev }, 'cluster: state-store write conflict');
          try {
            const e = await kv.get(k);
            if (e) this.applyEntry(e);
            else if (this.seen.get(k)?.state.deleted) {
              // purged (a deleted key's record left the bucket): written again on revision 0
              this.seen.delete(k);
              this.tombstones.delete(k);
            }
            return 'conflict' as const;
          } catch (e2) {
            err = e2;
          }
        }
        this.stats.jetstreamErrors++;
        this.error('a state-store write could not be replicated', err);
        this.log.info({ key: Buffer.from(w.key).toString(), prevRev, version: `${state.wall}.${state.counter}`, err: err instanceof Error ? err.message : String(err) }, 'cluster: a state-store write answered with an error');
        // not confirmed: it may still reach the bucket within its deadline (an ack lost), then
        // this node puts the previous state back over it (applyEntry)
        if (this.refused.size >= REFUSED_MAX) {
          for (const [v, at] of this.refused) if (at < sent - REFUSED_KEEP_MS || this.refused.size >= REFUSED_MAX) this.refused.delete(v);
        }
        this.refused.set(`${state.wall}:${state.counter}`, sent);
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
    this.writer?.close();
  }
}
