/**
 * One rule buffer for the cluster: the node that holds the cluster's lease runs the rules
 * (rule statements and logic) on every node's messages; every other node runs only the
 * filters on its messages and sends the messages that rule statements match to the holder.
 * So outputs of rules are published once, from the holder, and messages published on
 * different nodes meet in one buffer.
 *
 * The lease: key `holder` in the JetStream bucket edb_<cluster>_lease (R EDB_CLUSTER_REPLICAS,
 * history 1, max age LEASE_TTL_MS: a value not renewed is removed by the servers).
 *  - acquire: create the key (succeeds only when it is absent: one node wins); the revision
 *    of that create is the lease's fencing number (JetStream revisions only grow);
 *  - renew: every RENEW_MS, update with compare-and-set on the revision last written, which
 *    also restarts the value's age;
 *  - the holder acts as holder only until HOLD_MS after the last renewal it sent that the
 *    bucket confirmed (before the servers can remove the key, LEASE_TTL_MS after they stored
 *    it): a holder cut off from the quorum stops before another node can take over;
 *  - the other nodes watch the key; when no renewal has come for TAKEOVER_AFTER_MS they try
 *    to create it (it is there until it expires: the create fails until then), so a dead
 *    holder is replaced within about LEASE_TTL_MS + TICK_MS;
 *  - a node that stops (SIGTERM) deletes the key, and another takes over at once.
 * The buffer survives a takeover: the holder checkpoints it (the rules' snapshot section: the
 * buffered messages and the statements' memory, with the document's ETag) into the JetStream
 * bucket edb_<cluster>_rulebuf (R EDB_CLUSTER_REPLICAS, history 1), key `buffer`, every
 * CHECKPOINT_MS when it changed, compare-and-set on the revision it last wrote (or read), and
 * once more when it stops gracefully. A node that takes the lease reads that checkpoint before
 * it acts as holder and starts from it (a buffer saved under another document's ETag is not
 * applied: RulesBackup restores a buffer only into the document it was saved with). What the dead holder buffered after its last
 * checkpoint (at most CHECKPOINT_MS of messages) is lost. The holder also sweeps the state
 * store's expired keys (state.ts: one node at a time).
 *
 * Messages for the holder: core NATS subject edb.<cluster>.rulebuf.<holder>.<fence>, the
 * wire.ts layout. The holder takes a message only for its current fencing number: one sent
 * for an earlier lease (of this node or another) is dropped, never folded into a new buffer.
 */
import type { Logger } from 'pino';
import type { NatsConnection, Subscription as NatsSubscription } from '@nats-io/nats-core';
import type { KV, KvEntry } from '@nats-io/kv';
import type { Message } from '../mqtt/message.js';
import type { ClusterStats } from './status.js';
import { watchBucket } from './watch.js';
import { decodeMessage, encodeMessage } from './wire.js';

/** The part of the rules service the cluster's rule buffer uses (RulesService has it). */
export interface RuleBufferView {
  placeRuleBuffer(placement: { holds(): boolean; toHolder(message: Message): void } | undefined): void;
  runRules(message: Message): void;
  clearRuleBuffer(): void;
  /** The rule buffer and the statements' memory as bytes (the backup's and the durable storage's "rules" section). */
  snapshotSection(): {
    save(): Buffer | Promise<Buffer>;
    restore(data: Buffer): void | Promise<void>;
    reset?(): void | Promise<void>;
    /** A restored buffer that waits for its program (compiling), and its application once it is active. */
    readonly pending: boolean;
    applyBuffer(): void;
    applyMemory(): void;
  };
}

export const LEASE_TTL_MS = 3000;
export const RENEW_MS = 1000;
export const HOLD_MS = 2500;
const TICK_MS = 250;
const TAKEOVER_AFTER_MS = 2 * RENEW_MS;
const KEY = 'holder';
/** The holder checkpoints the buffer this often (when it changed). */
export const CHECKPOINT_MS = 1000;
const CHECKPOINT_KEY = 'buffer';
/** How long a new holder waits for the checkpoint before it starts from an empty buffer. */
const LOAD_TIMEOUT_MS = 1000;

/** The checkpoint's value: who wrote it, for which lease, when, and the rules' section (base64). */
interface CheckpointValue {
  n: string;
  f: number;
  at: number;
  b: string;
}

interface LeaseValue {
  /** The holder's node name. */
  n: string;
  /** The lease's fencing number (0 in the create: its own revision). */
  f: number;
}

export interface RuleBufferState {
  /** "ready", "connecting", "error: ..." */
  state: string;
  /** The node holding the lease, as far as this node knows. */
  holder: string | undefined;
  /** Its fencing number (the revision of the create that started the lease). */
  fence: number;
  /** This node holds it now. */
  held: boolean;
}

/** Called with the holder's state every tick (the state store's sweep runs on the holder). */
export type HolderTask = () => void;

export class ClusterRuleBuffer {
  private kv: KV | undefined;
  private nc: NatsConnection | undefined;
  private sub: NatsSubscription | undefined;
  private watcher: { stop(): void } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private lastErrorLog = 0;
  stateText = 'connecting';
  /** The holder as far as this node knows, and its fencing number. */
  private holder: string | undefined;
  private fence = 0;
  /** This node's lease: the revision it last wrote, and until when it may act as holder. */
  private ownRev = 0;
  private heldUntil = 0;
  private renewing = false;
  private acquiring = false;
  private lastRenewAt = 0;
  /** When this node last saw the key change (a renewal, a new holder). */
  private lastChange = 0;
  private lastRev = 0;
  private readonly tasks: HolderTask[] = [];
  /** The checkpoint bucket; the revision of the checkpoint this holder last wrote or read (0: none), and what it held. */
  private ckpt: KV | undefined;
  private ckptRev = 0;
  private ckptSaved: Buffer | undefined;
  private lastCheckpointAt = 0;
  private checkpointing: Promise<void> | undefined;
  /** The checkpoint taken over waits for this node's program to be active (RulesBackup.pending). */
  private applyPending = false;

  constructor(
    private readonly rules: RuleBufferView | undefined,
    private readonly node: string,
    private readonly cluster: string,
    private readonly replicas: number,
    private readonly prefix: string,
    private readonly log: Logger,
    private readonly stats: ClusterStats,
  ) {
    rules?.placeRuleBuffer(this);
  }

  get bucketName(): string {
    return `edb_${this.cluster}_lease`;
  }

  get checkpointBucketName(): string {
    return `edb_${this.cluster}_rulebuf`;
  }

  /** Run `task` every tick while this node holds the lease. */
  onHolder(task: HolderTask): void {
    this.tasks.push(task);
  }

  /** Whether this node holds the cluster's lease now (the rules service asks on every message). */
  holds(): boolean {
    return this.holder === this.node && Date.now() < this.heldUntil;
  }

  /** A message here that rule statements match: to the holder (nothing when none is known). */
  toHolder(message: Message): void {
    const holder = this.holder;
    const nc = this.nc;
    if (holder === undefined || holder === this.node || !nc || nc.isClosed()) {
      this.stats.ruleMessagesDropped++;
      return;
    }
    try {
      nc.publish(`${this.prefix}.rulebuf.${holder}.${this.fence}`, encodeMessage(message, this.node));
      this.stats.ruleMessagesSent++;
    } catch {
      this.stats.ruleMessagesDropped++;
    }
  }

  state(): RuleBufferState {
    return { state: this.stateText, holder: this.holder, fence: this.fence, held: this.holds() };
  }

  async attach(nc: NatsConnection): Promise<void> {
    this.nc = nc;
    if (this.kv) return;
    const { Kvm } = await import('@nats-io/kv');
    let wait = 250;
    while (!this.closed && !nc.isClosed()) {
      try {
        const kvm = new Kvm(nc);
        const kv = await kvm.create(this.bucketName, { replicas: this.replicas, history: 1, ttl: LEASE_TTL_MS, description: 'Edge Data Broker: which node holds the rule buffer (and sweeps expired state keys)' });
        this.ckpt = await kvm.create(this.checkpointBucketName, { replicas: this.replicas, history: 1, description: 'Edge Data Broker: the rule buffer, checkpointed by the node holding it' });
        this.kv = kv;
        this.sub = nc.subscribe(`${this.prefix}.rulebuf.${this.node}.*`, {
          callback: (err, m) => {
            if (err) return;
            this.onMessage(m.subject, m.data);
          },
        });
        this.watcher = await watchBucket(nc, kv, { what: 'the lease bucket', bucket: this.bucketName, key: KEY, log: this.log, stats: this.stats, onError: (what, err) => this.error(what, err) }, (e) => this.onEntry(e));
        this.stateText = 'ready';
        this.timer = setInterval(() => this.tick(), TICK_MS);
        this.timer.unref();
        this.tick();
        return;
      } catch (err) {
        this.error(`bucket ${this.bucketName} not available; retrying`, err);
        await new Promise((r) => setTimeout(r, wait).unref());
        wait = Math.min(wait * 2, 4000);
      }
    }
  }

  private onMessage(subject: string, data: Uint8Array): void {
    const fence = Number(subject.slice(subject.lastIndexOf('.') + 1));
    if (!this.holds() || fence !== this.fence) {
      // sent for an earlier lease, or this node no longer holds it
      this.stats.ruleMessagesDropped++;
      return;
    }
    let decoded;
    try {
      decoded = decodeMessage(data);
    } catch {
      this.stats.badMessages++;
      return;
    }
    decoded.message.fromNode = decoded.from;
    this.stats.ruleMessagesReceived++;
    try {
      this.rules?.runRules(decoded.message);
    } catch (err) {
      this.error('the rules failed on a message from another node', err);
    }
  }

  /** The key as the watch sees it: a renewal, a new holder, or gone. */
  private onEntry(e: KvEntry): void {
    if (e.revision > this.lastRev) {
      this.lastRev = e.revision;
      this.lastChange = Date.now();
    }
    if (e.operation !== 'PUT') {
      if (this.holder !== this.node) this.setHolder(undefined, 0);
      this.lastChange = 0; // released: try at once
      this.tick();
      return;
    }
    let v: LeaseValue;
    try {
      v = e.json<LeaseValue>();
    } catch {
      return;
    }
    if (typeof v.n !== 'string') return;
    const fence = v.f > 0 ? v.f : e.revision;
    if (v.n === this.node) return; // this node's own write: settled by acquire()/renew()
    if (this.holder === this.node) this.stepDown(`node ${v.n} holds the lease now`);
    this.setHolder(v.n, fence);
  }

  private setHolder(holder: string | undefined, fence: number): void {
    if (holder === this.holder && fence === this.fence) return;
    this.holder = holder;
    this.fence = fence;
    if (holder !== undefined && holder !== this.node) this.log.info({ holder, fence }, `cluster: rule buffer on node ${holder} (lease ${fence})`);
  }

  private tick(): void {
    if (this.closed || !this.kv) return;
    const now = Date.now();
    if (this.holder === this.node) {
      if (now >= this.heldUntil) this.stepDown('its renewals were not confirmed in time');
      else {
        if (now - this.lastRenewAt >= RENEW_MS) void this.renew();
        if (this.applyPending) {
          // the checkpoint taken over waited for this node's program (compiling at start)
          const section = this.rules?.snapshotSection();
          section?.applyBuffer();
          section?.applyMemory();
          if (!section?.pending) this.applyPending = false;
        }
        if (now - this.lastCheckpointAt >= CHECKPOINT_MS) void this.checkpoint();
        for (const t of this.tasks) {
          try {
            t();
          } catch (err) {
            this.error('a task of the lease holder failed', err);
          }
        }
        return;
      }
    }
    if (this.holder === undefined || now - this.lastChange >= TAKEOVER_AFTER_MS) void this.acquire();
  }

  private async acquire(): Promise<void> {
    const kv = this.kv;
    if (!kv || this.acquiring || this.closed) return;
    this.acquiring = true;
    const sent = Date.now();
    try {
      const rev = await kv.create(KEY, JSON.stringify({ n: this.node, f: 0 } satisfies LeaseValue));
      if (this.closed) return;
      this.ownRev = rev;
      this.lastRev = Math.max(this.lastRev, rev);
      this.lastChange = Date.now();
      this.heldUntil = sent + HOLD_MS;
      this.lastRenewAt = sent;
      // a new lease starts from the cluster's checkpoint (what this node buffered before is
      // stale), read before this node acts as holder: no message of the new lease runs first
      const from = await this.loadCheckpoint();
      if (this.closed) return;
      this.setHolder(this.node, rev);
      this.lastCheckpointAt = Date.now();
      this.stats.leaseAcquired++;
      this.log.info({ fence: rev, checkpoint: from }, `cluster: this node holds the rule buffer (lease ${rev}), ${from}`);
    } catch (err) {
      if (!isConflict(err)) this.error('cannot take the lease', err);
      // held by another node: learn which (the watch tells too)
      try {
        const e = await kv.get(KEY);
        if (e) this.onEntry(e);
      } catch {
        /* next tick */
      }
    } finally {
      this.acquiring = false;
    }
  }

  private async renew(): Promise<void> {
    const kv = this.kv;
    if (!kv || this.renewing) return;
    this.renewing = true;
    const sent = Date.now();
    this.lastRenewAt = sent;
    try {
      const rev = await kv.update(KEY, JSON.stringify({ n: this.node, f: this.fence } satisfies LeaseValue), this.ownRev, 1000);
      if (this.holder !== this.node) return;
      this.ownRev = rev;
      this.lastRev = Math.max(this.lastRev, rev);
      this.lastChange = Date.now();
      this.heldUntil = sent + HOLD_MS;
    } catch (err) {
      if (isConflict(err)) this.stepDown('another node took the lease');
      else this.error('cannot renew the lease', err);
    } finally {
      this.renewing = false;
    }
  }

  private stepDown(why: string): void {
    if (this.holder !== this.node) return;
    this.log.warn({ fence: this.fence, why }, `cluster: this node no longer holds the rule buffer (${why})`);
    this.heldUntil = 0;
    this.applyPending = false;
    this.rules?.clearRuleBuffer();
    void this.rules?.snapshotSection().reset?.();
    this.setHolder(undefined, 0);
  }

  /**
   * The new holder's buffer: empty, then the checkpoint in the bucket (if any, and readable
   * within LOAD_TIMEOUT_MS). Says where it started from, for the log.
   */
  private async loadCheckpoint(): Promise<string> {
    const rules = this.rules;
    this.ckptRev = 0;
    this.ckptSaved = undefined;
    this.applyPending = false;
    rules?.clearRuleBuffer();
    const section = rules?.snapshotSection();
    section?.reset?.();
    const ckpt = this.ckpt;
    if (!ckpt || !section) return 'an empty buffer';
    let timer: NodeJS.Timeout | undefined;
    try {
      const e = await Promise.race([
        ckpt.get(CHECKPOINT_KEY),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${LOAD_TIMEOUT_MS} ms`)), LOAD_TIMEOUT_MS);
        }),
      ]);
      if (!e || e.operation !== 'PUT') return 'an empty buffer (no checkpoint in the bucket)';
      this.ckptRev = e.revision;
      const v = e.json<CheckpointValue>();
      if (typeof v.b !== 'string') throw new Error('a checkpoint without a buffer');
      const data = Buffer.from(v.b, 'base64');
      await section.restore(data);
      this.applyPending = section.pending;
      this.ckptSaved = data;
      this.stats.ruleCheckpointsLoaded++;
      return `the checkpoint of node ${v.n} (lease ${v.f}, ${Math.max(0, Date.now() - v.at)} ms old)`;
    } catch (err) {
      rules?.clearRuleBuffer();
      section.reset?.();
      this.stats.jetstreamErrors++;
      this.error('the rule buffer checkpoint could not be read; starting from an empty buffer', err);
      return `an empty buffer (checkpoint not read: ${err instanceof Error ? err.message : String(err)})`;
    } finally {
      clearTimeout(timer);
    }
  }

  /** On the holder: the buffer into the bucket when it changed since the last checkpoint (compare-and-set). */
  private checkpoint(): Promise<void> {
    if (this.checkpointing) return this.checkpointing;
    this.lastCheckpointAt = Date.now();
    const run = (async () => {
      const ckpt = this.ckpt;
      const section = this.rules?.snapshotSection();
      if (!ckpt || !section || !this.holds()) return;
      // a checkpoint taken over while this node's program was still compiling (tick applies it
      // once the program is active): until then this node's empty buffer must not replace it
      if (section.pending) return;
      const data = await section.save();
      if (this.ckptSaved && data.equals(this.ckptSaved)) return;
      const fence = this.fence;
      const value = JSON.stringify({ n: this.node, f: fence, at: Date.now(), b: data.toString('base64') } satisfies CheckpointValue);
      if (!this.holds() || this.fence !== fence) return;
      try {
        this.ckptRev = this.ckptRev > 0 ? await ckpt.update(CHECKPOINT_KEY, value, this.ckptRev) : await ckpt.create(CHECKPOINT_KEY, value);
        this.ckptSaved = data;
        this.stats.ruleCheckpoints++;
      } catch (err) {
        this.stats.jetstreamErrors++;
        if (!isConflict(err)) {
          this.error('the rule buffer could not be checkpointed', err);
          return;
        }
        // written since this node read it: by an earlier holder whose write came late (this
        // lease overwrites it next time), or by a later one (this node's lease is over: the
        // lease's watch and renewal say so)
        const e = await ckpt.get(CHECKPOINT_KEY).catch(() => null);
        const v = e?.operation === 'PUT' ? checkpointOf(e) : undefined;
        if (e && (!v || v.f <= fence)) this.ckptRev = e.revision;
        this.ckptSaved = undefined;
        this.error('the rule buffer checkpoint was written by another node meanwhile', err);
      }
    })();
    this.checkpointing = run.finally(() => {
      this.checkpointing = undefined;
    });
    return this.checkpointing;
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

  /** A graceful stop: the lease is handed back at once (another node takes it without waiting). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.watcher?.stop();
    this.sub?.unsubscribe();
    this.rules?.placeRuleBuffer(undefined);
    const kv = this.kv;
    if (kv && this.holder === this.node && this.ownRev > 0) {
      // the last checkpoint, then the lease back: the next holder starts from this buffer
      this.lastCheckpointAt = 0;
      await Promise.race([(this.checkpointing ?? Promise.resolve()).then(() => this.checkpoint()), new Promise((r) => setTimeout(r, 2000).unref())]).catch(() => undefined);
      this.heldUntil = 0;
      await kv.delete(KEY, { previousSeq: this.ownRev }).catch(() => undefined);
    }
  }
}

function checkpointOf(e: KvEntry): CheckpointValue | undefined {
  try {
    return e.json<CheckpointValue>();
  } catch {
    return undefined;
  }
}

function isConflict(err: unknown): boolean {
  const e = err as { code?: number; message?: string };
  return e?.code === 10071 || /wrong last sequence|key exists/i.test(e?.message ?? '');
}
