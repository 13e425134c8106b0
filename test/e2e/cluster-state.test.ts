/**
 * The state store cluster-wide (issue 12): three nats-server processes with JetStream, three
 * broker nodes, the project's StateStoreClient (MQTT 5) on different nodes. One keyspace:
 * a SET on one node is read on another; versions only grow; NX and fencing tokens hold across
 * nodes (revision compare-and-set); concurrent SET NX on three nodes: exactly one wins;
 * KEYNOTIFY reaches a client on another node; PX expiry, and expired keys leave the bucket
 * (the lease holder sweeps them; one KEYNOTIFY per watcher); the bucket is R3.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { startNats, type NatsCluster } from '../helpers/nats.js';
import { StateStoreClient, type KeyNotification } from '../../src/state/client.js';
import { compareHlc, formatHlc } from '../../src/state/hlc.js';
import { decodeKeyState, encodeKeyState, tombstoneAge } from '../../src/cluster/state.js';

let nats: NatsCluster;
const nodes: TestBroker[] = [];
const open: MqttClient[] = [];
const stores: StateStoreClient[] = [];
let seq = 0;

beforeAll(async () => {
  nats = await startNats(3);
  for (let i = 0; i < 3; i++) nodes.push(await startBroker({ clusterNats: nats.servers[i]!.url, nodeName: `s${i + 1}`, clusterName: 'state', clusterReplicas: 3 }));
  await until(() => nodes.every((n) => n.server.cluster!.status().jetstream.state === 'ready' && n.server.cluster!.status().nodes.length === 3), 30_000, 'state buckets ready on every node');
});

afterAll(async () => {
  for (const s of stores) await s.close().catch(() => undefined);
  await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
  for (const n of nodes) await n.stop();
  await nats?.stop();
});

async function storeOn(i: number): Promise<StateStoreClient> {
  const client = await mqtt.connectAsync(nodes[i]!.url, { protocolVersion: 5, clientId: `state-${++seq}`, reconnectPeriod: 0 });
  open.push(client);
  const store = await StateStoreClient.create(client);
  stores.push(store);
  return store;
}

describe('cluster: state store', () => {
  it('reads on one node what was set on another, with one growing version', async () => {
    const [a, b, c] = [await storeOn(0), await storeOn(1), await storeOn(2)];
    const set = await a.set('site/mode', 'auto');
    expect(set.applied).toBe(true);
    // OK means replicated: the bucket has it; the other nodes' mirrors follow the watch
    await until(() => nodes[1]!.server.stateStore.read(Buffer.from('site/mode'))?.toString() === 'auto', 5000, 'mirror on s2');
    const got = await b.get('site/mode');
    expect(got.value?.toString()).toBe('auto');
    expect(formatHlc(got.version!).split(':').slice(0, 2)).toEqual(formatHlc(set.version!).split(':').slice(0, 2));
    const again = await c.set('site/mode', 'manual');
    expect(compareHlc(again.version!, set.version!)).toBeGreaterThan(0);
    await until(() => nodes[0]!.server.stateStore.read(Buffer.from('site/mode'))?.toString() === 'manual', 5000, 'mirror on s1');
    expect((await a.get('site/mode')).value?.toString()).toBe('manual');
  });

  it('lets exactly one of three concurrent SET NX on three nodes win', async () => {
    const clients = [await storeOn(0), await storeOn(1), await storeOn(2)];
    for (let round = 0; round < 5; round++) {
      const key = `lock/${round}`;
      const results = await Promise.all(clients.map((s, i) => s.set(key, `holder-${i}`, { condition: 'nx' })));
      expect(results.filter((r) => r.applied)).toHaveLength(1);
      const winner = results.findIndex((r) => r.applied);
      for (const s of clients) {
        await until(() => nodes.every((n) => n.server.stateStore.read(Buffer.from(key))?.toString() === `holder-${winner}`), 5000, 'winner everywhere');
        expect((await s.get(key)).value?.toString()).toBe(`holder-${winner}`);
      }
    }
  });

  it('puts concurrent SETs of one key on three nodes in one order: the key ends on the highest version answered OK', async () => {
    const clients = [await storeOn(0), await storeOn(1), await storeOn(2)];
    await clients[0]!.set('race/k', 'start');
    await until(() => nodes.every((n) => n.server.stateStore.read(Buffer.from('race/k'))?.toString() === 'start'), 5000, 'mirrored');
    for (let round = 0; round < 15; round++) {
      // nats-server 2.9 lets two writes on one revision in flight at once both pass its
      // expected-sequence check; the message id of the write must stop the second
      const results = await Promise.all(clients.map((s, i) => s.set('race/k', `r${round}-n${i}`)));
      const versions = results.map((r) => formatHlc(r.version!));
      expect(new Set(versions).size).toBe(3);
      const highest = results.reduce((best, r, i) => (compareHlc(r.version!, results[best]!.version!) > 0 ? i : best), 0);
      await until(() => nodes.every((n) => n.server.stateStore.read(Buffer.from('race/k'))?.toString() === `r${round}-n${highest}`), 5000, `round ${round}: every node on the highest version's value r${round}-n${highest}`);
    }
  });

  it('keeps fencing tokens across nodes: an older token is refused on another node', async () => {
    const [a, b] = [await storeOn(0), await storeOn(1)];
    const lock = await a.set('fence/lock', 'me', { condition: 'nx', expiresInMs: 60_000 });
    expect(lock.applied).toBe(true);
    const token = lock.version!;
    await a.set('fence/data', 'v1', { fencingToken: token });
    await until(() => nodes[1]!.server.stateStore.read(Buffer.from('fence/data'))?.toString() === 'v1', 5000, 'fenced key on s2');
    // a newer token (from a later SET) replaces it; the old one is then stale, on any node
    const newer = await b.set('fence/lock2', 'x');
    await b.set('fence/data', 'v2', { fencingToken: newer.version! });
    await until(() => nodes[0]!.server.stateStore.read(Buffer.from('fence/data'))?.toString() === 'v2', 5000, 'v2 on s1');
    await expect(a.set('fence/data', 'v3', { fencingToken: token })).rejects.toThrow(/lower version than the fencing token/);
    await expect(a.del('fence/data')).rejects.toThrow(/fencing token is required/);
  });

  it('sends KEYNOTIFY to a client on another node, for SET and DEL', async () => {
    const [watcher, writer] = [await storeOn(2), await storeOn(0)];
    const seen: KeyNotification[] = [];
    watcher.on('notification', (n) => seen.push(n));
    await watcher.observe('notify/k');
    await writer.set('notify/k', 'hello');
    await until(() => seen.length === 1, 5000, 'SET notification');
    expect(seen[0]!.operation).toBe('SET');
    expect(seen[0]!.value?.toString()).toBe('hello');
    expect((await writer.del('notify/k')).deleted).toBe(1);
    await until(() => seen.length === 2, 5000, 'DELETE notification');
    expect(seen[1]!.operation).toBe('DELETE');
  });

  it('expires a PX key on every node', async () => {
    const [a, b] = [await storeOn(0), await storeOn(1)];
    await a.set('ttl/k', 'brief', { expiresInMs: 300 });
    await until(() => nodes[1]!.server.stateStore.read(Buffer.from('ttl/k'))?.toString() === 'brief', 5000, 'mirrored');
    await until(() => nodes.every((n) => n.server.stateStore.read(Buffer.from('ttl/k')) === undefined), 5000, 'expired everywhere');
    expect((await b.get('ttl/k')).value).toBeUndefined();
    // and can be set again (NX) after expiry, from another node
    expect((await b.set('ttl/k', 'again', { condition: 'nx' })).applied).toBe(true);
  });

  it('removes an expired key from the bucket (one node sweeps: the lease holder), with one KEYNOTIFY per watcher', async () => {
    const { connect } = await import('@nats-io/transport-node');
    const { Kvm } = await import('@nats-io/kv');
    const nc = await connect({ servers: nats.servers[0]!.url });
    try {
      const kv = await new Kvm(nc).open('edb_state_state');
      const bucketKey = Buffer.from('sweep/k').toString('base64url');
      const [writer, w1, w2] = [await storeOn(0), await storeOn(1), await storeOn(2)];
      const seen: [KeyNotification[], KeyNotification[]] = [[], []];
      w1.on('notification', (n) => seen[0].push(n));
      w2.on('notification', (n) => seen[1].push(n));
      await w1.observe('sweep/k');
      await w2.observe('sweep/k');
      const sweptBefore = nodes.map((n) => n.server.cluster!.status().stats.expiredSwept);
      await writer.set('sweep/k', 'brief', { expiresInMs: 400 });
      expect((await kv.get(bucketKey))?.operation).toBe('PUT');
      await until(() => seen.every((s) => s.length === 1), 5000, 'SET notifications');
      // gone from the bucket: a delete marker, written by one node
      const deadline = Date.now() + 10_000;
      while ((await kv.get(bucketKey))?.operation === 'PUT') {
        if (Date.now() > deadline) throw new Error('the expired key is still in the bucket');
        await new Promise((r) => setTimeout(r, 100));
      }
      expect((await kv.get(bucketKey))?.operation).toBe('DEL');
      expect(await (async () => { const keys: string[] = []; for await (const k of await kv.keys(bucketKey)) keys.push(k); return keys; })()).toEqual([]);
      await until(() => seen.every((s) => s.length === 2), 5000, 'DELETE notifications');
      await new Promise((r) => setTimeout(r, 500));
      for (const s of seen) expect(s.map((n) => n.operation)).toEqual(['SET', 'DELETE']);
      const swept = nodes.map((n, i) => n.server.cluster!.status().stats.expiredSwept - sweptBefore[i]!);
      expect(swept.reduce((a, b) => a + b, 0)).toBe(1);
      // the holder as it sees itself (another node's view can lag a renewal or be empty for a moment)
      const views = nodes.map((n) => [n.server.cluster!.node.name, n.server.cluster!.status().jetstream.ruleBufferHolder]);
      const holder = views.findIndex(([name, held]) => name === held);
      expect(holder, `holder as each node sees it: ${JSON.stringify(views)}, swept ${JSON.stringify(swept)}`).toBeGreaterThanOrEqual(0);
      expect(swept[holder]).toBe(1);
      // written again after the sweep (on the marker's revision), from another node
      expect((await w1.set('sweep/k', 'again', { condition: 'nx' })).applied).toBe(true);
      expect((await kv.get(bucketKey))?.string()).toBeDefined();
      await until(() => nodes.every((n) => n.server.stateStore.read(Buffer.from('sweep/k'))?.toString() === 'again'), 5000, 'mirrored again');
    } finally {
      await nc.close();
    }
  });

  it('ignores a write the bucket stored after its deadline, on every node, and writes the previous value back over it', async () => {
    const { connect } = await import('@nats-io/transport-node');
    const { Kvm } = await import('@nats-io/kv');
    const nc = await connect({ servers: nats.servers[1]!.url });
    try {
      const kv = await new Kvm(nc).open('edb_state_state');
      const [a, watcher] = [await storeOn(0), await storeOn(2)];
      const seen: KeyNotification[] = [];
      watcher.on('notification', (n) => seen.push(n));
      const good = await a.set('late/k', 'good');
      await until(() => nodes.every((n) => n.server.stateStore.read(Buffer.from('late/k'))?.toString() === 'good'), 5000, 'mirrored');
      await watcher.observe('late/k');
      await watcher.observe('late/new');
      const stats = () => nodes.map((n) => n.server.cluster!.status().stats);
      const before = stats();
      // what a write refused with "try again" looks like when the request reaches the bucket
      // late (held in a cut route until a partition heals): stored after its deadline
      const k = Buffer.from('late/k').toString('base64url');
      const rev = (await kv.get(k))!.revision;
      const late = (value: string, prevRev: number): Buffer =>
        encodeKeyState({ deleted: false, wall: Date.now() + 1000, counter: 0, node: 's2', expiresAt: 0, ft: undefined, value: Buffer.from(value), deadline: Date.now() - 1000, prevRev });
      const lateRev = await kv.put(k, late('late', rev), { previousSeq: rev });
      const n = Buffer.from('late/new').toString('base64url');
      const newRev = await kv.put(n, late('late', 0), { previousSeq: 0 });
      // the previous state goes back over it (one node wins the compare-and-set), a new key is deleted again
      const undoneBy = Date.now() + 10_000;
      while (((await kv.get(k))?.revision ?? 0) <= lateRev || (await kv.get(n))?.operation !== 'DEL') {
        if (Date.now() > undoneBy) throw new Error('the late writes are still in the bucket');
        await new Promise((r) => setTimeout(r, 50));
      }
      const back = (await kv.get(k))!;
      expect(decodeKeyState(back.value).value.toString()).toBe('good');
      expect((await kv.get(n))!.revision).toBeGreaterThan(newRev);
      await until(() => stats().every((st, i) => st.voidedWrites - before[i]!.voidedWrites === 2), 10_000, 'every node saw both void entries').catch((e) => { console.log(JSON.stringify(stats().map((st, i) => [st.voidedWrites - before[i]!.voidedWrites, st.compensations - before[i]!.compensations]))); throw e; });
      const compensations = stats().reduce((t, st, i) => t + st.compensations - before[i]!.compensations, 0);
      console.log(JSON.stringify(stats().map((st, i) => [st.voidedWrites - before[i]!.voidedWrites, st.compensations - before[i]!.compensations])));
      expect(compensations).toBe(2);
      for (const [i, node] of nodes.entries()) {
        expect(node.server.stateStore.read(Buffer.from('late/k'))?.toString(), `s${i + 1}`).toBe('good');
        expect(node.server.stateStore.read(Buffer.from('late/new')), `s${i + 1}`).toBeUndefined();
      }
      const got = await watcher.get('late/k');
      expect(got.value?.toString()).toBe('good');
      expect(formatHlc(got.version!).split(':').slice(0, 2)).toEqual(formatHlc(good.version!).split(':').slice(0, 2));
      // the void value was never shown to a watcher
      await new Promise((r) => setTimeout(r, 300));
      expect(seen.map((x) => x.value?.toString())).toEqual([]);
      // and the key is written again normally (compare-and-set on the compensation's revision)
      expect((await a.set('late/k', 'next')).applied).toBe(true);
      expect((await watcher.set('late/new', 'fresh', { condition: 'nx' })).applied).toBe(true);
    } finally {
      await nc.close();
    }
  });

  it('purges the record of a deleted key from the bucket once it is old, and the key can be written again on any node', async () => {
    const { connect } = await import('@nats-io/transport-node');
    const { Kvm } = await import('@nats-io/kv');
    const nc = await connect({ servers: nats.servers[0]!.url });
    const age = tombstoneAge.ms;
    try {
      const kv = await new Kvm(nc).open('edb_state_state');
      const [a, b, c] = [await storeOn(0), await storeOn(1), await storeOn(2)];
      await a.set('tomb/k', 'v');
      await a.set('tomb/live', 'v');
      expect((await b.del('tomb/k')).deleted).toBe(1);
      await b.del('tomb/live');
      await until(() => nodes.every((n) => n.server.stateStore.read(Buffer.from('tomb/k')) === undefined), 5000, 'deleted everywhere');
      // written again after its delete: that value is not purged
      await c.set('tomb/live', 'again');
      const purgedBefore = nodes.reduce((t, n) => t + n.server.cluster!.status().stats.tombstonesPurged, 0);
      tombstoneAge.ms = 200;
      const k = Buffer.from('tomb/k').toString('base64url');
      const by = Date.now() + 10_000;
      while ((await kv.get(k)) !== null) {
        if (Date.now() > by) throw new Error('the deleted key is still in the bucket');
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(nodes.reduce((t, n) => t + n.server.cluster!.status().stats.tombstonesPurged, 0)).toBeGreaterThan(purgedBefore);
      expect(decodeKeyState((await kv.get(Buffer.from('tomb/live').toString('base64url')))!.value).value.toString()).toBe('again');
      // every node, also those that still hold the old delete, writes the key again
      for (const [i, s] of [a, b, c].entries()) {
        expect((await s.set('tomb/k', `n${i}`)).applied).toBe(true);
        await until(() => nodes.every((n) => n.server.stateStore.read(Buffer.from('tomb/k'))?.toString() === `n${i}`), 5000, `n${i} everywhere`);
        await s.del('tomb/k');
        await until(() => nodes.every((n) => n.server.stateStore.read(Buffer.from('tomb/k')) === undefined), 5000, 'deleted again');
        await new Promise((r) => setTimeout(r, 1500));
      }
      expect((await c.set('tomb/k', 'nx', { condition: 'nx' })).applied).toBe(true);
    } finally {
      tombstoneAge.ms = age;
      await nc.close();
    }
  });

  it('keeps the state bucket at three replicas', async () => {
    const { connect } = await import('@nats-io/transport-node');
    const { Kvm } = await import('@nats-io/kv');
    const nc = await connect({ servers: nats.servers[0]!.url });
    try {
      const st = await (await new Kvm(nc).open('edb_state_state')).status();
      expect(st.replicas).toBe(3);
      expect(st.values).toBeGreaterThan(0);
    } finally {
      await nc.close();
    }
  });
});
