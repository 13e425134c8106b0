/**
 * The bucket watch every cluster mirror uses (src/cluster/watch.ts), against a real
 * nats-server with JetStream: a watch whose consumer is gone (as after a partition, when the
 * server that held it lost it) is noticed and started again from the revision after the last
 * one handled, so the mirror gets every later write; entries come once each, in revision
 * order; `after` starts past a revision already read.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
import type { KV, KvWatchEntry } from '@nats-io/kv';
import { startNats, type NatsCluster } from '../helpers/nats.js';
import { until } from '../helpers/broker.js';
import { BucketWatch } from '../../src/cluster/watch.js';

let nats: NatsCluster;
let nc: NatsConnection;
let kv: KV;
const STREAM = 'KV_watchtest';

beforeAll(async () => {
  nats = await startNats(1);
  const { connect } = await import('@nats-io/transport-node');
  nc = await connect({ servers: nats.urls });
  const { Kvm } = await import('@nats-io/kv');
  kv = await new Kvm(nc).create('watchtest', { history: 1 });
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

/** A mirror of the bucket as a watch builds it, with every revision it was handed. */
function mirror(): { values: Map<string, string | undefined>; revisions: number[]; handle: (e: KvWatchEntry) => void } {
  const values = new Map<string, string | undefined>();
  const revisions: number[] = [];
  return {
    values,
    revisions,
    handle: (e) => {
      revisions.push(e.revision);
      values.set(e.key, e.operation === 'PUT' ? e.string() : undefined);
    },
  };
}

async function deleteConsumers(): Promise<number> {
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const jsm = await jetstreamManager(nc);
  let n = 0;
  for (const ci of await jsm.consumers.list(STREAM).next()) {
    await jsm.consumers.delete(STREAM, ci.name);
    n++;
  }
  return n;
}

describe('cluster: bucket watch', () => {
  it('starts a watch again when its consumer is gone, and misses no write', async () => {
    await kv.put('a', '1');
    const m = mirror();
    const restarts: string[] = [];
    const errors: string[] = [];
    const w = new BucketWatch(nc, kv, { what: 'the test bucket', bucket: 'watchtest', checkMs: 300, onError: (what) => errors.push(what), onRestart: (reason) => restarts.push(reason) }, m.handle);
    await w.start();
    try {
      await until(() => m.values.get('a') === '1', 10_000, 'the first value');
      // the consumer disappears server-side; the library itself would only notice after two
      // missed 30 s heartbeats
      expect(await deleteConsumers()).toBeGreaterThan(0);
      await kv.put('a', '2');
      await kv.put('b', '1');
      await kv.delete('a');
      await until(() => m.values.has('a') && m.values.get('a') === undefined && m.values.get('b') === '1', 10_000, 'the writes made after the consumer was gone');
      expect(restarts.length).toBeGreaterThanOrEqual(1);
      expect(restarts[0]).toMatch(/consumer is gone|no entry came/);
      // once each, in order
      expect(m.revisions).toEqual([...m.revisions].sort((x, y) => x - y));
      expect(new Set(m.revisions).size).toBe(m.revisions.length);
      expect(w.revision).toBe(m.revisions.at(-1));
      // and it goes on delivering
      await kv.put('b', '2');
      await until(() => m.values.get('b') === '2', 10_000, 'a write after the restart');
    } finally {
      w.stop();
    }
  });

  it('does not start a healthy watch again', async () => {
    const m = mirror();
    const restarts: string[] = [];
    const w = new BucketWatch(nc, kv, { what: 'the test bucket', bucket: 'watchtest', checkMs: 200, onError: () => undefined, onRestart: (reason) => restarts.push(reason) }, m.handle);
    await w.start();
    try {
      for (let i = 0; i < 20; i++) {
        await kv.put(`c${i % 3}`, String(i));
        await new Promise((r) => setTimeout(r, 50));
      }
      await until(() => m.values.get('c1') === '19', 10_000, 'the last write');
      await new Promise((r) => setTimeout(r, 1000)); // several checks with nothing new
      expect(restarts).toEqual([]);
    } finally {
      w.stop();
    }
  });

  it('does not start a watch of some keys again while other keys change', async () => {
    await kv.put('w.1', 'will');
    const m = mirror();
    const restarts: string[] = [];
    const w = new BucketWatch(nc, kv, { what: 'the test bucket', bucket: 'watchtest', key: 'w.>', checkMs: 200, onError: () => undefined, onRestart: (reason) => restarts.push(reason) }, m.handle);
    await w.start();
    try {
      await until(() => m.values.get('w.1') === 'will', 10_000, 'the watched key');
      for (let i = 0; i < 30; i++) {
        await kv.put(`i.${i % 4}`, String(i));
        await new Promise((r) => setTimeout(r, 40));
      }
      await new Promise((r) => setTimeout(r, 1000));
      expect(restarts).toEqual([]);
      expect([...m.values.keys()]).toEqual(['w.1']);
    } finally {
      w.stop();
    }
  });

  it('with `after`, starts past a revision already read', async () => {
    const rev = await kv.put('d', 'read');
    const m = mirror();
    const restarts: string[] = [];
    const w = new BucketWatch(nc, kv, { what: 'the test bucket', bucket: 'watchtest', key: 'd', after: rev, checkMs: 300, onError: () => undefined, onRestart: (reason) => restarts.push(reason) }, m.handle);
    await w.start();
    try {
      await kv.put('d', 'later');
      await until(() => m.values.get('d') === 'later', 10_000, 'the later write');
      expect(m.revisions.every((r) => r > rev)).toBe(true);
      await new Promise((r) => setTimeout(r, 700));
      expect(restarts).toEqual([]);
    } finally {
      w.stop();
    }
  });
});
