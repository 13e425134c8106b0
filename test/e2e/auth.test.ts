import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPasswd } from '../../src/cli/passwd.js';
import { hashPassword } from '../../src/auth/password-file.js';
import { FLOOD_SECONDS } from '../../src/auth/rate-limit.js';
import {
  collect,
  connect,
  end,
  makeCertificates,
  run,
  sleep,
  startAuthStack,
  subscribeCodes,
  tmpDir,
  waitFor,
  type AuthStack,
  type TlsFiles,
} from './auth-stack.js';
import { PassThrough } from 'node:stream';

/**
 * Authentication and authorization with real clients over real sockets: MQTT.js (3.1.1
 * and 5) and mosquitto_pub / mosquitto_sub (-u/-P, client certificates).
 */

const ACL = `
# anonymous clients
topic read public/#
topic write public/anon

user alice
topic readwrite sensors/#
topic deny sensors/secret
topic readwrite alice/#
topic write wills/alice

user bob
topic read sensors/#
topic read alice/#
topic read wills/#

user admin
topic readwrite #

user device-7
topic readwrite devices/device-7/#

pattern readwrite clients/%c/#
pattern readwrite users/%u/#
`;

const PASSWORDS = { alice: 'pw-alice', bob: 'pw-bob', admin: 'pw-admin' } as const;
type User = keyof typeof PASSWORDS;

let dir: string;
let pwFile: string;
let aclFile: string;

beforeAll(async () => {
  dir = tmpDir();
  pwFile = join(dir, 'passwd');
  aclFile = join(dir, 'acl.conf');
  writeFileSync(aclFile, ACL);
  const io = { stdin: new PassThrough() as unknown as NodeJS.ReadStream, stderr: new PassThrough() };
  // `edb passwd` at its default cost for alice; faster hashes for the others keep the suite quick
  await runPasswd(pwFile, 'alice', { password: PASSWORDS.alice }, io);
  let text = readFileSync(pwFile, 'utf8');
  for (const u of ['bob', 'admin'] as const) text += `${u}:${await hashPassword(PASSWORDS[u], { log2N: 12 })}\n`;
  writeFileSync(pwFile, text);
});

function as(stack: AuthStack, user: User, extra: Parameters<typeof connect>[1] = {}): Promise<MqttClient> {
  return connect(stack.url, { username: user, password: PASSWORDS[user], clientId: `${user}-${Math.random().toString(36).slice(2, 8)}`, ...extra });
}

describe('authentication (MQTT.js and mosquitto clients)', () => {
  let stack: AuthStack;
  beforeAll(async () => {
    stack = await startAuthStack({ passwordFile: pwFile, aclFile, allowAnonymous: false });
  });
  afterAll(() => stack.stop());

  it.each([5, 4] as const)('v%i: right password connects; wrong password and unknown user are refused alike', async (protocolVersion) => {
    const ok = await as(stack, 'alice', { protocolVersion });
    expect(ok.connected).toBe(true);
    await end(ok);
    const expected = protocolVersion === 5 ? 0x86 : 4;
    await expect(connect(stack.url, { protocolVersion, username: 'alice', password: 'nope' })).rejects.toMatchObject({ code: expected });
    await expect(connect(stack.url, { protocolVersion, username: 'nobody', password: 'nope' })).rejects.toMatchObject({ code: expected });
    await expect(connect(stack.url, { protocolVersion, username: 'alice' })).rejects.toMatchObject({ code: expected });
  });

  it.each([
    [5, 0x87],
    [4, 5],
  ] as const)('v%i: anonymous clients are refused when anonymous access is off (%i)', async (protocolVersion, code) => {
    await expect(connect(stack.url, { protocolVersion })).rejects.toMatchObject({ code });
  });

  it('v5: an authentication method (enhanced auth) is answered 0x8C', async () => {
    await expect(
      connect(stack.url, { protocolVersion: 5, username: 'alice', password: PASSWORDS.alice, properties: { authenticationMethod: 'SCRAM-SHA-256' } }),
    ).rejects.toMatchObject({ code: 0x8c });
  });

  it.each(['mqttv311', 'mqttv5'])('mosquitto_pub -u/-P (%s): accepted with the right password, refused without', async (version) => {
    const bob = await as(stack, 'bob');
    const got = collect(bob);
    await bob.subscribeAsync('sensors/#', { qos: 1 });
    const base = ['-h', '127.0.0.1', '-p', String(stack.port), '-V', version, '-q', '1', '-t', 'sensors/temp'];
    const good = await run('mosquitto_pub', [...base, '-u', 'alice', '-P', PASSWORDS.alice, '-m', `hello ${version}`]);
    expect(good.code).toBe(0);
    await waitFor(() => got.some((m) => m.payload === `hello ${version}`), 'the message from mosquitto_pub');
    const bad = await run('mosquitto_pub', [...base, '-u', 'alice', '-P', 'wrong', '-m', 'x']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.toLowerCase()).toMatch(/bad user name or password|not authori[sz]ed/);
    const anon = await run('mosquitto_pub', [...base, '-m', 'x']);
    expect(anon.code).not.toBe(0);
    expect(anon.stderr.toLowerCase()).toMatch(/not authori[sz]ed/);
    await end(bob);
  });

  it('mosquitto_sub -u/-P: an allowed subscription receives, a refused one is reported', async () => {
    const sub = run('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(stack.port), '-u', 'bob', '-P', PASSWORDS.bob, '-t', 'alice/news', '-C', '1', '-W', '8'], 10_000);
    // `done` only stops the publishing below: a failed run is reported by `await sub`, not as an unhandled rejection
    let done = false;
    void sub.then(() => (done = true), () => (done = true));
    const alice = await as(stack, 'alice');
    // keep publishing until mosquitto_sub (which subscribes asynchronously) has it
    for (let i = 0; i < 100 && !done; i++) {
      await alice.publishAsync('alice/news', 'from alice', { qos: 1 });
      await sleep(50);
    }
    const r = await sub;
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('from alice');
    await end(alice);

    for (const version of ['mqttv311', 'mqttv5']) {
      const denied = await run('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(stack.port), '-V', version, '-u', 'bob', '-P', PASSWORDS.bob, '-t', 'secrets/#', '-W', '2'], 5000);
      expect(denied.stderr).toMatch(/denied/i);
    }
  });
});

describe('failed logins are throttled per address', () => {
  let stack: AuthStack;
  beforeAll(async () => {
    stack = await startAuthStack({ passwordFile: pwFile, aclFile, allowAnonymous: false, loginFailureLimit: 2, loginBackoffMaxMs: 1500 });
  });
  afterAll(() => stack.stop());

  it('after the free failures, even the right password gets 0x9F until the back-off ends', async () => {
    for (let i = 0; i < 3; i++) {
      await expect(connect(stack.url, { protocolVersion: 5, username: 'bob', password: 'guess' + i })).rejects.toMatchObject({ code: 0x86 });
    }
    await expect(as(stack, 'bob', { protocolVersion: 5 })).rejects.toMatchObject({ code: 0x9f });
    await expect(as(stack, 'bob', { protocolVersion: 4 })).rejects.toMatchObject({ code: 3 }); // 3.1.1: server unavailable
    expect(stack.auth.counters.loginsThrottled).toBe(2);
    await sleep(1100);
    const ok = await as(stack, 'bob');
    expect(ok.connected).toBe(true);
    await end(ok);
  });
});

describe('authorization (ACL)', () => {
  let stack: AuthStack;
  beforeAll(async () => {
    stack = await startAuthStack({ passwordFile: pwFile, aclFile, allowAnonymous: true });
  });
  afterAll(() => stack.stop());

  it('v5: a denied QoS 1 / QoS 2 publish gets 0x87; denied messages (any QoS) are not delivered', async () => {
    const bob = await as(stack, 'bob', { protocolVersion: 5 });
    const got = collect(bob);
    await bob.subscribeAsync('sensors/#', { qos: 2 });
    const alice = await as(stack, 'alice', { protocolVersion: 5 });
    await expect(alice.publishAsync('sensors/secret', 'q1', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    await expect(alice.publishAsync('sensors/secret', 'q2', { qos: 2 })).rejects.toMatchObject({ code: 0x87 });
    await alice.publishAsync('sensors/secret', 'q0', { qos: 0 });
    await expect(alice.publishAsync('bob/inbox', 'q1', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    await alice.publishAsync('sensors/temp', 'sentinel', { qos: 1 });
    await waitFor(() => got.some((m) => m.payload === 'sentinel'), 'the sentinel');
    expect(got.map((m) => m.topic)).toEqual(['sensors/temp']);
    await end(alice, bob);
  });

  it('3.1.1: a denied QoS 1 publish is acknowledged and dropped silently', async () => {
    const bob = await as(stack, 'bob', { protocolVersion: 4 });
    const got = collect(bob);
    await bob.subscribeAsync('sensors/#', { qos: 1 });
    const alice = await as(stack, 'alice', { protocolVersion: 4 });
    // resolves: the PUBACK carries no error in 3.1.1 [MQTT-3.1.1-3.3.5-2]
    await alice.publishAsync('sensors/secret', 'nope', { qos: 1 });
    await alice.publishAsync('sensors/temp', 'sentinel', { qos: 1 });
    await waitFor(() => got.some((m) => m.payload === 'sentinel'), 'the sentinel');
    expect(got.map((m) => m.payload)).toEqual(['sentinel']);
    await end(alice, bob);
  });

  it.each([
    [5, 0x87],
    [4, 0x80],
  ] as const)('v%i: SUBACK refuses each filter outside the ACL (%i) and grants the others', async (protocolVersion, refused) => {
    const bob = await as(stack, 'bob', { protocolVersion, clientId: 'bob-subs' });
    expect(await subscribeCodes(bob, ['sensors/#', '#', 'clients/bob-subs/#', 'clients/other/#', 'sensors/+/x'], 1)).toEqual([1, refused, 1, refused, 1]);
    expect(await subscribeCodes(bob, ['$share/g/sensors/#', '$share/g/secrets/#'], 2)).toEqual([2, refused]);
    await end(bob);
  });

  it('patterns: %c and %u give each client its own subtree', async () => {
    const anon = await connect(stack.url, { protocolVersion: 5, clientId: 'dev-1' });
    await anon.publishAsync('clients/dev-1/state', 'mine', { qos: 1 });
    await expect(anon.publishAsync('clients/dev-2/state', 'theirs', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    // no user name: no %u grant
    await expect(anon.publishAsync('users/dev-1/x', 'x', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    // the anonymous section: read public/#, write public/anon only
    await anon.publishAsync('public/anon', 'x', { qos: 1 });
    await expect(anon.publishAsync('public/other', 'x', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    const alice = await as(stack, 'alice', { protocolVersion: 5 });
    await alice.publishAsync('users/alice/x', 'x', { qos: 1 });
    await expect(alice.publishAsync('users/bob/x', 'x', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    // alice is not anonymous: the anonymous section does not apply to her
    await expect(alice.publishAsync('public/anon', 'x', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    await end(anon, alice);
  });

  it('delivery honours a deny that only overlaps a subscription', async () => {
    const alice = await as(stack, 'alice', { protocolVersion: 5 });
    const got = collect(alice);
    expect(await subscribeCodes(alice, 'sensors/#', 1)).toEqual([1]);
    const admin = await as(stack, 'admin', { protocolVersion: 5 });
    await admin.publishAsync('sensors/secret', 'classified', { qos: 1 });
    await admin.publishAsync('sensors/open', 'sentinel', { qos: 1 });
    await waitFor(() => got.some((m) => m.payload === 'sentinel'), 'the sentinel');
    expect(got.map((m) => m.topic)).toEqual(['sensors/open']);
    await end(alice, admin);
  });

  it('shared subscriptions: a member without read access is skipped for that message', async () => {
    const alice = await as(stack, 'alice', { protocolVersion: 5 });
    const bob = await as(stack, 'bob', { protocolVersion: 5 });
    const gotA = collect(alice);
    const gotB = collect(bob);
    expect(await subscribeCodes(alice, '$share/grp/sensors/#', 1)).toEqual([1]);
    expect(await subscribeCodes(bob, '$share/grp/sensors/#', 1)).toEqual([1]);
    const admin = await as(stack, 'admin', { protocolVersion: 5 });
    for (let i = 0; i < 6; i++) await admin.publishAsync('sensors/secret', `s${i}`, { qos: 1 });
    for (let i = 0; i < 6; i++) await admin.publishAsync('sensors/open', `o${i}`, { qos: 1 });
    await waitFor(() => gotA.length + gotB.length === 12, 'all twelve messages');
    expect(gotA.filter((m) => m.topic === 'sensors/secret')).toEqual([]);
    expect(gotB.filter((m) => m.topic === 'sensors/secret').length).toBe(6);
    expect(gotA.filter((m) => m.topic === 'sensors/open').length).toBeGreaterThan(0); // alice still takes her turns
    await end(alice, bob, admin);
  });

  it('retained messages: a denied retained publish is not stored; stored ones reach only readers', async () => {
    const anon = await connect(stack.url, { protocolVersion: 5, clientId: 'anon-retain' });
    await expect(anon.publishAsync('public/other', 'should not stay', { qos: 1, retain: true })).rejects.toMatchObject({ code: 0x87 });
    await anon.publishAsync('public/anon', 'stays', { qos: 1, retain: true });
    const admin = await as(stack, 'admin', { protocolVersion: 5 });
    await admin.publishAsync('sensors/secret', 'retained secret', { qos: 1, retain: true });
    await admin.publishAsync('sensors/open', 'retained open', { qos: 1, retain: true });

    const reader = await connect(stack.url, { protocolVersion: 5, clientId: 'anon-reader' });
    const got = collect(reader);
    await reader.subscribeAsync('public/#', { qos: 1 });
    const alice = await as(stack, 'alice', { protocolVersion: 5 });
    const gotAlice = collect(alice);
    await alice.subscribeAsync('sensors/#', { qos: 1 });
    await waitFor(() => got.length >= 1 && gotAlice.length >= 1, 'retained messages');
    await sleep(200);
    expect(got).toEqual([{ topic: 'public/anon', payload: 'stays', retain: true }]);
    expect(gotAlice).toEqual([{ topic: 'sensors/open', payload: 'retained open', retain: true }]);
    await end(anon, admin, reader, alice);
  });

  it('wills: published only to a topic the client may write', async () => {
    const bob = await as(stack, 'bob', { protocolVersion: 5 });
    const got = collect(bob);
    await bob.subscribeAsync('wills/#', { qos: 1 });
    await bob.subscribeAsync('alice/#', { qos: 1 });
    const allowed = await as(stack, 'alice', { protocolVersion: 5, will: { topic: 'wills/alice', payload: Buffer.from('alice gone'), qos: 1, retain: false } });
    const denied = await as(stack, 'alice', { protocolVersion: 4, will: { topic: 'wills/bob', payload: Buffer.from('forged'), qos: 1, retain: false } });
    denied.stream.destroy();
    allowed.stream.destroy();
    await waitFor(() => got.some((m) => m.topic === 'wills/alice'), 'the allowed will');
    const admin = await as(stack, 'admin');
    await admin.publishAsync('alice/sentinel', 'sentinel', { qos: 1 });
    await waitFor(() => got.some((m) => m.payload === 'sentinel'), 'the sentinel');
    expect(got.map((m) => m.payload)).toEqual(['alice gone', 'sentinel']);
    await end(bob, admin, allowed, denied);
  });

  // BUG (broker core, src/broker/broker.ts publishWill): a will published after its Will Delay
  // is authorized with offlineInfo(), which has no user name, so the ACL sees an anonymous
  // client: alice's delayed will to wills/alice (which she may write) is dropped as
  // not_authorized. Marked `fails` until the core keeps the publisher's identity with the
  // pending will; then drop `.fails`.
  it('wills: a delayed will is authorized as the client that set it', async () => {
    const bob = await as(stack, 'bob', { protocolVersion: 5 });
    const got = collect(bob);
    await bob.subscribeAsync('wills/#', { qos: 1 });
    const alice = await as(stack, 'alice', {
      protocolVersion: 5,
      properties: { sessionExpiryInterval: 60 },
      will: { topic: 'wills/alice', payload: Buffer.from('later'), qos: 1, retain: false, properties: { willDelayInterval: 1 } },
    });
    alice.stream.destroy();
    await waitFor(() => got.some((m) => m.payload === 'later'), 'the delayed will', 4000);
    await end(bob, alice);
  });

  // Messages queued for an offline persistent session are checked against the read ACL when
  // they leave the queue: a `deny` that only overlaps the subscription (alice: sensors/#
  // granted, sensors/secret denied) cannot be bypassed by going offline.
  it('messages queued while offline are checked against the ACL on delivery', async () => {
    const opts = { protocolVersion: 5 as const, clientId: 'alice-persistent', clean: false, properties: { sessionExpiryInterval: 300 } };
    const first = await as(stack, 'alice', opts);
    await first.subscribeAsync('sensors/#', { qos: 1 });
    await first.endAsync();
    const admin = await as(stack, 'admin', { protocolVersion: 5 });
    await admin.publishAsync('sensors/secret', 'classified', { qos: 1 });
    await admin.publishAsync('sensors/open', 'sentinel', { qos: 1 });
    const got: string[] = [];
    // reconnect to the same session; listen before CONNACK, queued messages follow it at once
    const c = mqtt.connect(stack.url, { ...opts, username: 'alice', password: PASSWORDS.alice, reconnectPeriod: 0 });
    c.on('message', (t) => got.push(t));
    // a refused CONNACK or a connack timeout (30 s, after this test) would otherwise be an uncaught 'error'
    const errors: string[] = [];
    c.on('error', (err) => errors.push(err.message));
    await waitFor(() => got.includes('sensors/open') || errors.length > 0, 'the queued sentinel');
    await end(c, admin);
    expect(errors).toEqual([]);
    expect(got).toEqual(['sensors/open']);
  });

  it('an ACL change on disk applies to connected clients', async () => {
    const aclPath = join(tmpDir(), 'acl.conf');
    writeFileSync(aclPath, 'topic readwrite live/#\n');
    const live = await startAuthStack({ aclFile: aclPath });
    try {
      const c = await connect(live.url, { protocolVersion: 5 });
      await c.publishAsync('live/a', 'x', { qos: 1 });
      writeFileSync(aclPath, 'topic read live/#\n');
      await waitFor(() => live.auth.counters.reloads > 0, 'the reload');
      await expect(c.publishAsync('live/a', 'x', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
      await end(c);
    } finally {
      await live.stop();
    }
  });
});

describe('client certificates', () => {
  let tls: TlsFiles;
  let stack: AuthStack;
  beforeAll(async () => {
    tls = await makeCertificates();
    stack = await startAuthStack({ passwordFile: pwFile, aclFile, allowAnonymous: false, certIdentityField: 'CN', tlsCa: tls.ca }, tls);
  }, 60_000);
  afterAll(() => stack?.stop());

  const certArgs = (): string[] => ['--cafile', tls.ca, '--cert', tls.clientCert, '--key', tls.clientKey];

  it('the CN of a verified certificate is the user name for the ACL (mosquitto_pub and MQTT.js)', async () => {
    const sub = await connect(`mqtts://127.0.0.1:${stack.tlsPort}`, {
      protocolVersion: 5,
      clientId: 'cert-sub',
      ca: readFileSync(tls.ca),
      cert: readFileSync(tls.clientCert),
      key: readFileSync(tls.clientKey),
    });
    const identity = stack.auth.identityFor(stack.broker.client('cert-sub')!);
    expect(identity).toMatchObject({ clientId: 'cert-sub', username: 'device-7', certificateFields: { CN: 'device-7', O: 'Acme' } });
    expect(identity.certificateSubject?.split(',').sort()).toEqual(['CN=device-7', 'O=Acme']);
    const got = collect(sub);
    expect(await subscribeCodes(sub, ['devices/device-7/#', 'devices/other/#'], 1)).toEqual([1, 0x87]);
    for (const version of ['mqttv311', 'mqttv5']) {
      const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(stack.tlsPort), ...certArgs(), '-V', version, '-q', '1', '-t', 'devices/device-7/temp', '-m', version]);
      expect(r.code, r.stderr).toBe(0);
    }
    await waitFor(() => got.length === 2, 'both messages');
    expect(got.map((m) => m.payload).sort()).toEqual(['mqttv311', 'mqttv5']);
    await expect(sub.publishAsync('devices/other/temp', 'x', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    await end(sub);
  });

  it('a certificate the CA did not sign, or none, does not get in', async () => {
    const before = stack.broker.stats.connectionsTotal;
    const stranger = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(stack.tlsPort), '--cafile', tls.ca, '--cert', tls.strangerCert, '--key', tls.strangerKey, '-t', 'devices/device-7/x', '-m', 'x']);
    expect(stranger.code).not.toBe(0);
    const none = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(stack.tlsPort), '--cafile', tls.ca, '-t', 'devices/device-7/x', '-m', 'x']);
    expect(none.code).not.toBe(0);
    expect(stack.broker.stats.connectionsTotal).toBe(before); // refused in the TLS handshake, before MQTT
  });
});

describe('connection-level limits', () => {
  let stack: AuthStack;
  beforeAll(async () => {
    stack = await startAuthStack({ connectTimeoutMs: 300, maxMsgRate: 20, maxSubscriptions: 2 });
  });
  afterAll(() => stack.stop());

  it('a socket that sends no CONNECT, or dribbles one, is closed (slowloris)', async () => {
    const closedWithin = (send: (s: net.Socket) => void): Promise<number> =>
      new Promise((resolve) => {
        const started = Date.now();
        const s = net.connect(stack.port, '127.0.0.1', () => send(s));
        s.on('close', () => resolve(Date.now() - started));
        s.on('error', () => undefined);
        setTimeout(() => s.destroy(), 8000);
      });
    const [silent, dribble] = await Promise.all([
      closedWithin(() => undefined),
      closedWithin((s) => s.write(Buffer.from([0x10, 0x20, 0x00, 0x04]))), // start of a CONNECT, never finished
    ]);
    // closed by the broker, well before the test's own 8 s cut-off
    expect(silent).toBeLessThan(5000);
    expect(dribble).toBeLessThan(5000);
  });

  // from the publish path, so a flood is neither slowed nor disconnected. Drop `.fails` once wired.
  it('a client that floods past EDB_MAX_MSG_RATE is slowed, then disconnected with 0x96', async () => {
    const c = await connect(stack.url, { protocolVersion: 5 });
    const before = stack.broker.stats.publishReceived;
    const started = Date.now();
    const disconnected = new Promise<number>((resolve) => c.on('disconnect', (p) => resolve(p.reasonCode ?? -1)));
    for (let i = 0; i < 2000; i++) c.publish('flood/x', 'x', { qos: 0 });
    const code = await Promise.race([disconnected, sleep((FLOOD_SECONDS + 5) * 1000).then(() => -1)]);
    const seconds = (Date.now() - started) / 1000;
    const handled = stack.broker.stats.publishReceived - before;
    await end(c);
    expect(code).toBe(0x96);
    // slowed first: about 20 a second were read, not the 2000 sent at once
    expect(handled).toBeLessThan(20 * (seconds + 2));
    expect(seconds).toBeGreaterThanOrEqual(FLOOD_SECONDS - 1);
  }, 20_000);

  it('subscriptions past EDB_MAX_SUBSCRIPTIONS get 0x97', async () => {
    const c = await connect(stack.url, { protocolVersion: 5 });
    const codes = await subscribeCodes(c, ['a', 'b', 'c'], 1);
    await end(c);
    expect(codes).toEqual([1, 1, 0x97]);
  });
});
