/**
 * A network partition (issue 12, section 3): one NATS server and one broker node cut off
 * from the other two of each, with real processes in a network namespace of the test's own.
 *
 * The namespace has only `lo` (up): NATS servers on 127.0.0.1, .2 and .3, three `edb start`
 * processes, each listing its own NATS server first. The minority (nats3 and broker b3) run
 * with group id 65534 (setpriv; still uid 0), and the partition is an nftables table in the
 * namespace that drops the NATS traffic between the sockets of that group and the others:
 * processes on loopback pick 127.0.0.1 as source whatever address they reach, so the
 * addresses alone cannot tell the sides apart; the sockets' group can. Each connection is
 * marked (conntrack) with the side that opened it, so both directions of a connection that
 * crosses the cut are dropped, also one opened before it. The test process stays
 * outside and reaches the brokers through Unix sockets (test/fixtures/netns-relay.mjs).
 *
 * Checked, during the partition: the minority answers state-store writes with the protocol's
 * "try again" error (never OK), does not acknowledge a QoS 1 message that a persistent session
 * needs stored in JetStream (0x80), and still delivers QoS 0 between its own clients; the
 * majority goes on writing (state keys, retained messages, the rules document); the minority's
 * GET answers the last confirmed value, not its refused write. After healing: every node
 * converges on the majority's values, with one version per key on all nodes, no write the
 * minority refused is anywhere, and every bucket-backed mirror agrees: retained messages, the
 * rules document's ETag, the rule buffer's lease holder (src/cluster/watch.ts and the state
 * store's resync against the stream leader make that hold; the test prints the watch restarts
 * and state-store repairs each run needed).
 *
 * Needs root (network namespaces, nftables) and the `ip`, `nft` and `setpriv` commands
 * (Debian iproute2, nftables, util-linux; .ci/run installs nftables): skipped otherwise, with
 * the reason in the test's name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Server } from 'node:net';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { freePort } from '../helpers/nats.js';
import { delay } from '../helpers/broker.js';
import { StateStoreClient } from '../../src/state/client.js';

const NS = `edbpart${process.pid}`;
const MINORITY_GID = 65534;
const RELAY = fileURLToPath(new URL('../fixtures/netns-relay.mjs', import.meta.url));
const TRY_AGAIN = 'the cluster cannot replicate this write now; try again';
/** The rules document the majority uploads during the partition. */
const RULES = JSON.stringify({
  filters: [{ topic: 'part/rules/#', subtopic: 'out/', statements: [{ condition: '$inside.v >= 1', new_payload: 'high' }] }],
  rules: [],
});

/** Why this machine cannot run the test, or undefined. */
function unsupported(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and nftables)';
  for (const cmd of [['ip', '-V'], ['nft', '--version'], ['setpriv', '--version'], ['nats-server', '--version']]) {
    const r = spawnSync(cmd[0]!, cmd.slice(1), { stdio: 'ignore' });
    if (r.error || r.status !== 0) return `needs the ${cmd[0]} command (Debian ${cmd[0] === 'nft' ? 'nftables' : cmd[0] === 'ip' ? 'iproute2' : cmd[0] === 'setpriv' ? 'util-linux' : 'nats-server'})`;
  }
  const probe = `edbprobe${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (add.status !== 0) return `cannot create a network namespace: ${add.stderr.trim()}`;
  const nft = spawnSync('ip', ['netns', 'exec', probe, 'nft', 'add', 'table', 'inet', 'probe'], { encoding: 'utf8' });
  spawnSync('ip', ['netns', 'del', probe]);
  if (nft.status !== 0) return `nftables does not work in a network namespace here: ${nft.stderr.trim()}`;
  return undefined;
}

const skip = unsupported();

function sh(args: string[], input?: string): void {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr || r.error?.message}`);
}
const inNs = (...args: string[]): string[] => ['ip', 'netns', 'exec', NS, ...args];
const asMinority = (...args: string[]): string[] => inNs('setpriv', `--regid=${MINORITY_GID}`, '--clear-groups', ...args);

interface Nats {
  name: string;
  host: string;
  port: number;
  cport: number;
  proc?: ChildProcess;
  out: string;
}

const dir = skip ? '' : mkdtempSync(join(tmpdir(), 'edb-part-'));
const natsServers: Nats[] = [];
const brokers: BrokerProcess[] = [];
const relays: ChildProcess[] = [];
const hostServers: Server[] = [];
const open: MqttClient[] = [];
/** Per broker: the host-side ports that reach its MQTT and HTTP listeners. */
const reach: { mqtt: number; http: number }[] = [];

async function startNatsInNs(): Promise<void> {
  for (let i = 0; i < 3; i++) natsServers.push({ name: `nats${i + 1}`, host: `127.0.0.${i + 1}`, port: await freePort(), cport: await freePort(), out: '' });
  const routes = natsServers.map((s) => `nats://${s.host}:${s.cport}`).join(',');
  await Promise.all(
    natsServers.map(
      (s, i) =>
        new Promise<void>((resolve, reject) => {
          const args = ['nats-server', '-js', '-sd', join(dir, s.name), '-a', s.host, '-p', String(s.port), '--server_name', s.name, '--cluster_name', 'part', '--cluster', `nats://${s.host}:${s.cport}`, '--routes', routes];
          const argv = i === 2 ? asMinority(...args) : inNs(...args);
          const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
          s.proc = p;
          const timer = setTimeout(() => reject(new Error(`${s.name} did not start: ${s.out}`)), 30_000);
          const keep = (b: Buffer): void => {
            s.out = (s.out + b.toString()).slice(-20_000);
            if (s.out.includes('Server is ready')) {
              clearTimeout(timer);
              resolve();
            }
          };
          p.stdout!.on('data', keep);
          p.stderr!.on('data', keep);
          p.once('exit', (code) => reject(new Error(`${s.name} exited with ${code}: ${s.out}`)));
        }),
    ),
  );
}

/** Host-side TCP ports piped to host:port inside the namespace (through the relay's Unix sockets). */
async function relayInto(targets: { host: string; port: number }[]): Promise<number[]> {
  const argv = inNs(process.execPath, RELAY, dir, ...targets.map((t) => `${t.host}:${t.port}`));
  const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  relays.push(p);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    p.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('ready')) resolve();
    });
    p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    p.once('exit', (code) => reject(new Error(`relay exited with ${code}: ${out}`)));
  });
  const ports: number[] = [];
  for (const t of targets) {
    const path = join(dir, `${t.host}_${t.port}.sock`);
    const server = createServer((inbound) => {
      const outbound = connect({ path });
      inbound.pipe(outbound).pipe(inbound);
      const end = (): void => {
        inbound.destroy();
        outbound.destroy();
      };
      for (const s of [inbound, outbound]) {
        s.on('error', end);
        s.on('close', end);
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    hostServers.push(server);
    ports.push((server.address() as { port: number }).port);
  }
  return ports;
}

/**
 * From the start: each connection in the namespace is marked with the side that opened it
 * (conntrack mark 1: a minority socket, 2: any other), so that the partition can drop both
 * directions of the connections that cross it, also those opened before it.
 */
function markSides(): void {
  sh(
    inNs('nft', '-f', '-'),
    `table inet edbmark {
      chain out {
        type filter hook output priority -10; policy accept;
        ct state new meta skgid ${MINORITY_GID} ct mark set 1
        ct state new meta skgid != ${MINORITY_GID} ct mark set 2
      }
    }\n`,
  );
}

/**
 * The partition: NATS traffic between the minority's sockets (group 65534) and the others is
 * dropped, both ways: new connections to the other side's NATS ports, and every packet a
 * socket sends on a NATS connection the other side opened (a cut that dropped only one
 * direction would let a route opened by the majority carry the minority's requests).
 */
function cut(): void {
  const majority = natsServers.slice(0, 2).flatMap((s) => [s.port, s.cport]);
  const minority = [natsServers[2]!.port, natsServers[2]!.cport];
  const all = [...majority, ...minority].join(', ');
  sh(
    inNs('nft', '-f', '-'),
    `table inet edbpart {
      chain out {
        type filter hook output priority 0; policy accept;
        meta skgid ${MINORITY_GID} tcp dport { ${majority.join(', ')} } drop
        meta skgid != ${MINORITY_GID} tcp dport { ${minority.join(', ')} } drop
        meta skgid ${MINORITY_GID} ct mark 2 tcp sport { ${all} } drop
        meta skgid ${MINORITY_GID} ct mark 2 tcp dport { ${all} } drop
        meta skgid != ${MINORITY_GID} ct mark 1 tcp sport { ${all} } drop
        meta skgid != ${MINORITY_GID} ct mark 1 tcp dport { ${all} } drop
      }
    }\n`,
  );
}

function heal(): void {
  sh(inNs('nft', 'delete', 'table', 'inet', 'edbpart'));
}

interface Status {
  nodes: { name: string }[];
  connected: boolean;
  jetstream: { state: string; sessions?: string; retained: string; ruleBufferHolder?: string };
}

async function status(i: number): Promise<Status> {
  return (await (await fetch(`http://127.0.0.1:${reach[i]!.http}/api/cluster`)).json()) as Status;
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
    await delay(200);
  }
}

async function client(i: number, id: string, extra: IClientOptions = {}): Promise<MqttClient> {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${reach[i]!.mqtt}`, { protocolVersion: 5, clientId: id, reconnectPeriod: 0, connectTimeout: 10_000, ...extra });
  open.push(c);
  return c;
}

/** A SET that only the protocol's "try again" error may refuse, retried until accepted. */
async function setEventually(store: StateStoreClient, key: string, value: string, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      expect((await store.set(key, value)).applied).toBe(true);
      return;
    } catch (err) {
      expect((err as Error).message).toBe(TRY_AGAIN);
      if (Date.now() > deadline) throw new Error(`SET ${key} not accepted in ${timeoutMs} ms`);
      await delay(300);
    }
  }
}

/** A QoS 1 PUBLISH: 'acked', or 'refused' (reason code >= 0x80, or no PUBACK within `ms`). */
async function publishQos1(c: MqttClient, topic: string, payload: string, ms = 20_000): Promise<'acked' | 'refused'> {
  try {
    const packet = await Promise.race([c.publishAsync(topic, payload, { qos: 1 }), delay(ms).then(() => 'timeout' as const)]);
    if (packet === 'timeout') return 'refused';
    return ((packet as { reasonCode?: number } | undefined)?.reasonCode ?? 0) < 0x80 ? 'acked' : 'refused';
  } catch {
    return 'refused';
  }
}

/** The retained messages under part/r/ a new subscriber on node i gets: topic -> payload. */
async function retainedOn(i: number): Promise<Map<string, string>> {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${reach[i]!.mqtt}`, { protocolVersion: 5, clientId: `retained-check-${i}-${Date.now()}`, reconnectPeriod: 0, connectTimeout: 10_000 });
  try {
    const got = new Map<string, string>();
    c.on('message', (t, p, packet) => {
      if (packet.retain) got.set(t, p.toString());
    });
    await c.subscribeAsync('part/r/+', { qos: 0 });
    await delay(300);
    return got;
  } finally {
    c.end(true);
  }
}

async function rulesEtag(i: number): Promise<string | null> {
  return (await fetch(`http://127.0.0.1:${reach[i]!.http}/rules`)).headers.get('etag');
}

/** The brokers' log lines about state-store writes refused, voided or undone (for a failure's message). */
function stateLog(): string[] {
  return brokers.flatMap((b, i) => b.logs.filter((l) => typeof l['msg'] === 'string' && /state-store write|state mirror|state bucket entry/.test(l['msg'] as string)).map((l) => `b${i + 1}: ${String(l['msg'])} ${JSON.stringify({ key: l['key'], revision: l['revision'], over: l['over'], prevRev: l['prevRev'], version: l['version'], from: l['from'], taken: l['taken'], err: l['err'] })}`));
}

/** The brokers' log lines saying a bucket watch was started again (src/cluster/watch.ts). */
function watchRestarts(): string[] {
  return brokers.flatMap((b, i) => b.logs.filter((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes('watch started again')).map((l) => `b${i + 1}: ${String(l['msg'])}`));
}

beforeAll(async () => {
  if (skip) return;
  chmodSync(dir, 0o777);
  sh(['ip', 'netns', 'add', NS]);
  sh(inNs('ip', 'link', 'set', 'lo', 'up'));
  markSides();
  await startNatsInNs();
  for (let i = 0; i < 3; i++) {
    const order = [i, ...[0, 1, 2].filter((j) => j !== i)].map((j) => `nats://${natsServers[j]!.host}:${natsServers[j]!.port}`).join(',');
    const env = { EDB_CLUSTER_NATS: order, EDB_NODE_NAME: `b${i + 1}`, EDB_CLUSTER_NAME: 'part', EDB_HOST: `127.0.0.${i + 1}`, EDB_HTTP_PORT: '0', EDB_MQTTS_PORT: '-1' };
    brokers.push(await startBrokerProcess(env, ['mqtt', 'http'], 90_000, i === 2 ? asMinority() : inNs()));
  }
  const ports = await relayInto(brokers.flatMap((b, i) => [{ host: `127.0.0.${i + 1}`, port: b.ports['mqtt']! }, { host: `127.0.0.${i + 1}`, port: b.ports['http']! }]));
  for (let i = 0; i < 3; i++) reach.push({ mqtt: ports[2 * i]!, http: ports[2 * i + 1]! });
  await waitFor('three nodes with their buckets ready', async () => (await Promise.all([0, 1, 2].map(status))).every((s) => s.connected && s.nodes.length === 3 && s.jetstream.state === 'ready' && s.jetstream.sessions === 'ready'), 90_000);
}, 180_000);

afterAll(async () => {
  for (const c of open) c.end(true);
  for (const b of brokers) await b.stop('SIGKILL').catch(() => undefined);
  for (const p of [...relays, ...natsServers.map((s) => s.proc)]) if (p && p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const s of hostServers) s.close();
  if (!skip) {
    await delay(200);
    spawnSync('ip', ['netns', 'del', NS]);
    rmSync(dir, { recursive: true, force: true });
  }
});

describe.skipIf(skip !== undefined)(`cluster: a partition of one NATS server and one broker node${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('minority refuses replicated writes and keeps local QoS 0; after healing, no split brain', async () => {
    const stores = await Promise.all([0, 1, 2].map(async (i) => StateStoreClient.create(await client(i, `state-${i}`), { timeoutMs: 60_000 })));
    const [s1, , s3] = stores as [StateStoreClient, StateStoreClient, StateStoreClient];
    await setEventually(s1, 'part/k0', 'before');
    await setEventually(s1, 'part/k1', 'before');
    // the minority's clients: a persistent session (its QoS 1 messages go to JetStream first),
    // a QoS 0 subscriber, a publisher
    const persistent = await client(2, 'minority-persistent', { clean: false, properties: { sessionExpiryInterval: 600 } });
    const persistentGot: string[] = [];
    persistent.on('message', (_t, p) => persistentGot.push(p.toString()));
    await persistent.subscribeAsync('part/q1', { qos: 1 });
    const q0 = await client(2, 'minority-q0');
    const q0Got: string[] = [];
    q0.on('message', (_t, p) => q0Got.push(p.toString()));
    await q0.subscribeAsync('part/q0', { qos: 0 });
    const pub = await client(2, 'minority-pub');
    expect(await publishQos1(pub, 'part/q1', 'before')).toBe('acked');
    await waitFor('the persistent session has the message before the partition', async () => persistentGot.includes('before'), 10_000);
    // retained messages: one the majority replaces during the cut, one it clears
    const retainer = await client(0, 'majority-retainer');
    await retainer.publishAsync('part/r/1', 'before', { qos: 1, retain: true });
    await retainer.publishAsync('part/r/3', 'before', { qos: 1, retain: true });
    await waitFor('the retained messages on every node before the partition', async () => (await Promise.all([0, 1, 2].map(retainedOn))).every((m) => m.get('part/r/1') === 'before' && m.get('part/r/3') === 'before'), 20_000);

    cut();

    // the minority: state-store writes refused with the "try again" error, never OK
    for (const [key, value] of [['part/k1', 'minority'], ['part/m1', 'minority']] as const) {
      const t0 = Date.now();
      await expect(s3.set(key, value)).rejects.toThrow(TRY_AGAIN);
      console.log(`minority: SET ${key} refused after ${Date.now() - t0} ms`);
    }
    await expect(s3.set('part/nx', 'minority', { condition: 'nx' })).rejects.toThrow(TRY_AGAIN);
    // a refused write is nowhere, not even in the minority node's own mirror
    expect((await s3.get('part/k1')).value?.toString()).toBe('before');
    expect((await s3.get('part/m1')).value).toBeUndefined();
    // a QoS 1 message the persistent session needs in JetStream is not acknowledged
    console.log('partition: state-store writes refused on the minority; now QoS 1 for a persistent session');
    expect(await publishQos1(pub, 'part/q1', 'during')).toBe('refused');
    console.log('partition: QoS 1 refused; now local QoS 0');
    // local QoS 0 keeps flowing on the minority
    for (let n = 0; n < 20; n++) pub.publish('part/q0', String(n), { qos: 0 });
    await waitFor('local QoS 0 on the minority', async () => q0Got.length >= 20, 30_000);
    expect(q0Got).toEqual(Array.from({ length: 20 }, (_, n) => String(n)));

    // the majority goes on (after a leader election if the bucket's leader was nats3)
    console.log('partition: local QoS 0 delivered; now the majority writes');
    await setEventually(s1, 'part/k1', 'majority');
    await setEventually(s1, 'part/k2', 'majority');
    expect((await s1.set('part/nx', 'majority', { condition: 'nx' })).applied).toBe(true);
    // still refused on the minority while cut off
    await expect(s3.set('part/k2', 'minority')).rejects.toThrow(TRY_AGAIN);
    // the majority's retained messages and rules document, which the minority's mirrors must take after healing
    await retainer.publishAsync('part/r/1', 'majority', { qos: 1, retain: true });
    await retainer.publishAsync('part/r/2', 'majority', { qos: 1, retain: true });
    await retainer.publishAsync('part/r/3', '', { qos: 1, retain: true });
    const upload = await fetch(`http://127.0.0.1:${reach[0]!.http}/rules`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: RULES });
    expect(upload.status).toBe(200);
    const etag = upload.headers.get('etag');
    expect(etag).toBeTruthy();
    await waitFor('the majority with the majority\'s retained messages and rules document', async () => {
      const maps = await Promise.all([0, 1].map(retainedOn));
      const etags = await Promise.all([0, 1].map(rulesEtag));
      return maps.every((m) => m.get('part/r/1') === 'majority' && m.get('part/r/2') === 'majority' && !m.has('part/r/3')) && etags.every((e) => e === etag);
    }, 60_000);

    // the rule buffer's lease: a holder cut off stops acting as holder; a majority node holds it
    const held = async (i: number): Promise<boolean> => /^edb_cluster_rule_buffer_held 1$/m.test(await (await fetch(`http://127.0.0.1:${reach[i]!.http}/metrics`)).text());
    await waitFor('one majority node holding the rule buffer, not the minority', async () => {
      const [h1, h2, h3] = await Promise.all([0, 1, 2].map(held));
      const [st1, st2] = await Promise.all([status(0), status(1)]);
      const holder = st1.jetstream.ruleBufferHolder;
      return h1 !== h2 && !h3 && holder === (h1 ? 'b1' : 'b2') && st2.jetstream.ruleBufferHolder === holder;
    }, 15_000);

    console.log('partition: the majority writes; healing');
    heal();

    // the minority writes again once it is back in the quorum
    await setEventually(s3, 'part/k3', 'after', 90_000);
    // QoS 1 for the persistent session: accepted again once the session stream has its quorum
    // back (it may lag the state bucket by a few seconds); a refused attempt is sent again, as
    // a client does
    const qosDeadline = Date.now() + 90_000;
    while ((await publishQos1(pub, 'part/q1', 'after', 10_000)) !== 'acked') {
      if (Date.now() > qosDeadline) throw new Error('QoS 1 for the persistent session not acknowledged 90 s after healing');
      await delay(500);
    }
    await waitFor('the persistent session gets the message sent after healing', async () => persistentGot.includes('after'), 20_000);
    expect(persistentGot).not.toContain('during');

    // convergence, and no split brain: each key has one value per version on every node
    const keys = ['part/k0', 'part/k1', 'part/k2', 'part/k3', 'part/m1', 'part/nx'];
    const expected: Record<string, string | undefined> = { 'part/k0': 'before', 'part/k1': 'majority', 'part/k2': 'majority', 'part/k3': 'after', 'part/m1': undefined, 'part/nx': 'majority' };
    const versionKey = (v: { wall: number; counter: number } | undefined): string => (v ? `${v.wall}.${v.counter}` : '-');
    // part/m1, a new key whose SET the minority refused with "try again": that request can sit in
    // the cut route and reach the stream leader when the partition heals; it is then stored past
    // its deadline, and every node ignores it (and one writes the key's previous state back)
    let mismatch = '';
    await waitFor(
      'every node with the same values',
      async () => {
        for (const k of keys) {
          for (const [i, s] of stores.entries()) {
            const got = await s.get(k);
            if (got.value?.toString() !== expected[k]) {
              mismatch = `b${i + 1} has ${k} = ${got.value?.toString() ?? '(absent)'}, expected ${expected[k] ?? '(absent)'}`;
              return false;
            }
          }
        }
        return true;
      },
      30_000,
    ).catch(async (err: Error) => {
      const all: string[] = [];
      for (const k of keys) for (const [i, s] of stores.entries()) {
        const got = await s.get(k).catch(() => undefined);
        all.push(`b${i + 1} ${k}=${got?.value?.toString() ?? '-'}@${versionKey(got?.version)}`);
      }
      throw new Error(`${err.message}: ${mismatch}\nvalues: ${all.join(', ')}\nwatch restarts: ${watchRestarts().join(' | ') || 'none'}\nstate log:\n${stateLog().join('\n')}`);
    });
    for (const k of keys) {
      const seen = new Map<string, string | undefined>();
      for (const s of stores) {
        const got = await s.get(k);
        const v = versionKey(got.version);
        if (seen.has(v)) expect(got.value?.toString()).toBe(seen.get(v));
        seen.set(v, got.value?.toString());
      }
      // one version per key across the three nodes
      expect(seen.size, `${k}: ${[...seen].join(' ')}`).toBe(1);
    }
    // every other bucket-backed mirror converges too: retained messages, the rules document, the lease
    let retainedMismatch = '';
    await waitFor(
      'every node with the majority\'s retained messages, rules document and lease holder',
      async () => {
        for (const i of [0, 1, 2]) {
          const m = await retainedOn(i);
          const got = `r/1=${m.get('part/r/1') ?? '-'} r/2=${m.get('part/r/2') ?? '-'} r/3=${m.get('part/r/3') ?? '-'}`;
          if (got !== 'r/1=majority r/2=majority r/3=-') {
            retainedMismatch = `b${i + 1} retained ${got}`;
            return false;
          }
          const e = await rulesEtag(i);
          if (e !== etag) {
            retainedMismatch = `b${i + 1} rules ${e}, expected ${etag}`;
            return false;
          }
        }
        const holders = (await Promise.all([0, 1, 2].map(status))).map((st) => st.jetstream.ruleBufferHolder);
        retainedMismatch = `lease holders ${holders.join(' ')}`;
        return holders[0] !== undefined && holders.every((h) => h === holders[0]);
      },
      30_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${retainedMismatch}`);
    });
    console.log(`after healing: ${watchRestarts().length} watch restarts${watchRestarts().map((l) => `\n  ${l}`).join('')}\nstate log:${stateLog().map((l) => `\n  ${l}`).join('')}`);
    for (const s of stores) await s.close();
  }, 240_000);
});
