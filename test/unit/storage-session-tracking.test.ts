/**
 * DurableSession follows a stored message's delivery from queue to acknowledgement as one object
 * (its queued delivery is its in-flight entry), and its iterator: what a restart reads back.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../../src/mqtt/message.js';
import type { Delivery, Subscription } from '../../src/session/session.js';
import { DurableStorage } from '../../src/storage/durable.js';
import { DurableSession, DurableSessionStore, SessionLog } from '../../src/storage/sessions.js';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
const open: DurableStorage[] = [];

function storage(dir: string): DurableStorage {
  const s = new DurableStorage({ dir, log, batchSize: 64, flushIntervalMs: 1, generationMs: 3_600_000, retentionMs: 0, maxBytes: 0 });
  open.push(s);
  return s;
}

const sub = (topic: string, shareGroup?: string): Subscription => ({ topic: shareGroup ? `$share/${shareGroup}/${topic}` : topic, filter: topic, qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, ...(shareGroup ? { shareGroup } : {}) });

afterEach(async () => {
  // the session logs' pending writes (the lazy iterator flush, 20 ms) run while storage is open
  await new Promise((r) => setTimeout(r, 50));
  for (const s of open.splice(0)) await s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('DurableSession tracking', () => {
  it('the queued delivery of a stored message is its in-flight entry; the PUBACK moves the position on', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'edb-track-'));
    dirs.push(dir);
    const st = storage(dir);
    const sl = new SessionLog(st, log);
    const s = new DurableSessionStore(sl).create('c') as DurableSession;
    s.expiryInterval = 3600;
    s.setSubscription('t', sub('t'));
    const msgs: Message[] = [0, 1, 2].map((i) => ({ topic: 't', payload: Buffer.from(`m${i}`), qos: 1, retain: false }));
    for (const m of msgs) {
      sl.storeFor(s, m);
      s.enqueue({ message: m, qos: 1, retain: false, subscriptionIds: undefined });
    }
    const d = s.shift()!;
    const entry = s.inflightFor(d, s.allocatePacketId());
    expect(entry).toBe(d); // one object from queue to acknowledgement
    s.addInflight(entry);
    expect(s.inflight.get(entry.packetId)).toBe(d);
    const second = sl.positions.get(msgs[1]!)!;
    expect(s.iteratorRecord(st.tail).next).toEqual(sl.positions.get(msgs[0]!));
    expect(s.removeInflight(entry.packetId)).toBe(true);
    const it = s.iteratorRecord(st.tail);
    expect(it.next).toEqual(second);
    expect(it.done).toEqual([]);
  });

  it('a message that reached the session twice (plain and shared subscription): one copy answered, the other comes back after a restart', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'edb-track-'));
    dirs.push(dir);
    const st = storage(dir);
    const sl = new SessionLog(st, log);
    const s = new DurableSessionStore(sl).create('c') as DurableSession;
    s.expiryInterval = 3600;
    s.setSubscription('t', sub('t'));
    s.setSubscription('$share/g/t', sub('t', 'g'));
    const m: Message = { topic: 't', payload: Buffer.from('twice'), qos: 1, retain: false };
    const plain: Delivery = { message: m, qos: 1, retain: false, subscriptionIds: undefined };
    sl.storeFor(s, m);
    s.enqueue(plain);
    sl.storeFor(s, m, true); // the shared copy: named in the iterator, a replay by topic would not make it
    s.enqueue({ ...plain });
    const pos = sl.positions.get(m)!;
    // both sent, the second (shared) copy answered first
    const e1 = s.inflightFor(s.shift()!, s.allocatePacketId());
    s.addInflight(e1);
    const e2 = s.inflightFor(s.shift()!, s.allocatePacketId());
    s.addInflight(e2);
    s.removeInflight(e2.packetId);
    const it = s.iteratorRecord(st.tail);
    expect(it.next).toEqual(pos);
    expect(it.done).not.toContainEqual(pos); // listing it would make a restart skip the unanswered copy too
    // a restart from this iterator queues the message again
    st.setSession(s.record());
    st.setIterator('c', it);
    await st.flushed();
    const loaded = new DurableSessionStore(new SessionLog(st, log)).load(100);
    expect(loaded.messages).toBe(1);
    expect(loaded.sessions[0]!.peek()?.message.payload.toString()).toBe('twice');
  });
});
