/**
 * Prometheus metrics per bridge (label `bridge`), read when scraped:
 *   edb_bridge_up (1 connected, 0 not), edb_bridge_state{state} (1 for the current state),
 *   edb_bridge_backlog_messages, edb_bridge_backlog_bytes, edb_bridge_oldest_message_age_seconds (gauges);
 *   edb_bridge_messages_out_total, edb_bridge_messages_in_total, edb_bridge_dropped_total{reason},
 *   edb_bridge_reconnects_total, edb_bridge_in_not_authorized_total, edb_bridge_loop_total,
 *   edb_bridge_hop_limit_total (counters); edb_bridge_loop_returned_total (no label).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { DROP_REASONS } from './backlog.js';
import type { Bridge } from './bridge.js';
import type { BridgeService } from './service.js';

const STATES = ['connecting', 'connected', 'disconnected', 'stopped'] as const;

export function registerBridgeMetrics(registry: Registry, service: BridgeService): void {
  const registers = [registry];
  const gauge = (name: string, help: string, f: (b: Bridge, now: number) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['bridge'],
      registers,
      collect() {
        this.reset();
        const now = Date.now();
        for (const b of service.list()) this.set({ bridge: b.name }, f(b, now));
      },
    });
  const counter = (name: string, help: string, f: (b: Bridge) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['bridge'],
      registers,
      collect() {
        this.reset();
        for (const b of service.list()) this.inc({ bridge: b.name }, f(b));
      },
    });
  gauge('edb_bridge_up', 'Bridge: 1 while connected to its remote', (b) => (b.state === 'connected' ? 1 : 0));
  new Gauge({
    name: 'edb_bridge_state',
    help: 'Bridge: 1 for its current state (connecting, connected, disconnected)',
    labelNames: ['bridge', 'state'],
    registers,
    collect() {
      this.reset();
      for (const b of service.list()) for (const s of STATES) this.set({ bridge: b.name, state: s }, b.state === s ? 1 : 0);
    },
  });
  gauge('edb_bridge_backlog_messages', 'Bridge: messages held for the remote (QoS 1/2 backlog and QoS 0 buffer)', (b) => b.backlog.size + b.buffer.size);
  gauge('edb_bridge_backlog_bytes', 'Bridge: bytes (topic + payload) held for the remote', (b) => b.backlog.bytes + b.buffer.bytes);
  gauge('edb_bridge_oldest_message_age_seconds', 'Bridge: age of the oldest message held for the remote (0 when none)', (b, now) => {
    const oldest = Math.min(b.backlog.oldestStoredAt ?? Infinity, b.buffer.oldestStoredAt ?? Infinity);
    return Number.isFinite(oldest) ? Math.max(0, now - oldest) / 1000 : 0;
  });
  counter('edb_bridge_messages_out_total', 'Bridge: messages sent to the remote (a resend counts again)', (b) => b.counters.messagesOut);
  counter('edb_bridge_messages_in_total', 'Bridge: messages received from the remote', (b) => b.counters.messagesIn);
  counter('edb_bridge_reconnects_total', 'Bridge: connection attempts after the first', (b) => b.counters.reconnects);
  counter('edb_bridge_loop_total', 'Bridge: messages not sent because the remote had them already, or received and dropped because they had been here (edb-bridge-path: a ring of bridges)', (b) => b.counters.loops);
  counter('edb_bridge_hop_limit_total', 'Bridge: messages not sent because they had crossed maxHops bridges already', (b) => b.counters.hopLimited);
  new Counter({
    name: 'edb_bridge_loop_returned_total',
    help: 'Bridges: PUBLISHes from another broker\'s bridge that had crossed a bridge here before (edb-bridge-path: a ring); dropped',
    registers,
    collect() {
      this.reset();
      this.inc(service.returned);
    },
  });
  counter('edb_bridge_in_not_authorized_total', 'Bridge: incoming messages the local ACL refused', (b) => b.counters.inNotAuthorized);
  new Counter({
    name: 'edb_bridge_dropped_total',
    help: 'Bridge: messages dropped, oldest first, by reason (buffer_full: the message or byte bound; too_old: the age bound; retention, size_cap: the durable log dropped the generation holding them)',
    labelNames: ['bridge', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const b of service.list()) {
        const d = b.dropped;
        for (const reason of DROP_REASONS) this.inc({ bridge: b.name, reason }, d[reason]);
      }
    },
  });
}
