/**
 * Bridges against real brokers started here: mosquitto (the Debian package) as the remote,
 * and a second Edge Data Broker. Out, in, both, prefixes, QoS 0/1/2, v3.1.1 and v5, TLS with
 * verification, credentials, and no loops.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { parseBridge } from '../../src/config/bridges.js';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { makeTestCertificates, type TestCertificates } from '../helpers/certs.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';

interface Got {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
}

async function client(url: string, opts: IClientOptions = {}): Promise<MqttClient & { got: Got[] }> {
  const c = (await mqtt.connectAsync(url, { reconnectPeriod: 0, ...opts })) as MqttClient & { got: Got[] };
  c.got = [];
  c.on('message', (topic, payload, packet) => c.got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain }));
  return c;
}

const fast = { reconnectMin: '100ms', reconnectMax: '1s', keepAlive: 5 };

async function bridged(b: TestBroker, name = 'br0'): Promise<void> {
  await until(() => b.server.bridges.get(name)?.state === 'connected', 15_000, `bridge ${name} to connect`);
}

describe('bridge to mosquitto', () => {
  let remote: Mosquitto;
  const open: { end(force?: boolean): unknown }[] = [];
  const brokers: TestBroker[] = [];
  beforeAll(async () => {
    remote = await startMosquitto();
  });
  afterAll(async () => {
    for (const c of open) c.end(true);
    for (const b of brokers) await b.stop();
    await remote.stop();
  });

  async function edb(bridge: Record<string, unknown>): Promise<TestBroker> {
    const b = await startBroker({ bridges: [parseBridge('br0', { url: `mqtt://127.0.0.1:${remote.port}`, ...fast, ...bridge })] });
    brokers.push(b);
    await bridged(b);
    return b;
  }

  for (const version of [5, 4] as const) {
    it(`out with prefixes, QoS 0/1/2 (MQTT ${version === 5 ? '5' : '3.1.1'})`, async () => {
      const b = await edb({ clientId: `out-${version}`, protocolVersion: version, topics: [`v${version}/# out 2 site/ cloud/s1/`] });
      const sub = await client(`mqtt://127.0.0.1:${remote.port}`);
      open.push(sub);
      await sub.subscribeAsync(`cloud/s1/v${version}/#`, { qos: 2 });
      const pub = await client(b.url);
      open.push(pub);
      await pub.publishAsync(`site/v${version}/q0`, 'zero', { qos: 0 });
      await pub.publishAsync(`site/v${version}/q1`, 'one', { qos: 1 });
      await pub.publishAsync(`site/v${version}/q2`, 'two', { qos: 2 });
      await pub.publishAsync(`other/v${version}`, 'not bridged', { qos: 1 });
      await until(() => sub.got.length >= 3, 10_000, 'three messages on the remote');
      expect(sub.got.map((g) => [g.topic, g.payload, g.qos]).sort()).toEqual([
        [`cloud/s1/v${version}/q0`, 'zero', 0],
        [`cloud/s1/v${version}/q1`, 'one', 1],
        [`cloud/s1/v${version}/q2`, 'two', 2],
      ]);
      // QoS towards the remote is capped by the topic line's
      await b.server.bridges.update(parseBridge('br0', { url: `mqtt://127.0.0.1:${remote.port}`, ...fast, clientId: `out-${version}`, protocolVersion: version, topics: [`v${version}/# out 1 site/ cloud/s1/`] }));
      await bridged(b);
      await pub.publishAsync(`site/v${version}/capped`, 'capped', { qos: 2 });
      await until(() => sub.got.some((g) => g.payload === 'capped'), 10_000, 'the capped message');
      expect(sub.got.find((g) => g.payload === 'capped')!.qos).toBe(1);
      expect(b.server.bridges.get('br0')!.backlog.size).toBe(0);
    });

    it(`in with prefixes, QoS 0/1/2 (MQTT ${version === 5 ? '5' : '3.1.1'})`, async () => {
      const b = await edb({ clientId: `in-${version}`, protocolVersion: version, topics: [`cmd/v${version}/# in 2 edge/ remote/`] });
      const sub = await client(b.url);
      open.push(sub);
      await sub.subscribeAsync('edge/#', { qos: 2 });
      const pub = await client(`mqtt://127.0.0.1:${remote.port}`);
      open.push(pub);
      // the bridge's subscription on the remote is made once it is connected; wait for it to be in place
      await until(() => (b.server.bridges.get('br0')?.counters.connects ?? 0) > 0, 5000, 'connect');
      const probe = async (): Promise<void> => {
        for (let i = 0; i < 100 && !sub.got.some((g) => g.payload === 'probe'); i++) {
          await pub.publishAsync(`remote/cmd/v${version}/probe`, 'probe', { qos: 0 });
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      await probe();
      await pub.publishAsync(`remote/cmd/v${version}/q0`, 'zero', { qos: 0 });
      await pub.publishAsync(`remote/cmd/v${version}/q1`, 'one', { qos: 1 });
      await pub.publishAsync(`remote/cmd/v${version}/q2`, 'two', { qos: 2 });
      await until(() => sub.got.filter((g) => g.payload !== 'probe').length >= 3, 10_000, 'three messages here');
      expect(
        sub.got
          .filter((g) => g.payload !== 'probe')
          .map((g) => [g.topic, g.payload, g.qos])
          .sort(),
      ).toEqual([
        [`edge/cmd/v${version}/q0`, 'zero', 0],
        [`edge/cmd/v${version}/q1`, 'one', 1],
        [`edge/cmd/v${version}/q2`, 'two', 2],
      ]);
      expect(b.server.broker.stats.messagesPublishedByBroker['bridge:br0']).toBeGreaterThanOrEqual(3);
    });

    it(`both ways on # stays quiet: nothing comes back (MQTT ${version === 5 ? '5 No Local' : '3.1.1 origin mark'})`, async () => {
      const b = await edb({ clientId: `both-${version}`, protocolVersion: version, topics: [`loop${version}/# both 1`] });
      const localSub = await client(b.url);
      const remoteSub = await client(`mqtt://127.0.0.1:${remote.port}`);
      open.push(localSub, remoteSub);
      await localSub.subscribeAsync(`loop${version}/#`, { qos: 1 });
      await remoteSub.subscribeAsync(`loop${version}/#`, { qos: 1 });
      const localPub = await client(b.url);
      const remotePub = await client(`mqtt://127.0.0.1:${remote.port}`);
      open.push(localPub, remotePub);
      for (let i = 0; i < 100 && !localSub.got.some((g) => g.topic.endsWith('/probe')); i++) {
        await remotePub.publishAsync(`loop${version}/probe`, String(i), { qos: 0 });
        await new Promise((r) => setTimeout(r, 100));
      }
      localSub.got = [];
      remoteSub.got = [];
      await localPub.publishAsync(`loop${version}/from-edge`, 'e', { qos: 1 });
      await remotePub.publishAsync(`loop${version}/from-remote`, 'r', { qos: 1 });
      // sentinels published after the messages; once they are through, an echo would have been too
      await until(() => remoteSub.got.some((g) => g.topic.endsWith('from-edge')) && localSub.got.some((g) => g.topic.endsWith('from-remote')), 10_000, 'both messages across');
      await localPub.publishAsync(`loop${version}/sentinel-edge`, 's', { qos: 1 });
      await remotePub.publishAsync(`loop${version}/sentinel-remote`, 's', { qos: 1 });
      await until(() => remoteSub.got.some((g) => g.topic.endsWith('sentinel-edge')) && localSub.got.some((g) => g.topic.endsWith('sentinel-remote')), 10_000, 'the sentinels');
      await new Promise((r) => setTimeout(r, 300));
      const topics = (got: Got[]) => got.map((g) => g.topic.split('/')[1]).sort();
      // each side sees each message exactly once: its own local one and the bridged one
      expect(topics(localSub.got)).toEqual(['from-edge', 'from-remote', 'sentinel-edge', 'sentinel-remote']);
      expect(topics(remoteSub.got)).toEqual(['from-edge', 'from-remote', 'sentinel-edge', 'sentinel-remote']);
      const bridge = b.server.bridges.get('br0')!;
      expect(bridge.counters.messagesOut).toBe(2);
      if (version === 4) expect(bridge.counters.echoesDropped).toBe(2);
    });
  }

  it('does not forward what another cluster node forwarded here (that node bridged it)', async () => {
    const b = await edb({ clientId: 'cluster-skip', topics: ['cl/# out 1'] });
    const sub = await client(`mqtt://127.0.0.1:${remote.port}`);
    open.push(sub);
    await sub.subscribeAsync('cl/#', { qos: 1 });
    // as the cluster delivers a message that arrived at another node
    b.server.broker.publish({ topic: 'cl/from-node-b', payload: Buffer.from('b'), qos: 1, retain: false, fromNode: 'node-b' });
    b.server.broker.publish({ topic: 'cl/local', payload: Buffer.from('a'), qos: 1, retain: false });
    await until(() => sub.got.length >= 1, 10_000, 'the local message on the remote');
    await until(() => b.server.bridges.get('br0')!.backlog.size === 0, 10_000, 'the backlog to drain');
    expect(sub.got.map((g) => g.topic)).toEqual(['cl/local']);
  });

  it('the ACL applies to what the bridge publishes locally, as its local identity', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'edb-bridge-acl-'));
    const acl = join(dir, 'acl');
    writeFileSync(acl, 'topic read #\n\nuser bridge-in\ntopic write allowed/#\n');
    const b = await startBroker({ aclFile: acl, bridges: [parseBridge('br0', { url: `mqtt://127.0.0.1:${remote.port}`, ...fast, clientId: 'acl-br', localUsername: 'bridge-in', topics: ['acl/# in 1'] })] });
    brokers.push(b);
    await bridged(b);
    const sub = await client(b.url);
    open.push(sub);
    await sub.subscribeAsync('acl/#', { qos: 1 });
    const pub = await client(`mqtt://127.0.0.1:${remote.port}`);
    open.push(pub);
    for (let i = 0; i < 100 && b.server.bridges.get('br0')!.counters.messagesIn === 0; i++) {
      await pub.publishAsync('acl/denied', 'no', { qos: 1 });
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(b.server.bridges.get('br0')!.counters.inNotAuthorized).toBeGreaterThan(0);
    expect(sub.got).toEqual([]);
  });
});

describe('bridge to mosquitto over TLS with credentials', () => {
  let certs: TestCertificates;
  let remote: Mosquitto;
  const brokers: TestBroker[] = [];
  beforeAll(async () => {
    certs = makeTestCertificates();
    remote = await startMosquitto({ users: { edge: 'pw-1' }, tls: { cert: certs.serverCert, key: certs.serverKey } });
  });
  afterAll(async () => {
    for (const b of brokers) await b.stop();
    await remote.stop();
  });

  it('verifies the remote with the given CA and logs in; QoS 1 goes out', async () => {
    const b = await startBroker({
      bridges: [parseBridge('tls', { url: `mqtts://localhost:${remote.tlsPort}`, ...fast, username: 'edge', password: 'pw-1', tls: { ca: certs.caCert }, topics: ['t/# out 1'] })],
    });
    brokers.push(b);
    await bridged(b, 'tls');
    const sub = await client(`mqtt://127.0.0.1:${remote.port}`, { username: 'edge', password: 'pw-1' });
    await sub.subscribeAsync('t/#', { qos: 1 });
    const pub = await client(b.url);
    await pub.publishAsync('t/x', 'secret', { qos: 1 });
    await until(() => sub.got.length === 1, 10_000, 'the message over TLS');
    expect(sub.got[0]).toMatchObject({ topic: 't/x', payload: 'secret', qos: 1 });
    sub.end(true);
    pub.end(true);
  });

  it('does not connect to a remote it cannot verify, nor with a wrong password; the broker keeps running', async () => {
    const b = await startBroker({
      bridges: [
        parseBridge('noca', { url: `mqtts://localhost:${remote.tlsPort}`, ...fast, username: 'edge', password: 'pw-1', topics: ['t/# out 1'] }),
        parseBridge('badpw', { url: `mqtts://localhost:${remote.tlsPort}`, ...fast, username: 'edge', password: 'wrong', tls: { ca: certs.caCert }, topics: ['t/# out 1'] }),
      ],
    });
    brokers.push(b);
    await until(() => (b.server.bridges.get('noca')!.counters.reconnects >= 2 && b.server.bridges.get('badpw')!.counters.reconnects >= 2), 15_000, 'failed attempts');
    expect(b.server.bridges.get('noca')!.state).not.toBe('connected');
    expect(b.server.bridges.get('noca')!.lastError).toMatch(/certificate|self.signed|verify/i);
    expect(b.server.bridges.get('badpw')!.state).not.toBe('connected');
    expect(b.server.bridges.get('badpw')!.lastError).toMatch(/not authori[sz]ed|bad user name or password/i);
    // still a broker
    const c = await client(b.url);
    c.end(true);
  });
});

describe('bridge to mosquitto requiring a client certificate', () => {
  let certs: TestCertificates;
  let remote: Mosquitto;
  const brokers: TestBroker[] = [];
  beforeAll(async () => {
    certs = makeTestCertificates();
    remote = await startMosquitto({ tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.caCert }, extra: ['require_certificate true'] });
  });
  afterAll(async () => {
    for (const b of brokers) await b.stop();
    await remote.stop();
  });

  it('connects with tls.cert and tls.key; without them, or with a server name the certificate does not hold, it does not', async () => {
    const url = `mqtts://127.0.0.1:${remote.tlsPort}`;
    const b = await startBroker({
      bridges: [
        parseBridge('cert', { url, ...fast, tls: { ca: certs.caCert, cert: certs.clientCert, key: certs.clientKey, serverName: 'localhost' }, topics: ['c/# out 1'] }),
        parseBridge('nocert', { url, ...fast, tls: { ca: certs.caCert }, topics: ['c/# out 1'] }),
        parseBridge('wrongname', { url, ...fast, tls: { ca: certs.caCert, cert: certs.clientCert, key: certs.clientKey, serverName: 'other.example' }, topics: ['c/# out 1'] }),
      ],
    });
    brokers.push(b);
    await bridged(b, 'cert');
    const sub = await client(`mqtt://127.0.0.1:${remote.port}`);
    await sub.subscribeAsync('c/#', { qos: 1 });
    const pub = await client(b.url);
    await pub.publishAsync('c/x', 'with a certificate', { qos: 1 });
    await until(() => sub.got.some((g) => g.payload === 'with a certificate'), 10_000, 'the message over mutual TLS');
    await until(() => b.server.bridges.get('nocert')!.counters.reconnects >= 2 && b.server.bridges.get('wrongname')!.counters.reconnects >= 2, 15_000, 'failed attempts');
    expect(b.server.bridges.get('nocert')!.state).not.toBe('connected');
    expect(b.server.bridges.get('wrongname')!.state).not.toBe('connected');
    expect(b.server.bridges.get('wrongname')!.lastError).toMatch(/other\.example|altnames|Hostname/i);
    sub.end(true);
    pub.end(true);
  });
});

describe('bridge to a second Edge Data Broker', () => {
  let remote: TestBroker;
  let edge: TestBroker;
  beforeAll(async () => {
    remote = await startBroker();
    edge = await startBroker({ bridges: [parseBridge('cloud', { url: remote.url, ...fast, topics: ['# both 1'] })] });
    await bridged(edge, 'cloud');
  });
  afterAll(async () => {
    await edge.stop();
    await remote.stop();
  });

  it('carries both ways over v5 with No Local, and two brokers bridged both ways on # stay quiet', async () => {
    const edgeSub = await client(edge.url);
    const remoteSub = await client(remote.url);
    await edgeSub.subscribeAsync('#', { qos: 1 });
    await remoteSub.subscribeAsync('#', { qos: 1 });
    const edgePub = await client(edge.url);
    const remotePub = await client(remote.url);
    await until(() => remote.server.broker.subscriptions().some((s) => s.clientId === 'edb-bridge-cloud' && s.noLocal === true), 10_000, 'the bridge subscription with No Local');
    for (let i = 0; i < 20; i++) {
      await edgePub.publishAsync(`up/${i}`, String(i), { qos: 1 });
      await remotePub.publishAsync(`down/${i}`, String(i), { qos: 1 });
    }
    await until(() => edgeSub.got.length >= 40 && remoteSub.got.length >= 40, 10_000, 'forty messages on each side');
    await edgePub.publishAsync('sentinel', 'x', { qos: 1 });
    await until(() => remoteSub.got.some((g) => g.topic === 'sentinel'), 10_000, 'sentinel');
    await new Promise((r) => setTimeout(r, 300));
    expect(edgeSub.got.length).toBe(41);
    expect(remoteSub.got.length).toBe(41);
    expect(remoteSub.got.filter((g) => g.topic.startsWith('up/')).map((g) => g.payload)).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
    for (const c of [edgeSub, remoteSub, edgePub, remotePub]) c.end(true);
  });
});

describe('bridge to a second Edge Data Broker over TLS with credentials, MQTT 3.1.1', () => {
  it('out and in with prefixes, QoS 0/1/2', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { hashPassword, updatePasswordText } = await import('../../src/auth/password-file.js');
    const certs = makeTestCertificates();
    const pwFile = join(mkdtempSync(join(tmpdir(), 'edb-bridge-pw-')), 'passwd');
    writeFileSync(pwFile, updatePasswordText('', 'edge', await hashPassword('pw-2')).text);
    const remote = await startBroker({ mqttsPort: 0, tlsCert: certs.serverCert, tlsKey: certs.serverKey, passwordFile: pwFile, allowAnonymous: false });
    const edge = await startBroker({
      bridges: [
        parseBridge('cloud', {
          url: `mqtts://localhost:${remote.server.port('mqtts')}`,
          ...fast,
          protocolVersion: 4,
          username: 'edge',
          password: 'pw-2',
          tls: { ca: certs.caCert },
          topics: ['v/# out 2 site/ cloud/s1/', 'c/# in 2 local/ cloud/cmd/'],
        }),
      ],
    });
    try {
      await bridged(edge, 'cloud');
      const remoteSub = await client(remote.url, { username: 'edge', password: 'pw-2' });
      await remoteSub.subscribeAsync('cloud/s1/#', { qos: 2 });
      const edgeSub = await client(edge.url);
      await edgeSub.subscribeAsync('local/#', { qos: 2 });
      const edgePub = await client(edge.url);
      for (const q of [0, 1, 2] as const) await edgePub.publishAsync(`site/v/q${q}`, `out ${q}`, { qos: q });
      await until(() => remoteSub.got.length >= 3, 10_000, 'three messages on the remote');
      expect(remoteSub.got.map((g) => [g.topic, g.payload, g.qos]).sort()).toEqual([
        ['cloud/s1/v/q0', 'out 0', 0],
        ['cloud/s1/v/q1', 'out 1', 1],
        ['cloud/s1/v/q2', 'out 2', 2],
      ]);
      await until(() => remote.server.broker.subscriptions().some((s) => s.clientId === 'edb-bridge-cloud'), 10_000, 'the bridge subscription on the remote');
      const remotePub = await client(remote.url, { username: 'edge', password: 'pw-2' });
      for (const q of [0, 1, 2] as const) await remotePub.publishAsync(`cloud/cmd/c/q${q}`, `in ${q}`, { qos: q });
      await until(() => edgeSub.got.length >= 3, 10_000, 'three messages here');
      expect(edgeSub.got.map((g) => [g.topic, g.payload, g.qos]).sort()).toEqual([
        ['local/c/q0', 'in 0', 0],
        ['local/c/q1', 'in 1', 1],
        ['local/c/q2', 'in 2', 2],
      ]);
      for (const c of [remoteSub, edgeSub, edgePub, remotePub]) c.end(true);
    } finally {
      await edge.stop();
      await remote.stop();
    }
  });
});

describe('bridge backlog with EDB_STORAGE=memory', () => {
  it('is saved in the backup on a graceful stop and sent after the next start', async () => {
    const { mkdtempSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const remote = await startBroker();
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-bridge-mem-'));
    const settings = { storage: 'memory' as const, backupEnabled: true, dataDir };
    const first = await startBroker({ ...settings, bridges: [parseBridge('br0', { url: 'mqtt://127.0.0.1:1', ...fast, topics: ['mem/# out 1'] })] });
    const pub = await client(first.url);
    for (let i = 0; i < 3; i++) await pub.publishAsync(`mem/${i}`, String(i), { qos: 1 });
    pub.end(true);
    expect(first.server.bridges.get('br0')!.backlog.size).toBe(3);
    await first.stop();
    const sub = await client(remote.url);
    await sub.subscribeAsync('mem/#', { qos: 1 });
    const second = await startBroker({ ...settings, bridges: [parseBridge('br0', { url: remote.url, ...fast, topics: ['mem/# out 1'] })] });
    try {
      await until(() => sub.got.length === 3, 15_000, 'the saved backlog on the remote');
      expect(sub.got.map((g) => g.payload)).toEqual(['0', '1', '2']);
    } finally {
      sub.end(true);
      await second.stop();
      await remote.stop();
    }
  });
});
