/** What a cluster node reports: GET /api/cluster, `edb cluster show`, the status page, /metrics. */

export interface PeerStatus {
  name: string;
  running: boolean;
  self?: boolean;
  clients: number;
  /** Subscriptions held on that node. */
  subscriptions: number;
  /** Distinct filters that node announced (what the others route on). */
  interest: number;
  /** The NATS server the node is connected to. */
  natsServer: string;
  version: string;
  /** Milliseconds since its last heartbeat (0 for this node). */
  lastSeenMs: number;
}

export interface JetStreamState {
  /** The retained-messages bucket: "ready", "connecting" or "error: ...". */
  retained: string;
  retainedKeys: number;
  replicas: number;
  /** Writes to JetStream not yet confirmed (retained messages). */
  pendingWrites: number;
  /** The state-store bucket: "ready", "connecting" or "error: ...". */
  state: string;
  stateKeys: number;
  /** The rules bucket: "ready", "connecting", "error: ..." or "off". */
  rules: string;
  /** The rules document's version (ETag) the cluster holds, as far as this node knows. */
  rulesEtag: string | undefined;
  /** The lease bucket (rule-buffer.ts): "ready", "connecting", "error: ..." or "off". */
  lease: string;
  /** The node that holds the rule buffer (the lease), as far as this node knows, and the lease's fencing number. */
  ruleBufferHolder: string | undefined;
  ruleBufferFence: number;
  /** The persistent-sessions bucket and message stream: "ready", "connecting", "error: ..." or "off". */
  sessions?: string;
  /** Persistent sessions of the cluster (records in the bucket). */
  sessionRecords?: number;
}

export interface ClusterStatus {
  cluster: string;
  node: string;
  connected: boolean;
  natsServer: string | undefined;
  lastError: string | undefined;
  jetstream: JetStreamState;
  nodes: PeerStatus[];
  stats: ClusterStatsSnapshot;
}

export interface ClusterStatsSnapshot {
  forwarded: number;
  received: number;
  takeovers: number;
  natsErrors: number;
  jetstreamErrors: number;
  badMessages: number;
  /** Messages that rule statements match, sent to the rule buffer's holder, received as holder, and dropped (no holder known, or sent for an earlier lease). */
  ruleMessagesSent: number;
  ruleMessagesReceived: number;
  ruleMessagesDropped: number;
  /** Times this node took the lease. */
  leaseAcquired: number;
  /** Rule-buffer checkpoints this node wrote to the bucket (as holder), and took over from it (on taking the lease). */
  ruleCheckpoints: number;
  ruleCheckpointsLoaded: number;
  /** Expired state-store keys this node removed from the bucket (as lease holder). */
  expiredSwept: number;
  /** State-store writes this node found stored after their deadline (void: ignored, the previous state written back). */
  voidedWrites: number;
  /** State-store writes this node undid (a void entry, or its own write answered with an error that was stored after all). */
  compensations: number;
  /** Records of deleted state-store keys this node purged from the bucket (as lease holder, once they are old). */
  tombstonesPurged: number;
  /** The broker's own messages (wills, rule outputs) waiting for NATS in the outbox, sent from it when NATS was back, and dropped (outbox full). */
  outboxQueued: number;
  outboxSent: number;
  outboxDropped: number;
  /** Wills of clients of a node that died (kill -9) that this node published for it. */
  orphanWills: number;
  /** Bucket watches (the mirrors) this node started again because they had stopped delivering (src/cluster/watch.ts). */
  watchRestarts: number;
  /** Cross-node delivery latency (sender's clock to receiver's), ms, over the last 1024 messages. */
  latencyP50Ms: number | undefined;
  latencyP99Ms: number | undefined;
}

const WINDOW = 1024;

export class ClusterStats {
  forwarded = 0;
  received = 0;
  takeovers = 0;
  natsErrors = 0;
  jetstreamErrors = 0;
  badMessages = 0;
  ruleMessagesSent = 0;
  ruleMessagesReceived = 0;
  ruleMessagesDropped = 0;
  leaseAcquired = 0;
  ruleCheckpoints = 0;
  ruleCheckpointsLoaded = 0;
  expiredSwept = 0;
  voidedWrites = 0;
  compensations = 0;
  tombstonesPurged = 0;
  outboxQueued = 0;
  outboxSent = 0;
  outboxDropped = 0;
  orphanWills = 0;
  watchRestarts = 0;
  /** Cross-node latencies, ms, for the metrics histogram (read and cleared by the scrape). */
  readonly latencies = new Float64Array(WINDOW);
  private count = 0;

  latency(ms: number): void {
    this.latencies[this.count++ % WINDOW] = ms < 0 ? 0 : ms;
  }

  /** The recent latencies, for a histogram (oldest first is not needed). */
  recent(): number[] {
    return Array.from(this.latencies.subarray(0, Math.min(this.count, WINDOW)));
  }

  snapshot(): ClusterStatsSnapshot {
    const sorted = this.recent().sort((a, b) => a - b);
    const q = (p: number) => (sorted.length === 0 ? undefined : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]);
    return {
      forwarded: this.forwarded,
      received: this.received,
      takeovers: this.takeovers,
      natsErrors: this.natsErrors,
      jetstreamErrors: this.jetstreamErrors,
      badMessages: this.badMessages,
      ruleMessagesSent: this.ruleMessagesSent,
      ruleMessagesReceived: this.ruleMessagesReceived,
      ruleMessagesDropped: this.ruleMessagesDropped,
      leaseAcquired: this.leaseAcquired,
      ruleCheckpoints: this.ruleCheckpoints,
      ruleCheckpointsLoaded: this.ruleCheckpointsLoaded,
      expiredSwept: this.expiredSwept,
      voidedWrites: this.voidedWrites,
      compensations: this.compensations,
      tombstonesPurged: this.tombstonesPurged,
      outboxQueued: this.outboxQueued,
      outboxSent: this.outboxSent,
      outboxDropped: this.outboxDropped,
      orphanWills: this.orphanWills,
      watchRestarts: this.watchRestarts,
      latencyP50Ms: q(0.5),
      latencyP99Ms: q(0.99),
    };
  }
}
