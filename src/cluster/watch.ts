/**
 * A watch of a JetStream KV bucket that keeps a node's mirror complete (every bucket-backed
 * mirror of src/cluster uses it: state store, retained messages, session records, wills,
 * rules document, rule-buffer lease).
 *
 * `kv.watch()` is an ordered push consumer (R1, on one server). It notices lost messages only
 * when a later one arrives with a gap in its delivery sequence, and a consumer that is gone or
 * stalled only after two missed idle heartbeats, 60 s (nats.js 3.4: 30 s heartbeats). After a
 * partition heals, or a reconnection, a node could go on answering values older than the
 * bucket's for that long, or for good: the messages the consumer pushed into a cut route are
 * gone, no later write comes to reveal the gap, and the consumer (which counts them as
 * delivered) waits.
 *
 * So each watch checks itself every CHECK_MS against the stream: it asks the stream's leader
 * for the first message of the watched keys after the last revision this node handled
 * (STREAM.MSG.GET next_by_subj). When the stream holds one, and the next check finds that no
 * entry came meanwhile (the handler not busy), the watch is started again from the revision
 * after the last one handled (every bucket here keeps one value per key, so the entries from
 * that revision on are exactly what changed since). A watch that ended with an error is started
 * again the same way. A check the stream's leader does not answer (the node's server is cut off
 * from the quorum, or NATS is down) changes nothing: the check after healing does it. Entries
 * come to the handler once each, in revision order, never one at or below a revision already
 * handled.
 */
import type { Logger } from 'pino';
import type { NatsConnection } from '@nats-io/nats-core';
import type { JetStreamManager, MsgRequest } from '@nats-io/jetstream';
import type { KV, KvWatchEntry, KvWatchOptions } from '@nats-io/kv';
import type { ClusterStats } from './status.js';

/** How often a watch checks itself against its stream (ms). */
export const CHECK_MS = 2000;

export interface BucketWatchOptions {
  /** What the logs call it: "the state bucket". */
  what: string;
  /** The bucket's name (its stream is KV_<bucket>). */
  bucket: string;
  /** A key filter (`r.>`), or every key. */
  key?: string;
  /**
   * Start after this revision (the node read the bucket up to it): only later entries come.
   * Without it the watch starts with the last value of every key.
   */
  after?: number;
  /** A watch that stopped with an error, or that was started again, and why. */
  onError(what: string, err: unknown): void;
  /** The watch was started again from a revision (counted, logged). */
  onRestart?(reason: string, fromRevision: number): void;
  /**
   * The stream's leader answers a check again after one or more it did not answer (a partition
   * healed, NATS back): `from` is the first revision this node may have from that time. A
   * mirror that can check itself against the leader does it from there (state.ts resync()).
   */
  onRejoin?(from: number): void;
  checkMs?: number;
}

type Iter = AsyncIterable<KvWatchEntry> & { stop(): void };

export class BucketWatch {
  private iter: Iter | undefined;
  /** The watch's generation: entries of a watch stopped since are dropped. */
  private gen = 0;
  private last: number;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private checking = false;
  private restarting = false;
  private busy = false;
  private jsm: JetStreamManager | undefined;
  /** What the previous check saw: this node's revision then, and a later revision the stream held (0: none). */
  private prevRev = -1;
  private prevAhead = 0;
  /** Set while checks go unanswered: the first revision this node may have from that time. */
  private silentFrom: number | undefined;
  restarts = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly opts: BucketWatchOptions,
    private readonly handle: (e: KvWatchEntry) => void | Promise<void>,
  ) {
    this.last = opts.after ?? 0;
  }

  /** The last revision handled (or the `after` it started from). */
  get revision(): number {
    return this.last;
  }

  /** Start watching; rejects when the first consumer cannot be made (the caller retries). */
  async start(): Promise<void> {
    const { jetstreamManager } = await import('@nats-io/jetstream');
    this.jsm = await jetstreamManager(this.nc, { checkAPI: false, timeout: 3000 });
    await this.open();
    this.timer = setInterval(() => void this.check(), this.opts.checkMs ?? CHECK_MS);
    this.timer.unref();
  }

  private async open(): Promise<void> {
    const o: KvWatchOptions = {};
    if (this.opts.key !== undefined) o.key = this.opts.key;
    // nothing handled yet: the last value of every key (each bucket here keeps one per key)
    if (this.last > 0) o.resumeFromRevision = this.last + 1;
    const iter = (await this.kv.watch(o)) as Iter;
    if (this.stopped) {
      iter.stop();
      return;
    }
    const gen = ++this.gen;
    this.iter = iter;
    this.prevRev = -1;
    this.prevAhead = 0;
    void this.loop(iter, gen);
  }

  private async loop(iter: Iter, gen: number): Promise<void> {
    try {
      for await (const e of iter) {
        if (gen !== this.gen) break;
        if (e.revision <= this.last) continue;
        this.last = e.revision;
        const r = this.handle(e);
        if (r instanceof Promise) {
          this.busy = true;
          try {
            await r;
          } finally {
            this.busy = false;
          }
        }
      }
    } catch (err) {
      if (gen === this.gen && !this.stopped) {
        this.opts.onError(`${this.opts.what} watch stopped; starting it again`, err);
        void this.restart('the watch stopped with an error');
      }
    }
  }

  /** One check against the stream (see the file's comment). */
  private async check(): Promise<void> {
    const jsm = this.jsm;
    if (!jsm || !this.iter || this.stopped || this.checking || this.restarting || this.busy || this.nc.isClosed()) return;
    this.checking = true;
    try {
      const rev = this.last;
      let ahead: number;
      try {
        // the first message of the watched keys after this node's last revision (null: none)
        const query = { seq: rev + 1, next_by_subj: `$KV.${this.opts.bucket}.${this.opts.key ?? '>'}` } as unknown as MsgRequest;
        const m = await jsm.streams.getMessage(`KV_${this.opts.bucket}`, query);
        ahead = m ? m.seq : 0;
      } catch {
        // the stream's leader does not answer (cut off, electing, NATS down): nothing to conclude
        this.prevRev = -1;
        this.silentFrom ??= rev + 1;
        return;
      }
      if (this.silentFrom !== undefined) {
        const from = this.silentFrom;
        this.silentFrom = undefined;
        this.opts.onRejoin?.(from);
      }
      // the stream held a later revision at the previous check, and no entry came since
      const stuck = this.prevAhead > 0 && ahead > 0 && this.prevRev === rev && this.last === rev && !this.busy && !this.restarting;
      this.prevRev = this.last;
      this.prevAhead = this.last === rev ? ahead : 0;
      if (stuck) await this.restart(`no entry came for ${this.opts.checkMs ?? CHECK_MS} ms while the bucket held revision ${ahead} and this node had ${rev}`);
    } finally {
      this.checking = false;
    }
  }

  /** Stop the current consumer and watch again from the revision after the last one handled. */
  private async restart(reason: string): Promise<void> {
    if (this.stopped || this.restarting) return;
    this.restarting = true;
    const old = this.iter;
    this.gen++;
    this.iter = undefined;
    old?.stop();
    this.restarts++;
    this.opts.onRestart?.(reason, this.last + 1);
    let wait = 250;
    try {
      while (!this.stopped) {
        try {
          await this.open();
          return;
        } catch (err) {
          this.opts.onError(`${this.opts.what} watch could not be started again; retrying`, err);
          await new Promise((r) => setTimeout(r, wait).unref());
          wait = Math.min(wait * 2, 4000);
        }
      }
    } finally {
      this.restarting = false;
    }
  }

  stop(): void {
    this.stopped = true;
    this.gen++;
    if (this.timer) clearInterval(this.timer);
    this.iter?.stop();
  }
}

/**
 * A started BucketWatch for a service of src/cluster: restarts counted in `stats.watchRestarts`
 * and logged (each one: a mirror had fallen behind its bucket). Rejects like start().
 */
export async function watchBucket(
  nc: NatsConnection,
  kv: KV,
  opts: Omit<BucketWatchOptions, 'onRestart'> & { log: Logger; stats: Pick<ClusterStats, 'watchRestarts'> },
  handle: (e: KvWatchEntry) => void | Promise<void>,
): Promise<BucketWatch> {
  const w = new BucketWatch(
    nc,
    kv,
    {
      ...opts,
      onRestart: (reason, from) => {
        opts.stats.watchRestarts++;
        opts.log.warn({ bucket: opts.bucket, key: opts.key, fromRevision: from, reason }, `cluster: ${opts.what} watch started again from revision ${from} (${reason})`);
      },
    },
    handle,
  );
  await w.start();
  return w;
}
