/** The cluster (from GET /api/cluster): this node's NATS connection, JetStream buckets, and one row per node. */
import { get } from './api.js';
import { clear, every, h } from './dom.js';

interface NodeRow {
  name: string;
  running: boolean;
  self?: boolean;
  clients: number;
  subscriptions: number;
  interest: number;
  natsServer: string;
  version: string;
  lastSeenMs: number;
}
type ClusterAnswer =
  | { enabled: false }
  | {
      enabled: true;
      cluster: string;
      node: string;
      connected: boolean;
      natsServer?: string;
      lastError?: string;
      jetstream: { retained: string; retainedKeys: number; state: string; stateKeys: number; replicas: number; sessions?: string; sessionRecords?: number };
      nodes: NodeRow[];
      stats: { forwarded: number; received: number; natsErrors: number; jetstreamErrors: number; latencyP50Ms?: number; latencyP99Ms?: number };
    };

export function clusterPage(root: HTMLElement): () => void {
  const head = h('div', { id: 'cluster-summary' });
  const table = h('div', { id: 'cluster-table' });
  clear(root, h('section', { class: 'card' }, h('h2', {}, 'Cluster'), head, table));
  return every(3000, async () => {
    const s = await get<ClusterAnswer>('/api/cluster');
    if (!s.enabled) {
      clear(head, h('p', { id: 'not-configured' }, 'Not configured: this broker runs alone (EDB_CLUSTER_NATS is not set).'), h('p', { class: 'muted' }, 'See docs/cluster.md to join several nodes through NATS JetStream.'));
      clear(table);
      return;
    }
    const ms = (v: number | undefined) => (v === undefined ? '—' : `${v.toFixed(2)} ms`);
    clear(
      head,
      h('p', {}, `cluster ${s.cluster}, seen from node ${s.node}: `, s.connected ? h('span', { class: 'ok' }, `connected to NATS server ${s.natsServer ?? ''}`) : h('span', { class: 'error' }, `not connected to NATS${s.lastError ? ` (${s.lastError})` : ''}: serving local clients only`)),
      h('p', { class: 'muted' }, `JetStream: retained bucket ${s.jetstream.retained} (${s.jetstream.retainedKeys} keys), state bucket ${s.jetstream.state} (${s.jetstream.stateKeys} keys)${s.jetstream.sessions !== undefined ? `, sessions ${s.jetstream.sessions} (${s.jetstream.sessionRecords ?? 0} persistent)` : ''}, replicas ${s.jetstream.replicas}`),
      h('p', { class: 'muted' }, `cross-node: ${s.stats.forwarded} sent, ${s.stats.received} received, latency p50 ${ms(s.stats.latencyP50Ms)}, p99 ${ms(s.stats.latencyP99Ms)}; NATS errors ${s.stats.natsErrors}, JetStream errors ${s.stats.jetstreamErrors}`),
    );
    clear(
      table,
      h(
        'table',
        {},
        h('tr', {}, ['node', 'running', 'clients', 'subscriptions', 'filters', 'NATS server', 'version', 'last seen'].map((x) => h('th', {}, x))),
        s.nodes.map((n) =>
          h(
            'tr',
            { class: n.self ? 'self' : '' },
            h('td', { class: 'mono' }, n.self ? `${n.name} (this node)` : n.name),
            h('td', {}, n.running ? 'yes' : 'no'),
            h('td', {}, String(n.clients)),
            h('td', {}, String(n.subscriptions)),
            h('td', {}, String(n.interest)),
            h('td', { class: 'mono' }, n.natsServer || '—'),
            h('td', {}, n.version),
            h('td', {}, n.self ? '' : `${(n.lastSeenMs / 1000).toFixed(1)} s ago`),
          ),
        ),
      ),
    );
  });
}
