/**
 * Prometheus metrics of cluster mode (prom-client), read from the node when scraped:
 *   edb_cluster_connected, edb_cluster_nodes, edb_cluster_retained_keys, edb_cluster_sessions (gauges);
 *   edb_cluster_session_messages_stored_total, edb_cluster_sessions_resumed_total,
 *   edb_cluster_messages_forwarded_total, edb_cluster_messages_received_total,
 *   edb_cluster_takeovers_total, edb_cluster_nats_errors_total,
 *   edb_cluster_jetstream_errors_total, edb_cluster_rule_messages_{sent,received,dropped}_total,
 *   edb_cluster_lease_acquired_total, edb_cluster_expired_keys_swept_total,
 *   edb_cluster_outbox_sent_total, edb_cluster_outbox_dropped_total,
 *   edb_cluster_orphan_wills_published_total (counters); edb_cluster_outbox_messages (gauge);
 *   edb_cluster_rule_buffer_held (gauge);
 *   edb_cluster_latency_seconds (histogram of cross-node delivery latency, sender's clock to
 *   receiver's: meaningful when the nodes' clocks agree, as on one machine or with NTP).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { ClusterService } from './index.js';

export function registerClusterMetrics(registry: Registry, cluster: ClusterService): void {
  const registers = [registry];
  const node = cluster.node;
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  gauge('edb_cluster_connected', 'Cluster: 1 while this node is connected to NATS', () => (node.isConnected ? 1 : 0));
  gauge('edb_cluster_nodes', 'Cluster: broker nodes running, this one included', () => node.status().nodes.length);
  gauge('edb_cluster_retained_keys', 'Cluster: retained messages in the JetStream bucket', () => node.status().jetstream.retainedKeys);
  gauge('edb_cluster_sessions', 'Cluster: persistent sessions of the cluster (records in the JetStream bucket)', () => node.sessions?.sessionCount ?? 0);
  const mirror = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  const s = node.stats;
  mirror('edb_cluster_messages_forwarded_total', 'Cluster: messages sent to other nodes (one per node that had a matching subscriber)', () => s.forwarded);
  mirror('edb_cluster_messages_received_total', 'Cluster: messages received from other nodes', () => s.received);
  mirror('edb_cluster_takeovers_total', 'Cluster: clients disconnected here (0x8E) because they connected on another node', () => s.takeovers);
  mirror('edb_cluster_nats_errors_total', 'Cluster: NATS connection errors and lost connections', () => s.natsErrors);
  gauge('edb_cluster_rule_buffer_held', 'Cluster: 1 while this node holds the lease of the rule buffer (rules run here on every node\'s messages)', () => (node.ruleBuffer?.holds() ? 1 : 0));
  mirror('edb_cluster_rule_messages_sent_total', 'Cluster: messages that rule statements match, sent to the node holding the rule buffer', () => s.ruleMessagesSent);
  mirror('edb_cluster_rule_messages_received_total', 'Cluster: messages from other nodes run through the rules here (as holder of the rule buffer)', () => s.ruleMessagesReceived);
  mirror('edb_cluster_rule_messages_dropped_total', 'Cluster: messages for the rule buffer dropped (no holder known, or sent for an earlier lease)', () => s.ruleMessagesDropped);
  mirror('edb_cluster_lease_acquired_total', 'Cluster: times this node took the lease of the rule buffer', () => s.leaseAcquired);
  mirror('edb_cluster_rule_buffer_checkpoints_total', 'Cluster: rule-buffer checkpoints this node wrote to the bucket (as lease holder, at most every second when the buffer changed)', () => s.ruleCheckpoints);
  mirror('edb_cluster_rule_buffer_checkpoints_loaded_total', 'Cluster: times this node took the lease and started from the checkpoint in the bucket', () => s.ruleCheckpointsLoaded);
  mirror('edb_cluster_expired_keys_swept_total', 'Cluster: expired state-store keys this node removed from the bucket (the lease holder sweeps)', () => s.expiredSwept);
  mirror('edb_cluster_state_void_writes_total', 'Cluster: state-store writes found stored after their deadline (ignored; the previous value written back)', () => s.voidedWrites);
  mirror('edb_cluster_state_tombstones_purged_total', 'Cluster: records of deleted state-store keys this node purged from the bucket (the lease holder, 10 minutes after the delete)', () => s.tombstonesPurged);
  mirror('edb_cluster_state_compensations_total', 'Cluster: state-store writes this node undid (stored after their deadline, or answered with an error and stored after all)', () => s.compensations);
  gauge('edb_cluster_outbox_messages', 'Cluster: messages of the broker itself (wills, rule outputs) published while NATS was unreachable, waiting to go to the other nodes and the session stream', () => s.outboxQueued);
  mirror('edb_cluster_outbox_sent_total', 'Cluster: messages sent from the outbox once NATS was back', () => s.outboxSent);
  mirror('edb_cluster_outbox_dropped_total', 'Cluster: messages the full outbox could not keep (delivered on this node only)', () => s.outboxDropped);
  mirror('edb_cluster_orphan_wills_published_total', 'Cluster: wills of clients of a node that died without closing them, published by this node', () => s.orphanWills);
  mirror('edb_cluster_watch_restarts_total', 'Cluster: bucket watches (this node\'s mirrors of the JetStream buckets) started again from their last revision because they had stopped delivering (a partition healed, a lost consumer)', () => s.watchRestarts);
  mirror('edb_cluster_jetstream_errors_total', 'Cluster: JetStream writes that failed', () => s.jetstreamErrors);
  mirror('edb_cluster_session_messages_stored_total', 'Cluster: QoS 1/2 messages stored in the session-message stream from this node (a persistent session wanted them)', () => node.sessions?.counts.stored ?? 0);
  mirror('edb_cluster_sessions_resumed_total', 'Cluster: persistent sessions brought to this node from another node or from the bucket', () => node.sessions?.counts.resumed ?? 0);
  const histogram = new Histogram({
    name: 'edb_cluster_latency_seconds',
    help: 'Cluster: delivery latency of messages received from other nodes (the last 1024 at each scrape)',
    registers,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    collect() {
      this.reset();
      for (const ms of s.recent()) this.observe(ms / 1000);
    },
  });
  void histogram;
}
