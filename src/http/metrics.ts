/**
 * /metrics in the Prometheus text format (prom-client). Every broker series is read at
 * scrape time from BrokerApi (stats, queue depths, subscriptions, retained): nothing on
 * the message path updates a metric. Other parts (rules, state store) add their own series
 * to `registry` with a `collect()` of the same kind.
 */
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { BrokerApi } from '../broker/api.js';
import { mirroredCounter, mirroredCounterByLabel, mirroredGauge } from '../metrics-mirror.js';

export interface ListenerState {
  name: string;
  transport: string;
  engine: string;
  port: number;
  up: boolean;
}

/** Drop reasons the broker counts (BrokerStats.dropped); always exported, at 0 until they happen. */
export const DROP_REASONS = ['queue_full', 'expired', 'offline_queue_full', 'too_large', 'not_authorized', 'quarantined'] as const;

/**
 * Creates the registry with the broker's series, Node's process series (event-loop lag,
 * memory, CPU, GC) and listener state. The HTTP service calls it on the first scrape.
 */
export function createBrokerMetrics(broker: BrokerApi, listeners: () => ListenerState[]): Registry {
  const registry = new Registry();
  const stats = broker.stats;
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });

  mirroredCounter(registry, 'edb_connections_total', 'Client connections accepted since start', () => stats.connectionsTotal);
  mirroredGauge(registry, 'edb_clients_connected', 'Clients connected now', () => stats.clientsConnected);
  mirroredCounterByLabel(registry, 'edb_packets_received_total', 'MQTT packets received, by type', 'type', () => stats.packetsReceived);
  mirroredCounterByLabel(registry, 'edb_packets_sent_total', 'MQTT packets sent, by type', 'type', () => stats.packetsSent);
  mirroredCounter(registry, 'edb_bytes_received_total', 'Bytes received from clients', () => stats.bytesReceived);
  mirroredCounter(registry, 'edb_bytes_sent_total', 'Bytes sent to clients', () => stats.bytesSent);
  mirroredCounter(registry, 'edb_messages_received_total', 'Application messages received from clients (PUBLISH; not $SYS, rule outputs or other messages of the broker)', () => stats.messagesReceived);
  mirroredCounterByLabel(
    registry,
    'edb_messages_published_by_broker_total',
    'Messages the broker published itself, by origin: sys ($SYS updates), rules (rule outputs), state (state-store answers), will (wills)',
    'origin',
    () => stats.messagesPublishedByBroker,
    ['sys', 'rules'],
  );
  mirroredCounter(registry, 'edb_messages_sent_total', 'Application messages delivered to subscribers', () => stats.messagesSent);
  mirroredCounterByLabel(registry, 'edb_messages_dropped_total', 'Messages dropped, by reason', 'reason', () => stats.dropped, DROP_REASONS);
  mirroredCounterByLabel(registry, 'edb_protocol_errors_total', 'Protocol errors, by reason code name', 'reason', () => stats.protocolErrors);
  mirroredCounterByLabel(registry, 'edb_internal_errors_total', 'Unexpected exceptions while serving a client, by where (encode_publish, packet_<type>); goal 0, each is a bug', 'kind', () => stats.internalErrors, ['encode_publish']);
  mirroredCounterByLabel(registry, 'edb_messages_quarantined_total', 'Stored messages taken out of service after failing towards a receiver, by origin', 'origin', () => stats.quarantined);
  mirroredCounter(registry, 'edb_queue_full_disconnects_total', 'Clients disconnected because their outbound queue was full (EDB_QUEUE_FULL_POLICY=disconnect)', () => stats.queueFullDisconnects);
  mirroredGauge(registry, 'edb_retained_messages', 'Retained messages stored (not counting $SYS topics)', () => broker.retainedCount());
  mirroredGauge(registry, 'edb_queued_messages', 'Messages waiting in outbound queues, all clients together', () => broker.queuedMessages());

  new Gauge({
    name: 'edb_client_queue_depth_max',
    help: 'Deepest outbound queue of any connected client, in messages',
    registers: [registry],
    collect() {
      let max = 0;
      for (const c of broker.clients()) if (c.queued > max) max = c.queued;
      this.set(max);
    },
  });
  new Gauge({
    name: 'edb_subscriptions',
    help: 'Subscriptions, by whether the session is online',
    labelNames: ['online'],
    registers: [registry],
    collect() {
      let online = 0;
      let offline = 0;
      for (const s of broker.subscriptions()) {
        if (s.online) online++;
        else offline++;
      }
      this.set({ online: 'true' }, online);
      this.set({ online: 'false' }, offline);
    },
  });
  new Gauge({
    name: 'edb_clients_by_transport',
    help: 'Clients connected now, by transport',
    labelNames: ['transport'],
    registers: [registry],
    collect() {
      this.reset();
      const counts: Record<string, number> = { tcp: 0, tls: 0, ws: 0, wss: 0 };
      for (const c of broker.clients()) counts[c.transport] = (counts[c.transport] ?? 0) + 1;
      for (const [transport, n] of Object.entries(counts)) this.set({ transport }, n);
    },
  });
  new Gauge({
    name: 'edb_listener_up',
    help: 'Whether a listener is accepting connections (1) or not (0)',
    labelNames: ['name', 'transport', 'engine', 'port'],
    registers: [registry],
    collect() {
      this.reset();
      for (const l of listeners()) this.set({ name: l.name, transport: l.transport, engine: l.engine, port: String(l.port) }, l.up ? 1 : 0);
    },
  });
  mirroredGauge(registry, 'edb_uptime_seconds', 'Seconds since the broker started', () => (Date.now() - stats.startedAt) / 1000);
  return registry;
}
