/**
 * The fr_script document cluster-wide: one key, `document`, in the JetStream bucket
 * edb_<cluster>_rules (R EDB_CLUSTER_REPLICAS), holding { etag, text, node, at }. The etag
 * (the document's version) is the same on every node once they have it.
 *
 * An upload on any node (POST/PATCH/DELETE /rules) is noticed here (the active etag is
 * compared every CHECK_MS) and written to the bucket with compare-and-set on the key's
 * revision; every other node's watch sees it and activates the same text. When two nodes
 * upload at once, the first write in the bucket wins: the other node takes it (and logs that
 * its own upload was replaced). A node that joins takes the bucket's document; the first
 * node of a new cluster seeds the bucket with its own.
 *
 * Filters run where a message arrives. Multi-topic rules keep a buffer per node (not one
 * for the cluster): see docs/cluster.md.
 */
import type { Logger } from 'pino';
import type { NatsConnection } from '@nats-io/nats-core';
import type { KV, KvEntry } from '@nats-io/kv';
import type { ClusterStats } from './status.js';
import { watchBucket } from './watch.js';

/** The part of the rules service the cluster uses. */
export interface ClusterRulesView {
  /** Settles once the node's own document (EDB_RULES_FILE or its data folder) is active. */
  readonly ready: Promise<void>;
  currentText(): { text: string; etag: string };
  replace(body: string, ifMatch?: string, author?: { user: string | undefined; via: string }): Promise<{ etag: string }>;
}

interface StoredDocument {
  etag: string;
  text: string;
  node: string;
  at: number;
}

const CHECK_MS = 250;
const KEY = 'document';

export class ClusterRules {
  private kv: KV | undefined;
  private rev = 0;
  /** The etag the bucket holds as far as this node knows (what it last wrote or applied). */
  private syncedEtag: string | undefined;
  private applying: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private watcher: { stop(): void } | undefined;
  stateText = 'connecting';
  private lastErrorLog = 0;

  constructor(
    private readonly rules: ClusterRulesView,
    private readonly node: string,
    private readonly cluster: string,
    private readonly replicas: number,
    private readonly log: Logger,
    private readonly stats: ClusterStats,
  ) {}

  get bucketName(): string {
    return `edb_${this.cluster}_rules`;
  }

  get etag(): string | undefined {
    return this.syncedEtag;
  }

  async attach(nc: NatsConnection): Promise<void> {
    if (this.kv) return;
    // the node's own document first: then the bucket's replaces it (a restarted node does not
    // put back the document it had before)
    await this.rules.ready.catch(() => undefined);
    const { Kvm } = await import('@nats-io/kv');
    let wait = 250;
    while (!this.closed && !nc.isClosed()) {
      try {
        const kv = await new Kvm(nc).create(this.bucketName, { replicas: this.replicas, history: 1, description: 'Edge Data Broker: the fr_script document' });
        this.kv = kv;
        const e = await kv.get(KEY);
        if (e && e.operation === 'PUT') await this.applyEntry(e);
        else await this.publishLocal(); // a new cluster: this node's document seeds it
        // from the revision read (or written) above: an upload made meanwhile is not missed
        this.watcher = await watchBucket(nc, kv, { what: 'the rules bucket', bucket: this.bucketName, key: KEY, after: this.rev, log: this.log, stats: this.stats, onError: (what, err) => this.error(what, err) }, (entry) => this.applyEntry(entry));
        this.timer = setInterval(() => void this.check(), CHECK_MS);
        this.timer.unref();
        this.stateText = 'ready';
        return;
      } catch (err) {
        this.kv = undefined;
        this.error(`bucket ${this.bucketName} not available; retrying`, err);
        await new Promise((r) => setTimeout(r, wait).unref());
        wait = Math.min(wait * 2, 4000);
      }
    }
  }

  /** The bucket's document: activated here unless it is the active one already. */
  private async applyEntry(e: KvEntry): Promise<void> {
    if (e.operation !== 'PUT' || e.revision <= this.rev) return;
    let doc: StoredDocument;
    try {
      doc = e.json<StoredDocument>();
      if (typeof doc.text !== 'string' || typeof doc.etag !== 'string') throw new Error('no text or etag');
    } catch (err) {
      this.stats.badMessages++;
      this.error('a malformed rules document in the bucket', err);
      return;
    }
    this.rev = e.revision;
    this.syncedEtag = doc.etag;
    if (this.rules.currentText().etag === doc.etag) return;
    const run = (async () => {
      try {
        const r = await this.rules.replace(doc.text, undefined, { user: undefined, via: `cluster:${doc.node}` });
        this.log.info({ etag: r.etag, from: doc.node }, `cluster: rules document ${r.etag} from node ${doc.node} active`);
        // the same text compiles to the same etag on every node; if not, this node's is what it runs
        this.syncedEtag = r.etag === doc.etag ? doc.etag : r.etag;
      } catch (err) {
        this.error(`the rules document from node ${doc.node} could not be activated here`, err);
      }
    })();
    this.applying = run;
    await run;
    this.applying = undefined;
  }

  /** An upload on this node: the active etag differs from the bucket's. */
  private async check(): Promise<void> {
    if (this.applying || !this.kv || this.closed) return;
    const local = this.rules.currentText();
    if (local.etag === this.syncedEtag) return;
    await this.publishLocal();
  }

  private async publishLocal(): Promise<void> {
    const kv = this.kv;
    if (!kv) return;
    const local = this.rules.currentText();
    const doc: StoredDocument = { etag: local.etag, text: local.text, node: this.node, at: Date.now() };
    try {
      const rev = this.rev === 0 ? await kv.create(KEY, JSON.stringify(doc)) : await kv.update(KEY, JSON.stringify(doc), this.rev);
      this.rev = rev;
      this.syncedEtag = local.etag;
      this.log.info({ etag: local.etag }, `cluster: rules document ${local.etag} published to the cluster`);
    } catch (err) {
      this.stats.jetstreamErrors++;
      // another node's upload came first: it wins, and the watch brings it here
      this.error('the rules document uploaded here could not be published (another upload came first, or no quorum)', err);
      try {
        const e = await kv.get(KEY);
        if (e) await this.applyEntry(e);
      } catch {
        /* retried at the next check */
      }
    }
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
    if (this.timer) clearInterval(this.timer);
    this.watcher?.stop();
  }
}
