/**
 * Prometheus series whose values live elsewhere (the broker's stats, a service's counters):
 * prom-client reads them at scrape time, so nothing is updated on the hot path.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

/** A counter whose value lives elsewhere: set to the source's value at each scrape. */
export function mirroredCounter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** Same, one series per key of a record (packet type, drop reason, ...). */
export function mirroredCounterByLabel(
  registry: Registry,
  name: string,
  help: string,
  label: string,
  read: () => Record<string, number>,
  known: readonly string[] = [],
): void {
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      this.reset();
      // Known labels are always present (at 0), so rate() and alerts work before the first event.
      for (const key of known) this.inc({ [label]: key }, 0);
      for (const [key, value] of Object.entries(read())) this.inc({ [label]: key }, value);
    },
  });
}

export function mirroredGauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}
