/**
 * Prometheus metrics of durable storage, read when scraped (EDB_STORAGE=durable):
 *   edb_storage_bytes, edb_storage_generations, edb_storage_commit_max_seconds,
 *   edb_storage_last_batch_messages, edb_storage_replay_seconds, edb_storage_full (gauges);
 *   edb_storage_messages_total, edb_storage_bytes_written_total, edb_storage_commits_total
 *   (one fsync each), edb_storage_commit_seconds_total, edb_storage_generations_dropped_total,
 *   edb_storage_bytes_dropped_total, edb_storage_damaged_bytes_total, edb_storage_refused_total (counters); on one node also
 *   edb_storage_session_reads_total (messages read back from the log into a session's queue)
 *   and edb_storage_session_skips_total (a session's unread messages dropped with a generation).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { LogMetrics } from './log.js';
import type { PagingStats } from './sessions.js';
import type { BrokerStorage } from './store.js';

export function registerStorageMetrics(registry: Registry, storage: BrokerStorage, paging?: PagingStats): void {
  const registers = [registry];
  const read = (): LogMetrics & { full: boolean } => {
    const info = storage.info();
    return { ...info.log, full: info.full };
  };
  const gauge = (name: string, help: string, f: (m: ReturnType<typeof read>) => number) =>
    new Gauge({ name, help, registers, collect() { this.set(f(read())); } });
  const counter = (name: string, help: string, f: (m: ReturnType<typeof read>) => number) =>
    new Counter({ name, help, registers, collect() { this.reset(); this.inc(f(read())); } });
  gauge('edb_storage_bytes', 'Storage: bytes of the message log on disk', (m) => m.bytes);
  gauge('edb_storage_generations', 'Storage: generations of the message log', (m) => m.generations);
  gauge('edb_storage_commit_max_seconds', 'Storage: longest batch commit (write + fdatasync)', (m) => m.commitMillisMax / 1000);
  gauge('edb_storage_last_batch_messages', 'Storage: messages in the last committed batch', (m) => m.lastBatchMessages);
  gauge('edb_storage_replay_seconds', 'Storage: time to open and check the log at start', (m) => m.replayMillis / 1000);
  gauge('edb_storage_full', 'Storage: 1 while QoS 1/2 messages that need storage are refused (disk full or size cap)', (m) => (m.full ? 1 : 0));
  counter('edb_storage_messages_total', 'Storage: messages appended to the log', (m) => m.messagesAppended);
  counter('edb_storage_bytes_written_total', 'Storage: bytes appended to the log', (m) => m.bytesAppended);
  counter('edb_storage_commits_total', 'Storage: batch commits (one fdatasync each)', (m) => m.commits);
  counter('edb_storage_commit_seconds_total', 'Storage: time spent committing batches', (m) => m.commitMillisTotal / 1000);
  counter('edb_storage_generations_dropped_total', 'Storage: generations dropped by retention or the size cap', (m) => m.generationsDropped);
  counter('edb_storage_bytes_dropped_total', 'Storage: bytes dropped with whole generations', (m) => m.bytesDropped);
  counter('edb_storage_damaged_bytes_total', 'Storage: bytes of damaged log records a read skipped (never handed out)', (m) => m.damagedBytes);
  counter('edb_storage_refused_total', 'Storage: appends refused (disk full or size cap; a publish refused before it was appended counts in edb_messages_dropped_total{reason="storage_full"})', (m) => m.refused);
  if (paging) {
    const plain = (name: string, help: string, f: () => number) =>
      new Counter({ name, help, registers, collect() { this.reset(); this.inc(f()); } });
    plain('edb_storage_session_reads_total', 'Storage: messages read back from the log into the queue of a session whose backlog is past its memory window', () => paging.messagesRead);
    plain('edb_storage_session_skips_total', 'Storage: times a session\'s unread messages were in a generation dropped by retention or the size cap (lost; it goes on at the oldest message kept)', () => paging.sessionsSkipped);
  }
}
