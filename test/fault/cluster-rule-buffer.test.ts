/**
 * One rule buffer for the cluster (issue 12, section 2 "Rules"), with real processes: three
 * nats-server processes with JetStream and three `edb start` processes with the same rules
 * file. One node holds the lease (JetStream bucket edb_<cluster>_lease); the others send it
 * the messages that rule statements match. Checked:
 *  - a rule over two topics published on two different nodes fires, once cluster-wide;
 *  - the holder checkpoints its buffer into the bucket edb_<cluster>_rulebuf (read here
 *    with a NATS client of the test);
 *  - kill -9 of the holder: another node takes the lease over, starts from that checkpoint,
 *    and fires the rule on a message the dead holder had received before it died;
 *  - a holder stopped gracefully (SIGTERM) right after a message: the last node takes over at
 *    once and fires on that message too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { startNats, type NatsCluster } from '../helpers/nats.js';
import { delay, until } from '../helpers/broker.js';

const RULES = {
  filters: [],
  rules: [
    {
      statements: [
        { id: 1, topic: 'site/a', payload_type: 'float', condition: '$v > 10' },
        { id: 2, topic: 'site/b', payload_type: 'float', condition: '$v > 10' },
      ],
      logic: [{ operations: '$1 and $2', new_topic: 'alarm', new_payload: 'both' }],
    },
  ],
};

let nats: NatsCluster;
const nodes: BrokerProcess[] = [];
const open: MqttClient[] = [];
const names = ['b1', 'b2', 'b3'];

interface Status {
  connected: boolean;
  nodes: { name: string; interest: number }[];
  jetstream: { lease: string; ruleBufferHolder?: string; ruleBufferFence: number; rulesEtag?: string };
  stats: { ruleMessagesSent: number; ruleMessagesReceived: number; ruleMessagesDropped: number; ruleCheckpoints: number; ruleCheckpointsLoaded: number };
}

const alive = (i: number): boolean => nodes[i]!.child.exitCode === null && nodes[i]!.child.signalCode === null;

async function status(i: number): Promise<Status> {
  return (await (await fetch(`http://127.0.0.1:${nodes[i]!.ports['http']}/api/cluster`)).json()) as Status;
}

async function waitFor(what: string, ok: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await ok()) return;
    } catch {
      /* not answering yet */
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(100);
  }
}

/** The holder every running node agrees on (its index), once they agree. */
async function agreedHolder(exclude: string[] = []): Promise<number> {
  let holder = -1;
  await waitFor(
    'one rule-buffer holder agreed by every running node',
    async () => {
      const seen = new Set<string | undefined>();
      for (let i = 0; i < 3; i++) if (alive(i)) seen.add((await status(i)).jetstream.ruleBufferHolder);
      const [h] = [...seen];
      if (seen.size !== 1 || h === undefined || exclude.includes(h)) return false;
      holder = names.indexOf(h);
      return true;
    },
    30_000,
  );
  return holder;
}

async function client(i: number, id: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${nodes[i]!.ports['mqtt']}`, { protocolVersion: 5, clientId: id, reconnectPeriod: 0, connectTimeout: 5000 });
  open.push(c);
  return c;
}

/** The rule buffer checkpointed in the bucket: topic -> payload of its entries ({} when there is none). */
async function checkpointed(): Promise<Record<string, string>> {
  const { connect } = await import('@nats-io/transport-node');
  const { Kvm } = await import('@nats-io/kv');
  const nc = await connect({ servers: nats.servers.map((s) => s.url) });
  try {
    const e = await (await new Kvm(nc).open('edb_rulebuf_rulebuf')).get('buffer');
    if (!e || e.operation !== 'PUT') return {};
    const section = JSON.parse(Buffer.from(e.json<{ b: string }>().b, 'base64').toString('utf8')) as { entries: { topic: string; payload: string }[] };
    return Object.fromEntries(section.entries.map((x) => [Buffer.from(x.topic, 'base64').toString(), Buffer.from(x.payload, 'base64').toString()]));
  } finally {
    await nc.close();
  }
}

/** Publish on node `i` and wait until the holder has it in its buffer (sent there, or published on the holder itself). */
async function feed(pubs: MqttClient[], i: number, holder: number, topic: string, v: number): Promise<void> {
  const before = (await status(holder)).stats.ruleMessagesReceived;
  await pubs[i]!.publishAsync(topic, JSON.stringify({ v }), { qos: 1 });
  if (i === holder) return; // run there synchronously, before the PUBACK
  await waitFor(`${topic} from ${names[i]} at the holder ${names[holder]}`, async () => (await status(holder)).stats.ruleMessagesReceived > before, 10_000);
}

beforeAll(async () => {
  nats = await startNats(3);
  const dir = mkdtempSync(join(tmpdir(), 'edb-rulebuf-'));
  const rulesFile = join(dir, 'rules.json');
  writeFileSync(rulesFile, JSON.stringify(RULES));
  const urls = (i: number) => [i, ...[0, 1, 2].filter((j) => j !== i)].map((j) => nats.servers[j]!.url).join(',');
  for (let i = 0; i < 3; i++) {
    nodes.push(
      await startBrokerProcess(
        { EDB_CLUSTER_NATS: urls(i), EDB_NODE_NAME: names[i]!, EDB_CLUSTER_NAME: 'rulebuf', EDB_HTTP_PORT: '0', EDB_MQTTS_PORT: '-1', EDB_RULES_FILE: rulesFile },
        ['mqtt', 'http'],
        120_000,
      ),
    );
  }
  await waitFor('three nodes with the lease bucket and one rules document', async () => {
    const all = await Promise.all([0, 1, 2].map(status));
    return all.every((s) => s.nodes.length === 3 && s.jetstream.lease === 'ready' && s.jetstream.rulesEtag !== undefined && s.jetstream.rulesEtag === all[0]!.jetstream.rulesEtag);
  }, 120_000);
}, 240_000);

afterAll(async () => {
  for (const c of open) c.end(true);
  for (const n of nodes) if (n.child.exitCode === null && n.child.signalCode === null) await n.stop('SIGKILL').catch(() => undefined);
  await nats?.stop();
});

describe('cluster: one rule buffer', () => {
  it('fires once cluster-wide on topics published on different nodes; after kill -9 of the holder another node takes over', async () => {
    const holder = await agreedHolder();
    const others = [0, 1, 2].filter((i) => i !== holder);
    const [a, b] = others as [number, number];
    // the subscriber is on a node that survives; every node must route `!alarm` to it
    const subNode = a;
    const sub = await client(subNode, 'alarm-sub');
    const alarms: string[] = [];
    sub.on('message', (t, p) => alarms.push(`${t} ${p.toString()}`));
    await sub.subscribeAsync('!alarm', { qos: 1 });
    await waitFor('the subscriber\'s interest on every node', async () => {
      for (const i of [0, 1, 2].filter((j) => j !== subNode)) if (((await status(i)).nodes.find((n) => n.name === names[subNode])?.interest ?? 0) < 1) return false;
      return true;
    });
    const pubs = await Promise.all([0, 1, 2].map((i) => client(i, `pub-${names[i]}`)));

    // 1. site/a on one node, site/b on another (neither holds the buffer): one alarm
    await feed(pubs, a, holder, 'site/a', 20);
    await feed(pubs, b, holder, 'site/b', 30);
    await until(() => alarms.length >= 1, 10_000, 'the first alarm');
    await delay(1500); // published once: no second copy from another node
    expect(alarms).toEqual(['!alarm both']);

    // 2. the buffer was emptied by the firing: site/b alone does not fire; site/a on the holder then does
    await feed(pubs, b, holder, 'site/b', 30);
    await delay(500);
    expect(alarms.length).toBe(1);
    await feed(pubs, holder, holder, 'site/a', 11);
    await until(() => alarms.length >= 2, 10_000, 'the second alarm');
    await delay(1500);
    expect(alarms).toEqual(['!alarm both', '!alarm both']);
    const before = await status(holder);
    expect(before.stats.ruleMessagesReceived).toBeGreaterThanOrEqual(3);
    for (const i of others) expect((await status(i)).stats.ruleMessagesSent).toBeGreaterThanOrEqual(1);

    // 3. site/a goes into the holder's buffer, and within a second into its checkpoint; then the holder is killed
    await feed(pubs, a, holder, 'site/a', 50);
    await waitFor('site/a in the checkpoint of the holder\'s buffer', async () => (await checkpointed())['site/a'] === JSON.stringify({ v: 50 }), 10_000);
    expect((await status(holder)).stats.ruleCheckpoints).toBeGreaterThanOrEqual(1);
    const killedAt = Date.now();
    await nodes[holder]!.stop('SIGKILL');
    const next = await agreedHolder([names[holder]!]);
    const takeoverMs = Date.now() - killedAt;
    console.log(`rule buffer: ${names[holder]} killed, ${names[next]} holds the lease after ${takeoverMs} ms (lease ${(await status(next)).jetstream.ruleBufferFence}, was ${before.jetstream.ruleBufferFence})`);
    expect(others).toContain(next);
    expect((await status(next)).jetstream.ruleBufferFence).toBeGreaterThan(before.jetstream.ruleBufferFence);
    const survivors = others;
    const notNext = survivors.find((i) => i !== next)!;
    expect((await status(next)).stats.ruleCheckpointsLoaded).toBeGreaterThanOrEqual(1);
    // the publishers whose node died are gone; the survivors' publishers carry on. site/b alone
    // fires: the new holder started from the checkpoint, which holds the dead holder's site/a
    await feed(pubs, notNext, next, 'site/b', 40);
    await until(() => alarms.length >= 3, 10_000, 'the alarm after the takeover (site/a from the dead holder)');
    await delay(1500);
    expect(alarms).toEqual(['!alarm both', '!alarm both', '!alarm both']);

    // 4. site/a on the new holder, which is then stopped gracefully at once (before its next
    // periodic checkpoint, most likely): its last checkpoint goes with it, the last node takes
    // the lease over without waiting for it to expire, and site/b fires there
    const sub2 = await client(notNext, 'alarm-sub2');
    const alarms2: string[] = [];
    sub2.on('message', (t, p) => alarms2.push(`${t} ${p.toString()}`));
    await sub2.subscribeAsync('!alarm', { qos: 1 });
    const fenceBefore = (await status(next)).jetstream.ruleBufferFence;
    await feed(pubs, next, next, 'site/a', 70);
    const stoppedAt = Date.now();
    expect(await nodes[next]!.stop('SIGTERM')).toBe(0);
    await waitFor('the last node holding the lease', async () => {
      const s = await status(notNext);
      return s.jetstream.ruleBufferHolder === names[notNext] && s.jetstream.ruleBufferFence > fenceBefore;
    }, 10_000);
    console.log(`rule buffer: ${names[next]} stopped (SIGTERM), ${names[notNext]} holds the lease after ${Date.now() - stoppedAt} ms`);
    expect((await checkpointed())['site/a']).toBe(JSON.stringify({ v: 70 }));
    await feed(pubs, notNext, notNext, 'site/b', 80);
    await until(() => alarms2.length >= 1, 10_000, 'the alarm on the last node (site/a from the stopped holder)');
    await delay(1000);
    expect(alarms2).toEqual(['!alarm both']);
  }, 180_000);
});
