/**
 * The JetStream backend of the session storage (src/cluster/sessions.ts), the parts that need
 * no NATS server: the session record's stored form (will included), and how a restore reads
 * the stream entries the loader fetched (storage.read from a position). The behaviour with real
 * NATS servers and broker processes is in test/fault/cluster-sessions.test.ts.
 */
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { ClusterSessionStorage, decodeRecord, encodeRecord } from '../../src/cluster/sessions.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import type { SessionRecord } from '../../src/storage/store.js';
import type { LogEntry } from '../../src/storage/log.js';

describe('cluster session storage', () => {
  it('keeps a session record, its will and the holding node through the bucket form', () => {
    const rec: SessionRecord = {
      clientId: 'dev/ä 1',
      expiryInterval: 3600,
      expiresAt: 1_800_000_000_000,
      subscriptions: [
        { topic: 'a/+', filter: 'a/+', qos: 1, noLocal: false, retainAsPublished: true, retainHandling: 0, subscriptionIdentifier: 7 },
        { topic: '$share/g/b/#', filter: 'b/#', shareGroup: 'g', qos: 2, noLocal: true, retainAsPublished: false, retainHandling: 2 },
      ],
      incomingQos2: [3, 9],
      will: {
        message: { topic: 'dev/status', payload: Buffer.from([0, 1, 255]), qos: 1, retain: true, properties: { correlationData: Buffer.from('cd'), contentType: 'x' } },
        dueAt: 1_700_000_000_000,
        expirySeconds: 30,
        username: 'u',
      },
    };
    const back = decodeRecord(Buffer.from(encodeRecord(rec, 'node-2')));
    expect(back.node).toBe('node-2');
    expect(back.rec.subscriptions).toEqual(rec.subscriptions);
    expect(back.rec.incomingQos2).toEqual([3, 9]);
    expect(back.rec.expiresAt).toBe(rec.expiresAt);
    expect(back.rec.will!.message.payload.equals(Buffer.from([0, 1, 255]))).toBe(true);
    expect(back.rec.will!.message.properties!.correlationData!.toString()).toBe('cd');
    expect(back.rec.will!.message.retain).toBe(true);
    expect(back.rec.will!.dueAt).toBe(rec.will!.dueAt);
    expect(back.rec.will!.username).toBe('u');
    expect(() => decodeRecord(Buffer.from('{"v":1}'))).toThrow(/not a session record/);
  });

  it('serves a restore the fetched stream entries from a position, in pages', () => {
    const s = new ClusterSessionStorage(new MemoryStorage(), 'n1', pino({ level: 'silent' }));
    const entry = (seq: number): LogEntry => ({ pos: { gen: 0, offset: seq }, next: { gen: 0, offset: seq + 1 }, message: { topic: 't', payload: Buffer.from(String(seq)), qos: 1, retain: false, clusterSeq: seq }, storedAt: 0, direct: false });
    s.reading = [entry(5), entry(6), entry(9), entry(12)];
    expect(s.read({ gen: 0, offset: 1 }, 2).entries.map((e) => e.pos.offset)).toEqual([5, 6]);
    const page = s.read({ gen: 0, offset: 7 }, 10);
    expect(page.entries.map((e) => e.pos.offset)).toEqual([9, 12]);
    expect(page.next.offset).toBe(13);
    expect(s.read({ gen: 0, offset: 13 }, 10).entries).toEqual([]);
    // a message has a position only once the stream has it
    expect(s.append({ topic: 't', payload: Buffer.alloc(0), qos: 1, retain: false, clusterSeq: 44 })).toEqual({ gen: 0, offset: 44 });
    expect(() => s.append({ topic: 't', payload: Buffer.alloc(0), qos: 1, retain: false })).toThrow();
    s.noteSeq(44);
    expect(s.tail.offset).toBe(45);
  });
});
