/**
 * Retained messages kept in memory for matching (RetainedStore) and written through to
 * durable storage, so that a retained PUBLISH acknowledged after its commit survives a crash.
 */
import type { Logger } from 'pino';
import type { Message } from '../mqtt/message.js';
import { RetainedStore } from '../broker/retained.js';
import { StorageFullError } from './errors.js';
import type { BrokerStorage } from './store.js';

export class PersistentRetainedStore extends RetainedStore {
  /** Counts writes handed to storage: a publish that made one waits for the commit before its ack. */
  writes = 0;
  private loading = false;
  private fullLoggedAt = 0;

  constructor(
    private readonly storage: BrokerStorage,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Load what storage holds (at start, before clients). Returns how many. */
  load(now = Date.now()): number {
    this.loading = true;
    try {
      let n = 0;
      for (const m of this.storage.retained()) {
        if (m.expiresAt !== undefined && m.expiresAt <= now) continue;
        super.set(m);
        n++;
      }
      return n;
    } finally {
      this.loading = false;
    }
  }

  override set(message: Message): void {
    super.set(message);
    if (this.loading) return;
    try {
      this.storage.setRetained(message);
      this.writes++;
    } catch (err) {
      if (!(err instanceof StorageFullError)) throw err;
      // kept in memory only; a QoS 1/2 one was refused before it got here (0x97)
      const now = Date.now();
      if (now - this.fullLoggedAt >= 60_000) {
        this.fullLoggedAt = now;
        this.log.error({ topic: message.topic }, 'storage full: a retained message is kept in memory only');
      }
    }
  }

  /**
   * Forgets the messages in memory only: clear() undoes a failed backup import, and what
   * storage holds is loaded again then (load()).
   */
  override clear(): void {
    super.clear();
  }
}
