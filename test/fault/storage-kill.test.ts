/**
 * Durable storage (the default) under SIGKILL: a real `edb start` process under QoS 1 load from
 * several publishers (v5 and 3.1.1), with persistent subscribers (one online, one offline, a
 * slow shared-subscription member), retained writes, state-store SETs, a client whose will
 * stands when the broker dies, and a new persistent subscription getting many retained
 * messages slowly, killed at a random moment, many cycles in a row. The verifier numbers every
 * acknowledged message, retained topic and key, and after each restart finds all of them.
 */
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { StateStoreClient } from '../../src/state/client.js';
import { formatHlc } from '../../src/state/hlc.js';
import { ERRORS } from '../../src/state/protocol.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every retained message under `filter`, collected until `expected` arrived or 10 s passed. */
async function retainedUnder(port: number, filter: string, expected: number): Promise<Map<string, string>> {
  const c = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `verify-${Math.random()}`, reconnectPeriod: 0 });
  const got = new Map<string, string>();
  c.on('message', (topic, payload, packet) => {
    if (packet.retain) got.set(topic, payload.toString());
  });
  await c.subscribeAsync(filter, { qos: 1 });
  const deadline = Date.now() + 10_000;
  while (got.size < expected && Date.now() < deadline) await sleep(50);
  await sleep(200); // anything unexpected has a moment to arrive too
  await c.endAsync();
  return got;
}

interface Persistent {
  id: string;
  /** Payloads (q/...) or topics (ret/...) it received, over all its lives. */
  got: Set<string>;
}

/** A persistent v5 session (expiry one hour); `slowMs` delays each PUBACK, so its queue fills. */
async function connectPersistent(port: number, p: Persistent, opts: { slowMs?: number; receiveMaximum?: number } = {}): Promise<MqttClient> {
  const c = mqtt.connect({
    port,
    protocolVersion: 5,
    clientId: p.id,
    clean: false,
    properties: { sessionExpiryInterval: 3600, ...(opts.receiveMaximum ? { receiveMaximum: opts.receiveMaximum } : {}) },
    reconnectPeriod: 0,
  });
  // in place before CONNACK: queued messages follow it in the same read
  c.on('message', (topic, payload, packet) => {
    p.got.add(topic.startsWith('ret/') && packet.retain ? topic : payload.toString());
  });
  if (opts.slowMs) {
    const slow = opts.slowMs;
    c.handleMessage = (packet, done) => {
      setTimeout(() => done(), slow);
      void packet;
    };
  }
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return c;
}

let current: BrokerProcess | undefined;
afterEach(() => {
  current?.child.kill('SIGKILL'); // a failed check leaves no broker behind
  current = undefined;
});

describe('SIGKILL with durable storage (the default)', () => {
  it('after each kill at a random moment, every acknowledged message, retained message, key, will and queued retained message is back', { timeout: 170_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-kill-'));
    // EDB_STORAGE unset: the default is what users get
    // a small window: persistent subscribers' backlogs past it are read from the log across the kills
    const env = { EDB_DATA_DIR: dataDir, EDB_BACKUP: 'false', EDB_MAX_QUEUED_MESSAGES: '100000', EDB_STORAGE_SESSION_WINDOW: '50' };
    const ackedRetained = new Map<string, string>();
    const ackedKeys = new Map<string, { value: string; version: string }>();
    /** Keys guarded by a fencing token (the version of a lock key), acknowledged before a kill. */
    const fenced: { key: string; lock: string; token: string }[] = [];
    /** Payloads of QoS 1 messages to q/... whose PUBACK the publishers got. */
    const ackedMessages = new Set<string>();
    const onlineSub: Persistent = { id: 'online-sub', got: new Set() };
    const offlineSub: Persistent = { id: 'offline-sub', got: new Set() };
    const shareA: Persistent = { id: 'share-a', got: new Set() };
    /** Wills the broker should publish after the kill ending cycle n. */
    const wills: string[] = [];
    /** The new subscription of the last cycle and the retained topics acknowledged before it. */
    let retainedSub: { p: Persistent; expected: string[] } | undefined;
    const cycles = 6;
    let total = { messages: 0, retained: 0, keys: 0, queuedRetained: 0, wills: 0 };
    for (let cycle = 0; cycle <= cycles; cycle++) {
      const p: BrokerProcess = (current = await startBrokerProcess(env));
      const port = p.ports['mqtt']!;
      // ---- the persistent subscribers come back (the first time: they subscribe)
      const online = await connectPersistent(port, onlineSub);
      const offline = await connectPersistent(port, offlineSub);
      const share = await connectPersistent(port, shareA);
      if (cycle === 0) {
        await online.subscribeAsync(['q/#', 'will/#'], { qos: 1 });
        await offline.subscribeAsync('q/#', { qos: 1 });
        await share.subscribeAsync('$share/g/q/#', { qos: 1 });
      }
      // ---- verify everything acknowledged before the last kill
      const missing = (s: Persistent, want: Iterable<string>) => [...want].filter((m) => !s.got.has(m));
      const deadline = Date.now() + 30_000;
      const oldSub = retainedSub ? await connectPersistent(port, retainedSub.p) : undefined;
      const pending = () =>
        missing(onlineSub, ackedMessages).length + missing(offlineSub, ackedMessages).length + missing(shareA, ackedMessages).length + missing(onlineSub, wills).length + (retainedSub ? missing(retainedSub.p, retainedSub.expected).length : 0);
      while (Date.now() < deadline && pending() > 0) await sleep(100);
      expect(missing(onlineSub, ackedMessages), `cycle ${cycle}: acknowledged messages the online subscriber never got`).toEqual([]);
      expect(missing(offlineSub, ackedMessages), `cycle ${cycle}: acknowledged messages the offline subscriber never got`).toEqual([]);
      expect(missing(shareA, ackedMessages), `cycle ${cycle}: acknowledged messages the shared subscription ($share/g/q/#) never got`).toEqual([]);
      expect(missing(onlineSub, wills), `cycle ${cycle}: wills of clients connected at the kill, never published`).toEqual([]);
      if (retainedSub) {
        expect(missing(retainedSub.p, retainedSub.expected), `cycle ${cycle}: retained messages queued for ${retainedSub.p.id}'s new subscription, lost`).toEqual([]);
        total.queuedRetained += retainedSub.expected.length;
        // done with it: the session ends with this connection
        oldSub!.end(true);
        const ender = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: retainedSub.p.id, clean: true, reconnectPeriod: 0 });
        await ender.endAsync();
        retainedSub = undefined;
      }
      total = { ...total, messages: ackedMessages.size, wills: wills.length };
      await offline.endAsync(); // offline through the load: its messages wait in its session
      if (ackedRetained.size > 0) {
        const got = await retainedUnder(port, 'ret/#', ackedRetained.size);
        const lost = [...ackedRetained].filter(([t, v]) => got.get(t) !== v);
        expect(lost, `cycle ${cycle}: acknowledged retained messages missing`).toEqual([]);
        const v = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `verify-state-${cycle}`, reconnectPeriod: 0 });
        const s = await StateStoreClient.create(v);
        const lostKeys: string[] = [];
        for (const [key, want] of ackedKeys) {
          const r = await s.get(key);
          if (r.value?.toString() !== want.value || formatHlc(r.version!) !== want.version) lostKeys.push(key);
        }
        // fencing tokens survive: a write without one is refused, the lock is still held, the token still works
        const lostFences: string[] = [];
        for (const f of fenced) {
          const without = await s.set(f.key, 'intruder').then(
            () => 'accepted',
            (err: Error) => (err.message.includes(ERRORS.fencingRequired) ? 'refused' : err.message),
          );
          const relock = await s.set(f.lock, 'someone-else', { condition: 'nex' });
          const withToken = await s.set(f.key, `guarded-again-${cycle}`, { fencingToken: f.token }).then(
            (r) => (r.applied === false ? 'not applied' : 'ok'),
            (err: Error) => err.message,
          );
          if (without !== 'refused' || relock.applied !== false || withToken !== 'ok') lostFences.push(`${f.key}: without token ${without}, lock taken again ${relock.applied}, with token ${withToken}`);
        }
        await s.close();
        await v.endAsync();
        expect(lostKeys, `cycle ${cycle}: acknowledged state-store keys missing`).toEqual([]);
        expect(lostFences, `cycle ${cycle}: fencing tokens lost`).toEqual([]);
        total = { ...total, retained: ackedRetained.size, keys: ackedKeys.size };
      }
      if (cycle === cycles) {
        await online.endAsync();
        await share.endAsync();
        expect(await p.stop('SIGTERM')).toBe(0);
        break;
      }
      // ---- slow from now on: the shared member's queue fills during the load
      share.end(true);
      const slowShare = await connectPersistent(port, shareA, { slowMs: 3, receiveMaximum: 4 });
      // ---- a client whose will stands (connected when the broker dies)
      const will = `w${cycle}`;
      const willer = await mqtt.connectAsync({ port, protocolVersion: cycle % 2 === 0 ? 5 : 4, clientId: `willer-${cycle}`, reconnectPeriod: 0, will: { topic: `will/${cycle}`, payload: Buffer.from(will), qos: 1, retain: false } });
      // ---- load: QoS 1 from three publishers, retained QoS 1 publishes, state-store SETs
      const pub = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `pub-${cycle}`, reconnectPeriod: 0 });
      const pubs = await Promise.all([5, 4, 5].map((v, n) => mqtt.connectAsync({ port, protocolVersion: v as 4 | 5, clientId: `qpub-${cycle}-${n}`, reconnectPeriod: 0 })));
      const app = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `app-${cycle}`, reconnectPeriod: 0 });
      const state = await StateStoreClient.create(app);
      {
        // a lock and a key guarded by its version (a fencing token), acknowledged before the load
        const lock = `lock/c${cycle}`;
        const token = formatHlc((await state.set(lock, `app-${cycle}`, { condition: 'nex', expiresInMs: 3_600_000 })).version!);
        await state.set(`fenced/c${cycle}`, 'guarded', { fencingToken: token });
        fenced.push({ key: `fenced/c${cycle}`, lock, token });
      }
      let running = true;
      const publishing = (async () => {
        for (let i = 0; running; i++) {
          const topic = `ret/c${cycle}/${i}`;
          const value = `v${cycle}-${i}`;
          try {
            await pub.publishAsync(topic, value, { qos: 1, retain: true });
            ackedRetained.set(topic, value);
          } catch {
            return; // the broker is gone
          }
        }
      })();
      const queueing = pubs.map(async (c, n) => {
        for (let i = 0; running; i++) {
          const payload = `m${cycle}-${n}-${i}`;
          try {
            await c.publishAsync(`q/${n}/${i % 7}`, payload, { qos: 1 });
            ackedMessages.add(payload);
          } catch {
            return;
          }
        }
      });
      const setting = (async () => {
        for (let i = 0; running; i++) {
          const key = `k/c${cycle}/${i}`;
          try {
            const r = await state.set(key, `s${cycle}-${i}`);
            ackedKeys.set(key, { value: `s${cycle}-${i}`, version: formatHlc(r.version!) });
          } catch {
            return;
          }
        }
      })();
      // ---- a new persistent subscription to every retained topic, read slowly
      await sleep(100 + Math.floor(Math.random() * 300));
      const rsub: Persistent = { id: `rsub-${cycle}`, got: new Set() };
      const rc = await connectPersistent(port, rsub, { slowMs: 5, receiveMaximum: 2 });
      const before = [...ackedRetained.keys()];
      let subacked = false;
      const subscribing = rc.subscribeAsync('ret/#', { qos: 1 }).then(
        () => (subacked = true),
        () => undefined,
      );
      await sleep(100 + Math.floor(Math.random() * 1000));
      p.child.kill('SIGKILL');
      await once(p.child, 'exit');
      running = false;
      wills.push(will);
      if (subacked) retainedSub = { p: rsub, expected: before };
      for (const c of [pub, app, online, slowShare, willer, rc, ...pubs]) c.end(true);
      await Promise.race([Promise.all([publishing, setting, subscribing, ...queueing]), sleep(5000)]);
      expect(ackedMessages.size).toBeGreaterThan(0);
      expect(ackedRetained.size).toBeGreaterThan(0);
      expect(ackedKeys.size).toBeGreaterThan(0);
    }
    // what the verifier checked, for the log of the run
    console.log(`storage-kill: ${cycles} kills; verified ${total.messages} acknowledged QoS 1 messages (x3 persistent subscribers), ${total.retained} retained topics, ${total.keys} state-store keys, ${fenced.length} fencing tokens, ${total.wills} wills, ${total.queuedRetained} retained messages queued for new subscriptions`);
    expect(total.queuedRetained, 'no kill came after a SUBACK of the new subscription: the retained queue was never checked').toBeGreaterThan(0);
  });
});
