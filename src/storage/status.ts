import type { BrokerStorage } from './store.js';

/** One line for the status page. */
export function storageStatusLine(storage: BrokerStorage): string {
  if (storage.kind === 'memory') return 'Storage: memory (saved by the backup on a graceful stop only)';
  const i = storage.info();
  const mib = (n: number) => (n / 1048576).toFixed(1);
  const commitMs = i.log.commits > 0 ? (i.log.commitMillisTotal / i.log.commits).toFixed(1) : '0';
  return `Storage: durable, ${mib(i.log.bytes)} MiB in ${i.generations.length} generation(s), ${i.sessions} sessions, ${i.retained} retained, ${commitMs} ms per commit${i.full ? ', FULL: refusing QoS 1/2 that needs storage' : ''}`;
}
