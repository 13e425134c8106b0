/**
 * Retained messages cluster-wide: one JetStream key-value bucket, edb_<cluster>_retained,
 * replicated EDB_CLUSTER_REPLICAS times (R3 by default), one key per topic (wire.ts:
 * topicKey), history 1. Every node watches the bucket and mirrors it into its local
 * retained store, so a SUBSCRIBE is answered from memory on whichever node it reaches.
 *
 * A retained PUBLISH is stored locally at once (the broker) and written to the bucket here;
 * the bucket's order is the cluster's order, and the watch brings every node to it (the node
 * that wrote also applies its own write back, so all nodes end on the same last value).
 * While the bucket cannot be reached the latest message per topic waits here and is written
 * when it can be: at reconnection and every 2 s while any wait (a write that failed after the
 * reconnection is not left behind); an older write that fails never replaces a newer one.
 */
import type { Logger } from 'pino';
import type { NatsConnection } from '@nats-io/nats-core';
import type { KV, KvWatchEntry } from '@nats-io/kv';
import type { Message } from '../mqtt/message.js';
import type { ClusterBroker } from './broker-view.js';
import type { ClusterStats, JetStreamState } from './status.js';
import { watchBucket } from './watch.js';
import { decodeMessage, encodeMessage, keyTopic, topicKey } from './wire.js';

export class ClusterRetained {
  private kv: KV | undefined;
  private readonly pending = new Map<string, Message>();
  /** The newest message handed to stored() per topic, while its write is not confirmed. */
  private readonly newest = new Map<string, Message>();
  private inflight = 0;
  private timer: NodeJS.Timeout | undefined;
  private keys = new Set<string>();
  private stateText = 'connecting';
  private closed = false;
  private attaching = false;
  private watcher: { stop(): void } | undefined;
  private lastErrorLog = 0;

  constructor(
    private readonly broker: ClusterBroker,
    private readonly node: string,
    private readonly cluster: string,
    private readonly replicas: number,
    private readonly log: Logger,
    private readonly stats: ClusterStats,
  ) {}

  get bucketName(): string {
    return `edb_${this.cluster}_retained`;
  }

  /** Open (or create) the bucket and start mirroring it; retried until it works or close(). */
  async attach(nc: NatsConnection): Promise<void> {
    if (this.attaching || this.kv) return;
    this.attaching = true;
    const { Kvm } = await import('@nats-io/kv');
    let wait = 250;
    while (!this.closed && !nc.isClosed()) {
      try {
        const kvm = new Kvm(nc);
        const kv = await kvm.create(this.bucketName, { replicas: this.replicas, history: 1, description: 'Edge Data Broker: retained messages, one key per topic' });
        this.watcher = await watchBucket(nc, kv, { what: 'the retained bucket', bucket: this.bucketName, log: this.log, stats: this.stats, onError: (what, err) => this.error(what, err) }, (e) => this.apply(e));
        this.kv = kv;
        this.stateText = 'ready';
        this.log.info({ bucket: this.bucketName, replicas: this.replicas }, `cluster: retained messages in JetStream bucket ${this.bucketName} (R${this.replicas})`);
        this.flushPending();
        this.timer = setInterval(() => {
          if (this.inflight === 0) this.flushPending();
        }, 2000);
        this.timer.unref();
        break;
      } catch (err) {
        this.error(`bucket ${this.bucketName} not available (JetStream may still be electing a leader); retrying`, err);
        await new Promise((r) => setTimeout(r, wait).unref());
        wait = Math.min(wait * 2, 4000);
      }
    }
    this.attaching = false;
  }

  private apply(e: KvWatchEntry): void {
    try {
      if (e.operation === 'PUT') {
        const { message } = decodeMessage(e.value);
        this.keys.add(e.key);
        this.broker.retained.set(message);
      } else {
        this.keys.delete(e.key);
        this.broker.retained.set({ topic: keyTopic(e.key), payload: Buffer.alloc(0), qos: 0, retain: true });
      }
    } catch (err) {
      this.stats.badMessages++;
      this.error(`a malformed retained record under ${e.key}`, err);
    }
  }

  /** A retained PUBLISH on this node (an empty payload clears the topic). */
  stored(message: Message): void {
    this.newest.set(message.topic, message);
    if (!this.kv) {
      this.pending.set(message.topic, message);
      return;
    }
    this.write(this.kv, message);
  }

  private write(kv: KV, message: Message): void {
    const key = topicKey(message.topic);
    this.inflight++;
    const done = message.payload.length === 0 ? kv.delete(key) : kv.put(key, encodeMessage(message, this.node));
    Promise.resolve(done)
      .then(() => {
        if (this.newest.get(message.topic) === message) this.newest.delete(message.topic);
      })
      .catch((err) => {
        this.stats.jetstreamErrors++;
        this.error(`could not store the retained message for ${message.topic} in JetStream; it will be written again`, err);
        // the newest message for the topic wins: an older failed write does not overwrite it
        if (this.newest.get(message.topic) === message) this.pending.set(message.topic, message);
      })
      .finally(() => {
        this.inflight--;
      });
  }

  reconnected(): void {
    this.flushPending();
  }

  private flushPending(): void {
    const kv = this.kv;
    if (!kv || this.pending.size === 0) return;
    const list = [...this.pending.values()];
    this.pending.clear();
    for (const m of list) this.write(kv, m);
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

  state(): Pick<JetStreamState, 'retained' | 'retainedKeys' | 'replicas' | 'pendingWrites'> {
    return { retained: this.stateText, retainedKeys: this.keys.size, replicas: this.replicas, pendingWrites: this.inflight + this.pending.size };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.watcher?.stop();
    // give writes in flight a moment to be confirmed before the connection drains
    const deadline = Date.now() + 2000;
    while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }
}
