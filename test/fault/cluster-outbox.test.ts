/**
 * What the broker accepted on its own is not lost when NATS is unreachable or a node dies
 * (issue 12, sections 2 and 3), with real processes: three nats-server processes with
 * JetStream, two `edb start` nodes; node a uses only nats1, node b only nats2 and nats3, so
 * stopping nats1 cuts node a off from NATS while the cluster goes on.
 *  - wills fired on node a while it cannot reach NATS wait in its outbox and reach the
 *    subscribers on node b once nats1 is back: the persistent session's copy through the
 *    session stream, the plain subscriber's over core NATS, each exactly once; a retained
 *    will and a retained client publish reach the cluster's retained set;
 *  - kill -9 of node a with clients connected: node b publishes their wills (held in the
 *    sessions bucket), once; a will with a Will Delay whose session resumed on node b within
 *    the delay is not published.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { startNats, type NatsCluster } from '../helpers/nats.js';
import { until, delay } from '../helpers/broker.js';

let nats: NatsCluster;
let a: BrokerProcess;
let b: BrokerProcess;
const open: MqttClient[] = [];

interface Status {
  connected: boolean;
  nodes: { name: string; interest: number }[];
  jetstream: { sessions?: string; sessionRecords?: number; retained: string };
}

async function status(n: BrokerProcess): Promise<Status> {
  return (await (await fetch(`http://127.0.0.1:${n.ports['http']}/api/cluster`)).json()) as Status;
}

async function waitCluster(n: BrokerProcess, ok: (s: Status) => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (ok(await status(n))) return;
    } catch {
      /* not answering yet */
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(100);
  }
}

async function metric(n: BrokerProcess, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${n.ports['http']}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** Keys of the live wills node `name` holds in the sessions bucket (w.<node>.<client id>), read from NATS directly. */
async function willKeys(name: string): Promise<string[]> {
  const { connect } = await import('@nats-io/transport-node');
  const { Kvm } = await import('@nats-io/kv');
  const nc = await connect({ servers: nats.servers.map((s) => s.url) });
  try {
    const kv = await new Kvm(nc).open('edb_outbox_sessions');
    const keys: string[] = [];
    for await (const k of await kv.keys(`w.${name}.>`)) keys.push(k);
    return keys;
  } finally {
    await nc.close();
  }
}

function node(name: string, servers: number[]): Promise<BrokerProcess> {
  const urls = servers.map((i) => nats.servers[i]!.url).join(',');
  return startBrokerProcess({ EDB_CLUSTER_NATS: urls, EDB_NODE_NAME: name, EDB_CLUSTER_NAME: 'outbox', EDB_HTTP_PORT: '0', EDB_MQTTS_PORT: '-1' }, ['mqtt', 'http']);
}

async function client(n: BrokerProcess, id: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${n.ports['mqtt']}`, { protocolVersion: 5, clientId: id, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  open.push(c);
  return c;
}

/** Messages by topic, as received. */
function collect(c: MqttClient): Map<string, string[]> {
  const got = new Map<string, string[]>();
  c.on('message', (topic, payload) => {
    const list = got.get(topic) ?? [];
    list.push(payload.toString());
    got.set(topic, list);
  });
  return got;
}

/** The connection ends without DISCONNECT: the broker publishes the will. */
function drop(c: MqttClient): void {
  (c as unknown as { stream: { destroy(): void } }).stream.destroy();
}

beforeAll(async () => {
  nats = await startNats(3, { noAdvertise: true }); // node a stays cut off while nats1 is down
  a = await node('a', [0]);
  b = await node('b', [1, 2]);
  for (const n of [a, b]) await waitCluster(n, (s) => s.nodes.length === 2 && s.jetstream.sessions === 'ready' && s.jetstream.retained === 'ready', 'both nodes ready');
}, 120_000);

afterAll(async () => {
  for (const c of open) c.end(true);
  for (const n of [a, b]) if (n && n.child.exitCode === null && n.child.signalCode === null) await n.stop('SIGKILL').catch(() => undefined);
  await nats?.stop();
});

const persistent: IClientOptions = { clean: false, properties: { sessionExpiryInterval: 600 } };

describe('cluster: what the broker accepted on its own survives NATS outages and node deaths', () => {
  it('wills fired while the node cannot reach NATS go out from its outbox when NATS is back, once', async () => {
    // on b: a persistent session (the will is stored for it in the session stream) and a plain subscriber
    const keeper = await client(b, 'ob-keeper', persistent);
    const kept = collect(keeper);
    await keeper.subscribeAsync('ob/stored/#', { qos: 1 });
    const plain = await client(b, 'ob-plain');
    const heard = collect(plain);
    await plain.subscribeAsync('ob/plain/#', { qos: 1 });
    await waitCluster(a, (s) => (s.nodes.find((n) => n.name === 'b')?.interest ?? 0) >= 2 && (s.jetstream.sessionRecords ?? 0) >= 1, "b's interest and session known on a");

    const w1 = await client(a, 'ob-w1', { will: { topic: 'ob/stored/w1', payload: Buffer.from('gone-1'), qos: 1, retain: false } });
    const w2 = await client(a, 'ob-w2', { will: { topic: 'ob/plain/w2', payload: Buffer.from('gone-2'), qos: 1, retain: true } });
    const pub = await client(a, 'ob-pub');

    await nats.kill(0);
    await waitCluster(a, (s) => !s.connected, 'a notices NATS is gone');
    drop(w1);
    drop(w2);
    await pub.publishAsync('ob/plain/r', 'retained-during-outage', { qos: 0, retain: true });
    const deadline = Date.now() + 20_000;
    while ((await metric(a, 'edb_cluster_outbox_messages')) < 2) {
      if (Date.now() > deadline) throw new Error(`the two wills never reached the outbox: ${JSON.stringify(a.logs.slice(-15).map((l) => l['msg']))}`);
      await delay(100);
    }
    // nothing reached b meanwhile
    await delay(500);
    expect(kept.get('ob/stored/w1')).toBeUndefined();
    expect(heard.get('ob/plain/w2')).toBeUndefined();

    await nats.restart(0);
    await until(() => kept.has('ob/stored/w1') && heard.has('ob/plain/w2'), 30_000, 'the wills on b after NATS is back');
    await delay(1500); // a second copy would come by now
    expect(kept.get('ob/stored/w1')).toEqual(['gone-1']);
    expect(heard.get('ob/plain/w2')).toEqual(['gone-2']);
    expect(await metric(a, 'edb_cluster_outbox_messages')).toBe(0);
    expect(await metric(a, 'edb_cluster_outbox_sent_total')).toBeGreaterThanOrEqual(2);
    expect(await metric(a, 'edb_cluster_outbox_dropped_total')).toBe(0);
    expect(a.logs.some((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes('wait in the outbox'))).toBe(true);

    // the retained will and the retained publish of the outage are in the cluster's set (written
    // once the bucket answers a's writes again: a few seconds while the restarted server catches up)
    await waitCluster(b, (s) => (s.jetstream as { retainedKeys?: number }).retainedKeys === 2, 'the two retained messages in the bucket, seen on b', 45_000);
    const late = await client(b, 'ob-late');
    const retained = collect(late);
    await late.subscribeAsync('ob/plain/#', { qos: 1 });
    await until(() => retained.has('ob/plain/w2') && retained.has('ob/plain/r'), 20_000, 'the retained messages on b').catch(async (err: Error) => {
      throw new Error(`${err.message}: got ${JSON.stringify([...retained])}; a ${JSON.stringify((await status(a)).jetstream)} b ${JSON.stringify((await status(b)).jetstream)} a: ${JSON.stringify(a.logs.slice(-12).map((l) => [l['msg'], l['err']]))} b: ${JSON.stringify(b.logs.slice(-12).map((l) => [l['msg'], l['err']]))}`);
    });
    expect(retained.get('ob/plain/w2')).toEqual(['gone-2']);
    expect(retained.get('ob/plain/r')).toEqual(['retained-during-outage']);
  }, 90_000);

  it('publishes the wills of clients of a node killed with kill -9 from another node, once; a resumed session within the Will Delay cancels its will', async () => {
    await waitCluster(a, (s) => s.connected && s.nodes.length === 2, 'a back in the cluster');
    const watcher = await client(b, 'kw-watcher');
    const got = collect(watcher);
    await watcher.subscribeAsync('kw/#', { qos: 1 });
    await waitCluster(a, (s) => (s.nodes.find((n) => n.name === 'b')?.interest ?? 0) >= 3, "b's interest in kw/# known on a");
    await client(a, 'kw-plain', { will: { topic: 'kw/plain', payload: Buffer.from('plain-gone'), qos: 1, retain: false } });
    const delayed = { clean: false, properties: { sessionExpiryInterval: 600 }, will: { topic: 'kw/delayed', payload: Buffer.from('delayed-gone'), qos: 1 as const, retain: false, properties: { willDelayInterval: 30 } } };
    await client(a, 'kw-delayed', delayed);
    // the wills' records reach the sessions bucket (milliseconds; on a loaded machine longer): a
    // will whose record never got there is lost with its node, as docs/cluster.md says
    const both = async (): Promise<boolean> => {
      const keys = await willKeys('a');
      const key = (id: string): string => `w.a.${Buffer.from(id).toString('base64url')}`; // src/cluster/sessions.ts willKey
      return keys.includes(key('kw-plain')) && keys.includes(key('kw-delayed'));
    };
    for (const deadline = Date.now() + 20_000; !(await both()); await delay(100)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for the wills of a's clients in the sessions bucket: ${JSON.stringify(await willKeys('a'))}`);
    }

    await a.stop('SIGKILL');
    // the delayed one comes back on b at once (as MQTT.js would reconnect), with its session
    const back = await client(b, 'kw-delayed', delayed);
    expect(back.connected).toBe(true);
    await until(() => got.has('kw/plain'), 30_000, 'the will of the client of the killed node').catch((err: Error) => {
      throw new Error(`${err.message}: b: ${JSON.stringify(b.logs.slice(-15).map((l) => [l['msg'], l['err']]))}`);
    });
    await delay(4000); // the delayed will would have been judged with it; a second copy would be here
    expect(got.get('kw/plain')).toEqual(['plain-gone']);
    // the wills of the first test fired (from the outbox) while NATS was away: their records are
    // gone from the bucket, so the kill -9 publishes them no second time
    expect(b.logs.filter((l) => typeof l['msg'] === 'string' && /without closing ob-w[12]/.test(l['msg'] as string))).toEqual([]);
    expect(got.has('kw/delayed')).toBe(false);
    expect(await metric(b, 'edb_cluster_orphan_wills_published_total')).toBe(1);
    expect(b.logs.some((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes('kw-delayed') && (l['msg'] as string).includes('cancelled'))).toBe(true);
  }, 90_000);
});
