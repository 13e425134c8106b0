/**
 * Cluster mode (EDB_CLUSTER_NATS): loaded by server.ts only when it is set, so a single
 * node never loads the NATS client. See docs/cluster.md.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { ClusterNode } from './node.js';
import type { ClusterBroker } from './broker-view.js';
import type { ClusterStatus } from './status.js';
import type { StateStoreService } from '../state/service.js';
import { ClusterStateStore } from './state.js';
import { ClusterRules, type ClusterRulesView } from './rules.js';
import { ClusterRuleBuffer, type RuleBufferView } from './rule-buffer.js';
import { ClusterSessions } from './sessions.js';
import { parseDuration } from '../storage/index.js';
import type { BrokerStorage } from '../storage/store.js';
import { nodeNameOf } from './node.js';

export { ClusterSessions } from './sessions.js';

/** The cluster's persistent sessions over the node's own storage (before the broker is made: it is its session store). */
export function createClusterSessions(local: BrokerStorage, config: Config, log: Logger): ClusterSessions {
  return new ClusterSessions(
    local,
    { cluster: config.clusterName, node: nodeNameOf(config), replicas: config.clusterReplicas, retentionMs: parseDuration(config.storageRetention, 'EDB_STORAGE_RETENTION'), maxQueued: config.maxOfflineMessages },
    log.child({ part: 'cluster' }),
  );
}

export type { ClusterStatus } from './status.js';
export { clusterConfigProblem } from './node.js';

export interface ClusterService {
  readonly node: ClusterNode;
  status(): ClusterStatus;
  /** For /readyz: why this node is not a working cluster member, or undefined. */
  notReady(): string | undefined;
  /** One line for the status page. */
  statusSection(): Record<string, unknown>;
  close(): Promise<void>;
}

/** Register the cluster's hooks (before listeners open) and start joining in the background. */
export function startCluster(broker: ClusterBroker, config: Config, log: Logger, version: string, parts: { stateStore?: StateStoreService; rules?: ClusterRulesView & RuleBufferView; sessions?: ClusterSessions } = {}): ClusterService {
  const clog = log.child({ part: 'cluster' });
  const node = new ClusterNode(broker, config, clog, version);
  parts.stateStore?.attachReplica((space) => (node.stateStore = new ClusterStateStore(space, node.name, config.clusterName, config.clusterReplicas, clog, node.stats)));
  if (parts.rules) node.rules = new ClusterRules(parts.rules, node.name, config.clusterName, config.clusterReplicas, clog, node.stats);
  node.ruleBuffer = new ClusterRuleBuffer(parts.rules, node.name, config.clusterName, config.clusterReplicas, `edb.${config.clusterName}`, clog, node.stats);
  // one node at a time removes expired state keys from the bucket: the lease holder
  node.ruleBuffer.onHolder(() => node.stateStore?.sweepExpired());
  if (parts.sessions) node.useSessions(parts.sessions);
  node.start();
  return {
    node,
    status: () => node.status(),
    notReady() {
      if (node.isConnected) return undefined;
      const s = node.status();
      return `not connected to NATS (${config.clusterNats}); retrying, serving local clients only${s.lastError ? `; last error: ${s.lastError}` : ''}`;
    },
    statusSection() {
      const s = node.status();
      const others = s.nodes.filter((n) => !n.self);
      return {
        summary: s.connected ? `node ${s.node} of cluster ${s.cluster}, ${others.length + 1} node${others.length === 0 ? '' : 's'} running` : `node ${s.node} of cluster ${s.cluster}: NOT CONNECTED to NATS, retrying; serving local clients only`,
        nats: s.connected ? `connected to ${s.natsServer}` : `unreachable (${config.clusterNats})${s.lastError ? `: ${s.lastError}` : ''}`,
        nodes: s.nodes.map((n) => `${n.name}${n.self ? ' (this node)' : ''}: ${n.clients} clients, ${n.subscriptions} subscriptions`).join('; '),
        jetstream: `retained bucket ${s.jetstream.retained} (${s.jetstream.retainedKeys} keys), state bucket ${s.jetstream.state} (${s.jetstream.stateKeys} keys), rules bucket ${s.jetstream.rules}${s.jetstream.rulesEtag ? ` (document ${s.jetstream.rulesEtag})` : ''}, rule buffer ${s.jetstream.ruleBufferHolder ? `on ${s.jetstream.ruleBufferHolder} (lease ${s.jetstream.ruleBufferFence})` : 'held by no node yet'}, R${s.jetstream.replicas}`,
        crossNode: `${s.stats.forwarded} sent, ${s.stats.received} received${s.stats.latencyP50Ms !== undefined ? `, latency p50 ${s.stats.latencyP50Ms.toFixed(2)} ms` : ''}`,
      };
    },
    close: () => node.close(),
  };
}
