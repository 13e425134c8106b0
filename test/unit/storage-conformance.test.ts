/**
 * One conformance suite for the storage interface (src/storage/store.ts), run against every
 * implementation, as aedes-persistence's abstract.js does for its stores. `reopen` closes the
 * store and opens it again where the implementation keeps data (durable: from disk).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../../src/mqtt/message.js';
import { DurableStorage, MemoryStorage, type BrokerStorage } from '../../src/storage/index.js';
import type { Subscription } from '../../src/session/session.js';

const silent = pino({ level: 'silent' });

interface Impl {
  name: string;
  /** Data written is expected to outlive `reopen` (memory: the same instance). */
  open(): { store: BrokerStorage; reopen(): Promise<BrokerStorage>; cleanup(): Promise<void> };
}

const impls: Impl[] = [
  {
    name: 'memory',
    open() {
      const store = new MemoryStorage();
      return { store, reopen: async () => store, cleanup: async () => store.close() };
    },
  },
  {
    name: 'durable',
    open() {
      const dir = mkdtempSync(join(tmpdir(), 'edb-conf-'));
      const make = () => new DurableStorage({ dir, log: silent, batchSize: 16, flushIntervalMs: 1, generationMs: 3_600_000, retentionMs: 0, maxBytes: 0 });
      let current = make();
      return {
        store: current,
        async reopen() {
          await current.close();
          current = make();
          return current;
        },
        async cleanup() {
          await current.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
];

function msg(topic: string, payload: string, extra: Partial<Message> = {}): Message {
  return { topic, payload: Buffer.from(payload), qos: 1, retain: false, ...extra };
}

const sub = (filter: string, qos: 0 | 1 | 2 = 1): Subscription => ({ topic: filter, filter, qos, noLocal: false, retainAsPublished: false, retainHandling: 0 });

for (const impl of impls) {
  describe(`storage conformance: ${impl.name}`, () => {
    let cleanup: (() => Promise<void>) | undefined;
    afterEach(async () => {
      await cleanup?.();
      cleanup = undefined;
    });
    const setup = () => {
      const h = impl.open();
      cleanup = h.cleanup;
      return h;
    };
    const durably = (s: BrokerStorage) => new Promise<void>((resolve, reject) => s.onDurable((err) => (err ? reject(err) : resolve())));

    it('stores, replaces and clears retained messages, with their properties', async () => {
      const h = setup();
      const s = h.store;
      s.setRetained(msg('a/b', 'one', { retain: true }));
      s.setRetained(msg('a/c', 'two', { retain: true, qos: 2, senderId: 'pub', expiresAt: Date.now() + 60_000, properties: { contentType: 'text/plain', correlationData: Buffer.from([1, 2]), userProperties: { k: 'v' } } }));
      s.setRetained(msg('a/b', 'three', { retain: true }));
      s.setRetained(msg('gone', 'x', { retain: true }));
      s.setRetained(msg('gone', '', { retain: true }));
      await durably(s);
      const r = await h.reopen();
      const byTopic = new Map(r.retained().map((m) => [m.topic, m]));
      expect([...byTopic.keys()].sort()).toEqual(['a/b', 'a/c']);
      expect(byTopic.get('a/b')!.payload.toString()).toBe('three');
      const c = byTopic.get('a/c')!;
      expect(c.qos).toBe(2);
      expect(c.senderId).toBe('pub');
      expect(c.expiresAt).toBeGreaterThan(Date.now());
      expect(c.properties?.contentType).toBe('text/plain');
      expect(c.properties?.correlationData).toEqual(Buffer.from([1, 2]));
      expect(c.properties?.userProperties).toEqual({ k: 'v' });
      r.clearRetained();
      await durably(r);
      expect((await h.reopen()).retained()).toEqual([]);
    });

    it('keeps session records and iterators; deleting a session removes both', async () => {
      const h = setup();
      const s = h.store;
      s.setSession({ clientId: 'c1', expiryInterval: 300, subscriptions: [sub('x/#'), sub('y', 2)], incomingQos2: [7], will: { message: msg('w', 'bye'), dueAt: 123, expirySeconds: 5, username: 'u' } });
      s.setSession({ clientId: 'c2', expiryInterval: 10, expiresAt: 99, subscriptions: [], incomingQos2: [] });
      const p = s.append(msg('x/1', 'm'));
      s.setIterator('c1', { next: p, done: [], pubrel: [3] });
      await durably(s);
      const r = await h.reopen();
      const sessions = new Map(r.sessions().map((x) => [x.clientId, x]));
      expect(sessions.size).toBe(2);
      const c1 = sessions.get('c1')!;
      expect(c1.subscriptions.map((x) => [x.filter, x.qos])).toEqual([['x/#', 1], ['y', 2]]);
      expect(c1.incomingQos2).toEqual([7]);
      expect(c1.will?.message.topic).toBe('w');
      expect(Buffer.from(c1.will!.message.payload).toString()).toBe('bye');
      expect(c1.will?.username).toBe('u');
      expect(sessions.get('c2')!.expiresAt).toBe(99);
      expect(r.iterator('c1')).toEqual({ next: p, done: [], pubrel: [3] });
      r.deleteSession('c1');
      await durably(r);
      const r2 = await h.reopen();
      expect(r2.sessions().map((x) => x.clientId)).toEqual(['c2']);
      expect(r2.iterator('c1')).toBeUndefined();
    });

    it('appends messages once and reads them back in order from any position', async () => {
      const h = setup();
      const s = h.store;
      const positions = [];
      for (let i = 0; i < 50; i++) positions.push(s.append(msg(`t/${i % 3}`, `m${i}`, { qos: (i % 3) as 0 | 1 | 2 })));
      await durably(s);
      const r = await h.reopen();
      const all = r.read(positions[0]!, 1000);
      expect(all.entries.map((e) => e.message.payload.toString())).toEqual(positions.map((_, i) => `m${i}`));
      expect(all.entries.map((e) => e.pos)).toEqual(positions);
      const part = r.read(positions[20]!, 5);
      expect(part.entries.map((e) => e.message.payload.toString())).toEqual(['m20', 'm21', 'm22', 'm23', 'm24']);
      expect(part.next).toEqual(positions[25]);
      // the tail: nothing more yet; a new append is read from there
      const end = r.read(all.next, 10);
      expect(end.entries).toEqual([]);
      const q = r.append(msg('t/new', 'late'));
      await durably(r);
      expect(r.read(all.next, 10).entries.map((e) => [e.pos, e.message.payload.toString()])).toEqual([[q, 'late']]);
    });

    it('marks direct copies (read back as such) and keeps direct deliveries in iterators', async () => {
      const h = setup();
      const s = h.store;
      const a = s.append(msg('t/a', 'routed'));
      const b = s.append(msg('t/b', 'copy', { retain: true }), true);
      s.setIterator('c1', { next: a, done: [], pubrel: [], direct: [{ pos: b, qos: 1, retain: true, ids: [4] }] });
      await durably(s);
      const r = await h.reopen();
      expect(r.read(a, 10).entries.map((e) => [e.message.payload.toString(), e.direct])).toEqual([
        ['routed', false],
        ['copy', true],
      ]);
      expect(r.iterator('c1')).toEqual({ next: a, done: [], pubrel: [], direct: [{ pos: b, qos: 1, retain: true, ids: [4] }] });
    });

    it('keeps the wills of connected clients until they are removed', async () => {
      const h = setup();
      const s = h.store;
      s.setLiveWill('dev-1', { message: msg('status/1', 'gone', { qos: 1, senderId: 'dev-1', properties: { contentType: 'text/plain' } }), delaySeconds: 5, expirySeconds: 60, username: 'u' });
      s.setLiveWill('dev-2', { message: msg('status/2', 'gone'), delaySeconds: 0 });
      s.setLiveWill('dev-2', undefined);
      await durably(s);
      const r = await h.reopen();
      const wills = r.liveWills();
      expect([...wills.keys()]).toEqual(['dev-1']);
      const w = wills.get('dev-1')!;
      expect([w.message.topic, w.message.payload.toString(), w.message.qos, w.message.senderId, w.message.properties?.contentType]).toEqual(['status/1', 'gone', 1, 'dev-1', 'text/plain']);
      expect([w.delaySeconds, w.expirySeconds, w.username]).toEqual([5, 60, 'u']);
      r.setLiveWill('dev-1', undefined);
      await durably(r);
      expect((await h.reopen()).liveWills().size).toBe(0);
    });

    it('keeps the state store log: snapshot plus writes since, compaction forgets older writes', async () => {
      const h = setup();
      const s = h.store;
      s.appendStateOp(Buffer.from('op1'));
      s.appendStateOp(Buffer.from('op2'));
      await durably(s);
      let r = await h.reopen();
      expect(r.stateLog().ops.map(String)).toEqual(['op1', 'op2']);
      expect(r.stateLog().snapshot).toBeUndefined();
      r.compactState(Buffer.from('snap'));
      r.appendStateOp(Buffer.from('op3'));
      await durably(r);
      r = await h.reopen();
      expect(String(r.stateLog().snapshot)).toBe('snap');
      expect(r.stateLog().ops.map(String)).toEqual(['op3']);
    });

    it('keeps named documents, and removes them', async () => {
      const h = setup();
      const s = h.store;
      s.setDocument('rules', Buffer.from('{"a":1}'));
      s.setDocument('other', Buffer.from('x'));
      s.setDocument('other', undefined);
      await durably(s);
      const r = await h.reopen();
      expect(String(r.document('rules'))).toBe('{"a":1}');
      expect(r.document('other')).toBeUndefined();
    });

    it('onDurable runs each callback once, in order', async () => {
      const h = setup();
      const s = h.store;
      const seen: number[] = [];
      for (let i = 0; i < 5; i++) {
        s.append(msg('o', String(i)));
        s.onDurable(() => seen.push(i));
      }
      await s.flushed();
      expect(seen).toEqual([0, 1, 2, 3, 4]);
    });
  });
}
