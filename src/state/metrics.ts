/**
 * Prometheus metrics of the state store (prom-client), read from the service when scraped:
 *   edb_state_keys, edb_state_bytes, edb_state_memory_bytes, edb_state_max_keys,
 *   edb_state_max_bytes (gauges); edb_state_ops_total{command}, edb_state_errors_total{error},
 *   edb_state_notifications_total, edb_state_expired_total (counters);
 *   edb_state_keynotify_registrations (gauge).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { StateStoreService } from './service.js';

export function registerStateStoreMetrics(registry: Registry, service: StateStoreService): void {
  const registers = [registry];
  const gauge = (name: string, help: string, read: (m: ReturnType<StateStoreService['metrics']>) => number | undefined) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const v = read(service.metrics());
        if (v !== undefined) this.set(v);
      },
    });
  gauge('edb_state_keys', 'State store: keys held', (m) => m.keys);
  gauge('edb_state_bytes', 'State store: bytes of keys and values held', (m) => m.bytes);
  gauge('edb_state_memory_bytes', 'State store: size of the table\'s WebAssembly memory', (m) => m.memoryBytes);
  gauge('edb_state_max_keys', 'State store: key quota', (m) => m.maxKeys);
  gauge('edb_state_max_bytes', 'State store: byte quota', (m) => m.maxBytes);
  gauge('edb_state_keynotify_registrations', 'State store: active KEYNOTIFY registrations', (m) => m.keyNotifyRegistrations);
  // counters mirror the service's own monotonic counts at scrape time
  const mirror = (name: string, help: string, labelName: string | undefined, read: (m: ReturnType<StateStoreService['metrics']>) => Record<string, number> | number) =>
    new Counter({
      name,
      help,
      registers,
      labelNames: labelName ? [labelName] : [],
      collect() {
        const v = read(service.metrics());
        this.reset();
        if (typeof v === 'number') this.inc(v);
        else for (const [label, n] of Object.entries(v)) this.inc({ [labelName!]: label }, n);
      },
    });
  mirror('edb_state_ops_total', 'State store: requests by command', 'command', (m) => m.ops);
  mirror('edb_state_errors_total', 'State store: error answers by message', 'error', (m) => m.errors);
  mirror('edb_state_notifications_total', 'State store: KEYNOTIFY notifications sent', undefined, (m) => m.notifications);
  mirror('edb_state_expired_total', 'State store: keys removed by expiry', undefined, (m) => m.expired);
}
