/**
 * `edb cluster show` (in the habit of `vmq-admin cluster show`): the nodes of the cluster a
 * running broker belongs to, from its HTTP API (GET /api/cluster), as one table; --json for
 * the whole answer. Exit code 0 when the node is connected to NATS, 1 when it is not in a
 * cluster or not connected, 3 when the broker cannot be reached.
 */
import type { Command } from 'commander';
import type { ClusterStatus } from '../cluster/status.js';
import { fetchJson, formatTable, type ApiOptions } from './clients.js';
import { exitCodeOf, fail, OperationError } from './exit-codes.js';

type Answer = ({ enabled: true } & ClusterStatus) | { enabled: false };

export function clusterTable(s: ClusterStatus): string {
  const head =
    `cluster ${s.cluster}, seen from node ${s.node}: ` +
    (s.connected ? `connected to NATS server ${s.natsServer}` : `NOT connected to NATS${s.lastError ? ` (${s.lastError})` : ''}`) +
    `\nJetStream: retained bucket ${s.jetstream.retained} (${s.jetstream.retainedKeys} keys), state bucket ${s.jetstream.state} (${s.jetstream.stateKeys} keys), rules bucket ${s.jetstream.rules}${s.jetstream.rulesEtag ? ` (document ${s.jetstream.rulesEtag})` : ''}${s.jetstream.sessions !== undefined ? `, sessions ${s.jetstream.sessions} (${s.jetstream.sessionRecords ?? 0} persistent)` : ''}, replicas ${s.jetstream.replicas}\n` +
    `rule buffer: ${s.jetstream.ruleBufferHolder ? `on node ${s.jetstream.ruleBufferHolder} (lease ${s.jetstream.ruleBufferFence})` : `held by no node (lease bucket ${s.jetstream.lease ?? 'off'})`}; ${s.stats.ruleMessagesSent ?? 0} messages sent to it, ${s.stats.ruleMessagesReceived ?? 0} received as holder, ${s.stats.ruleMessagesDropped ?? 0} dropped\n` +
    `cross-node: ${s.stats.forwarded} messages sent, ${s.stats.received} received` +
    (s.stats.latencyP50Ms !== undefined ? `, latency p50 ${s.stats.latencyP50Ms.toFixed(2)} ms p99 ${s.stats.latencyP99Ms!.toFixed(2)} ms` : '') +
    `; NATS errors ${s.stats.natsErrors}, JetStream errors ${s.stats.jetstreamErrors}\n\n`;
  return (
    head +
    formatTable(s.nodes, [
      { title: 'NODE', value: (n) => (n.self ? `${n.name} *` : n.name) },
      { title: 'RUNNING', value: (n) => (n.running ? 'true' : 'false') },
      { title: 'CLIENTS', value: (n) => String(n.clients), right: true },
      { title: 'SUBSCRIPTIONS', value: (n) => String(n.subscriptions), right: true },
      { title: 'FILTERS', value: (n) => String(n.interest), right: true },
      { title: 'NATS SERVER', value: (n) => n.natsServer },
      { title: 'VERSION', value: (n) => n.version },
      { title: 'LAST SEEN', value: (n) => (n.self ? '' : `${(n.lastSeenMs / 1000).toFixed(1)}s ago`) },
    ])
  );
}

export function register(program: Command): void {
  const cluster = program.command('cluster').description('the cluster this broker belongs to (EDB_CLUSTER_NATS)');
  cluster
    .command('show')
    .description('print the nodes of the cluster: running, clients, subscriptions, NATS server, JetStream state')
    .option('-u, --url <url>', 'broker HTTP API (default http://127.0.0.1:$EDB_HTTP_PORT, port 8888)')
    .option('--json', 'print the JSON instead of a table')
    .action(async (opts: ApiOptions) => {
      try {
        const s = await fetchJson<Answer>(opts, '/api/cluster');
        if (opts.json) process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
        if (!s.enabled) throw new OperationError('this broker runs alone (EDB_CLUSTER_NATS is not set); see docs/cluster.md');
        if (!opts.json) process.stdout.write(clusterTable(s));
        if (!s.connected) throw new OperationError(`node ${s.node} is not connected to NATS; it serves its local clients only`);
      } catch (err) {
        fail('cluster show', (err as Error).message);
        process.exitCode = exitCodeOf(err);
      }
    });
}
