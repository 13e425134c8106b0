/**
 * Switching EDB_STORAGE from durable to memory: the first memory start finds the durable
 * folder (<dataDir>/storage) and starts from what it holds, once. Everything is read into
 * plain in-memory objects (retained messages, sessions with their queues refilled from the log,
 * the wills of connections a crash never closed, the state store's snapshot and writes, the
 * rule buffer); the folder is then renamed to storage.moved-to-memory-<time>, so the next
 * start uses the backup as memory mode does, and the data stays on disk for the operator.
 */
import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Message } from '../mqtt/message.js';
import { Session } from '../session/session.js';
import { DurableStorage } from './durable.js';
import { DurableSessionStore, SessionLog } from './sessions.js';
import type { BrokerStorage, LiveWillRecord } from './store.js';

export interface DurableHandOver {
  /** Open while `apply` runs (the state store reads its log from it). */
  readonly storage: BrokerStorage;
  readonly retained: Message[];
  /** Plain sessions (no storage behind them), queues refilled. */
  readonly sessions: Session[];
  readonly queued: number;
  readonly wills: Map<string, LiveWillRecord>;
  readonly ruleBuffer: Buffer | undefined;
  /** Close the durable folder and rename it out of the way; returns its new path. */
  retire(): Promise<string>;
}

/** Is there durable data under `dir` (the storage folder) that a memory start should take? */
export function hasDurableData(dir: string): boolean {
  return existsSync(join(dir, 'kv', 'data.mdb')) || existsSync(join(dir, 'log'));
}

export function openHandOver(dir: string, log: Logger, maxQueued: number, ruleBufferName: string): DurableHandOver {
  const storage = new DurableStorage({ dir, log, batchSize: 256, flushIntervalMs: 2, generationMs: 3_600_000, retentionMs: 0, maxBytes: 0 });
  const now = Date.now();
  const retained = storage.retained().filter((m) => m.expiresAt === undefined || m.expiresAt > now);
  const sessionLog = new SessionLog(storage, log);
  const loaded = new DurableSessionStore(sessionLog).load(maxQueued, now);
  const sessions = loaded.sessions.map(toPlain);
  const wills = storage.liveWills();
  sessionLog.flush(); // what loading scheduled, written before the folder closes
  return {
    storage,
    retained,
    sessions,
    queued: loaded.messages,
    wills,
    ruleBuffer: storage.document(ruleBufferName),
    async retire() {
      await storage.close();
      const moved = `${dir}.moved-to-memory-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      renameSync(dir, moved);
      return moved;
    },
  };
}

/** A session rebuilt from durable storage, as a plain one (memory mode keeps no log). */
function toPlain(d: Session): Session {
  const s = new Session(d.clientId);
  s.expiryInterval = d.expiryInterval;
  s.expiresAt = d.expiresAt;
  s.pendingWill = d.pendingWill;
  s.willDueAt = d.willDueAt;
  for (const [k, sub] of d.subscriptions) s.setSubscription(k, sub);
  for (const id of d.incomingQos2) s.restoreQos2(id);
  for (const e of d.inflight.values()) s.restoreInflight({ ...e });
  for (let i = d.queueHead; i < d.queue.length; i++) s.enqueue(d.queue[i]!);
  return s;
}
