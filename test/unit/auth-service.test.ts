import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { BrokerApi } from '../../src/broker/api.js';
import type { BrokerHooks, ClientInfo, ConnectRequest } from '../../src/broker/hooks.js';
import type { Message } from '../../src/mqtt/message.js';
import { ConfigError, testConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { hashPassword } from '../../src/auth/password-file.js';
import { createAuthService, type AuthService, type AuthServiceOptions } from '../../src/auth/service.js';

/**
 * The auth service against its real inputs (files on disk, fs.watch, SIGHUP). The broker
 * side is the hook registry only: these tests call the hooks the way the core does.
 * End-to-end tests with real clients live in test/e2e/auth.test.ts.
 */

interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

function harness(overrides: Partial<Config>, options: AuthServiceOptions = {}) {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  const log = pino({ level: 'debug' }, sink);
  const hooks: BrokerHooks[] = [];
  const config = testConfig(overrides);
  const broker = { config, log, addHooks: (h: BrokerHooks) => hooks.push(h) } as unknown as BrokerApi;
  const service = createAuthService(broker, config, log, { handleSighup: false, ...options });
  services.push(service);
  const h = hooks[0]!;
  return { service, hooks: h, lines, config };
}

const services: AuthService[] = [];
afterEach(async () => {
  while (services.length) await services.pop()!.close();
});

function connect(partial: Partial<ConnectRequest>): ConnectRequest {
  return { clientId: 'c1', username: undefined, password: undefined, protocolVersion: 5, transport: 'tcp', remoteAddress: '10.0.0.1:40000', ...partial };
}

function client(partial: Partial<ClientInfo>): ClientInfo {
  return { clientId: 'c1', username: undefined, protocolVersion: 5, transport: 'tcp', remoteAddress: '10.0.0.1:40000', connectedAt: 0, ...partial };
}

function msg(topic: string): Message {
  return { topic, payload: Buffer.from('x'), qos: 1, retain: false };
}

function dir(): string {
  return mkdtempSync(join(tmpdir(), 'edb-auth-'));
}

async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('authentication', () => {
  it('lets anonymous clients in by default, with a warning', async () => {
    const { hooks, lines } = harness({});
    expect(await hooks.authenticate!(connect({}))).toEqual({ ok: true });
    expect(lines.some((l) => l.level === 40 && /anonymous access is on/.test(l.msg))).toBe(true);
  });

  it('refuses anonymous clients with 0x87 when EDB_ALLOW_ANONYMOUS=false', async () => {
    const { hooks, lines } = harness({ allowAnonymous: false });
    expect(await hooks.authenticate!(connect({}))).toEqual({ ok: false, reasonCode: 0x87 });
    expect(lines.some((l) => /no client can connect/.test(l.msg))).toBe(true);
    expect(lines.some((l) => l.msg === 'login refused')).toBe(true);
  });

  it('answers an authentication method with 0x8C', async () => {
    const { hooks } = harness({});
    expect(await hooks.authenticate!(connect({ authenticationMethod: 'SCRAM-SHA-1' }))).toEqual({ ok: false, reasonCode: 0x8c });
  });

  it('checks users against the password file; unknown user and wrong password look the same', async () => {
    const d = dir();
    const pw = join(d, 'passwd');
    writeFileSync(pw, `alice:${await hashPassword('wonder', { log2N: 10 })}\n`);
    const { hooks, lines, service } = harness({ passwordFile: pw, allowAnonymous: false });
    expect(await hooks.authenticate!(connect({ username: 'alice', password: Buffer.from('wonder') }))).toEqual({ ok: true });
    const wrong = await hooks.authenticate!(connect({ username: 'alice', password: Buffer.from('land') }));
    const unknown = await hooks.authenticate!(connect({ username: 'mallory', password: Buffer.from('land') }));
    const nopw = await hooks.authenticate!(connect({ username: 'alice' }));
    expect(wrong).toEqual({ ok: false, reasonCode: 0x86 });
    expect(unknown).toEqual(wrong);
    expect(nopw).toEqual(wrong);
    const refusals = lines.filter((l) => l.msg === 'login refused');
    expect(refusals.map((l) => l['reason'])).toEqual(['bad user name or password', 'bad user name or password', 'bad user name or password']);
    expect(JSON.stringify(lines)).not.toContain('land');
    expect(service.counters.loginsFailed).toBe(3);
  });

  it('throttles an address after repeated failures (0x9F), others unaffected; success clears it', async () => {
    const d = dir();
    const pw = join(d, 'passwd');
    writeFileSync(pw, `alice:${await hashPassword('wonder', { log2N: 10 })}\n`);
    let now = 1_000_000;
    const { hooks, service } = harness({ passwordFile: pw, loginFailureLimit: 2, loginBackoffMaxMs: 4000 }, { now: () => now });
    const bad = connect({ username: 'alice', password: Buffer.from('nope'), remoteAddress: '10.0.0.9:1' });
    expect(await hooks.authenticate!(bad)).toMatchObject({ reasonCode: 0x86 });
    expect(await hooks.authenticate!({ ...bad, remoteAddress: '10.0.0.9:2' })).toMatchObject({ reasonCode: 0x86 });
    expect(await hooks.authenticate!(bad)).toMatchObject({ reasonCode: 0x86 }); // third: now blocked for 1 s
    const good = connect({ username: 'alice', password: Buffer.from('wonder'), remoteAddress: '10.0.0.9:3' });
    expect(await hooks.authenticate!(good)).toMatchObject({ ok: false, reasonCode: 0x9f });
    expect(await hooks.authenticate!({ ...good, remoteAddress: '10.0.0.8:3' })).toEqual({ ok: true });
    expect(service.counters.loginsThrottled).toBe(1);
    now += 1000;
    expect(await hooks.authenticate!(good)).toEqual({ ok: true });
    now += 1;
    expect(await hooks.authenticate!(bad)).toMatchObject({ reasonCode: 0x86 }); // counting starts over
  });

  it('uses the certificate subject, or a configured field, as the user name', async () => {
    const subject = 'CN=device-7,O=Acme';
    const fields = { CN: 'device-7', O: 'Acme' };
    const whole = harness({ allowAnonymous: false });
    expect(await whole.hooks.authenticate!(connect({ certificateSubject: subject, certificateFields: fields, username: 'ignored' }))).toEqual({
      ok: true,
      username: subject,
    });
    const cn = harness({ allowAnonymous: false, certIdentityField: 'CN' });
    expect(await cn.hooks.authenticate!(connect({ certificateSubject: subject, certificateFields: fields }))).toEqual({ ok: true, username: 'device-7' });
    const ou = harness({ allowAnonymous: false, certIdentityField: 'OU' });
    expect(await ou.hooks.authenticate!(connect({ certificateSubject: subject, certificateFields: fields }))).toEqual({ ok: false, reasonCode: 0x87 });
  });

  it('takes a user name on trust only when there is no password source and anonymous access is on', async () => {
    expect(await harness({}).hooks.authenticate!(connect({ username: 'anyone' }))).toEqual({ ok: true });
    expect(await harness({ allowAnonymous: false }).hooks.authenticate!(connect({ username: 'anyone' }))).toEqual({ ok: false, reasonCode: 0x86 });
  });

  it('reads users from the config file section', async () => {
    const hash = await hashPassword('pw', { log2N: 10 });
    const { hooks } = harness({ allowAnonymous: false, sections: { users: { carol: hash } } });
    expect(await hooks.authenticate!(connect({ username: 'carol', password: Buffer.from('pw') }))).toEqual({ ok: true });
    expect(await hooks.authenticate!(connect({ username: 'carol', password: Buffer.from('px') }))).toMatchObject({ ok: false });
    expect(() => harness({ sections: { users: { dave: 'plain' } } })).toThrow(ConfigError);
    expect(() => harness({ sections: { users: ['x'] } })).toThrow(/expected a mapping/);
  });

  it('stops the start with a clear ConfigError for a missing or bad file', () => {
    const d = dir();
    expect(() => harness({ passwordFile: join(d, 'missing') })).toThrow(/cannot read the password file/);
    writeFileSync(join(d, 'acl'), 'topic read a/#/b\n');
    expect(() => harness({ aclFile: join(d, 'acl') })).toThrow(ConfigError);
    expect(() => harness({ aclFile: join(d, 'acl') })).toThrow(/acl:1: "a\/#\/b" is not a valid topic filter/);
  });
});

describe('authorization hooks', () => {
  const ACL = 'topic read public/#\nuser alice\ntopic readwrite alice/#\ntopic deny alice/secret/#\npattern readwrite clients/%c/#\n';

  it('allow everything without an ACL', () => {
    const { hooks, service } = harness({});
    expect(service.aclEnabled).toBe(false);
    expect(hooks.authorizePublish!(client({}), msg('any/thing'))).toBe(0);
    expect(hooks.authorizeSubscribe!(client({}), '#', 2)).toBe(2);
    expect(hooks.authorizeDelivery!(client({}), msg('any/thing'))).toBe(true);
  });

  it('enforce the ACL on publish (0x87), subscribe (granted QoS or 0x87) and delivery', () => {
    const d = dir();
    writeFileSync(join(d, 'acl'), ACL);
    const { hooks, service } = harness({ aclFile: join(d, 'acl') });
    const alice = client({ clientId: 'a1', username: 'alice' });
    const anon = client({ clientId: 'dev' });
    expect(hooks.authorizePublish!(alice, msg('alice/x'))).toBe(0);
    expect(hooks.authorizePublish!(alice, msg('alice/secret/x'))).toBe(0x87);
    expect(hooks.authorizePublish!(anon, msg('public/x'))).toBe(0x87);
    expect(hooks.authorizePublish!(anon, msg('clients/dev/state'))).toBe(0);
    expect(hooks.authorizeSubscribe!(alice, 'alice/#', 1)).toBe(1);
    expect(hooks.authorizeSubscribe!(alice, '$share/grp/alice/+', 2)).toBe(2);
    expect(hooks.authorizeSubscribe!(alice, 'public/#', 1)).toBe(0x87);
    expect(hooks.authorizeSubscribe!(anon, 'public/#', 0)).toBe(0);
    expect(hooks.authorizeDelivery!(alice, msg('alice/a'))).toBe(true);
    expect(hooks.authorizeDelivery!(alice, msg('alice/secret/a'))).toBe(false);
    expect(hooks.authorizeDelivery!(anon, msg('public/a'))).toBe(true);
    expect(service.counters).toMatchObject({ publishDenied: 2, subscribeDenied: 1, deliveryDenied: 1 });
    expect(service.canRead(alice, 'alice/1')).toBe(true);
  });

  it('recomputes a client’s rules when its user name changes under the same client id', () => {
    const d = dir();
    writeFileSync(join(d, 'acl'), ACL);
    const { hooks } = harness({ aclFile: join(d, 'acl') });
    expect(hooks.authorizePublish!(client({ clientId: 'x', username: 'alice' }), msg('alice/1'))).toBe(0);
    expect(hooks.authorizePublish!(client({ clientId: 'x', username: 'bob' }), msg('alice/1'))).toBe(0x87);
  });

  it('give the state store an identity', () => {
    const { service } = harness({});
    expect(service.identityFor(client({ clientId: 'c', username: 'u', certificateSubject: 'CN=u', certificateFields: { CN: 'u' } }))).toEqual({
      clientId: 'c',
      username: 'u',
      certificateSubject: 'CN=u',
      certificateFields: { CN: 'u' },
    });
  });
});

describe('reloading', () => {
  it('picks up ACL and password changes when the files change (also replaced by rename)', async () => {
    const d = dir();
    const aclPath = join(d, 'acl');
    const pwPath = join(d, 'passwd');
    writeFileSync(aclPath, 'user alice\ntopic read a/#\n');
    writeFileSync(pwPath, `alice:${await hashPassword('one', { log2N: 10 })}\n`);
    const { hooks, service } = harness({ aclFile: aclPath, passwordFile: pwPath }, { watchDebounceMs: 20 });
    const alice = client({ username: 'alice' });
    expect(hooks.authorizePublish!(alice, msg('a/1'))).toBe(0x87);

    writeFileSync(aclPath, 'user alice\ntopic readwrite a/#\n');
    await until(() => hooks.authorizePublish!(alice, msg('a/1')) === 0, 'the ACL change');

    writeFileSync(`${pwPath}.new`, `alice:${await hashPassword('two', { log2N: 10 })}\n`);
    renameSync(`${pwPath}.new`, pwPath);
    await until(() => service.counters.reloads >= 2, 'the password file change');
    let ok = false;
    const end = Date.now() + 5000;
    while (!ok && Date.now() < end) {
      ok = (await hooks.authenticate!(connect({ username: 'alice', password: Buffer.from('two') }))).ok;
      if (!ok) await new Promise((r) => setTimeout(r, 50));
    }
    expect(ok).toBe(true);
    expect(await hooks.authenticate!(connect({ username: 'alice', password: Buffer.from('one'), remoteAddress: '10.9.9.9:1' }))).toMatchObject({ ok: false });
  });

  it('reloads on SIGHUP; a broken file keeps the previous rules', async () => {
    const d = dir();
    const aclPath = join(d, 'acl');
    writeFileSync(aclPath, 'topic read a/#\n');
    const { hooks, service, lines } = harness({ aclFile: aclPath }, { handleSighup: true, watchFiles: false });
    const anon = client({});
    expect(hooks.authorizePublish!(anon, msg('a/1'))).toBe(0x87);

    writeFileSync(aclPath, 'topic write a/#\n');
    expect(hooks.authorizePublish!(anon, msg('a/1'))).toBe(0x87); // not watching: unchanged until SIGHUP
    process.kill(process.pid, 'SIGHUP');
    await until(() => service.counters.reloads === 1, 'the SIGHUP reload');
    expect(hooks.authorizePublish!(anon, msg('a/1'))).toBe(0);

    writeFileSync(aclPath, 'topic read a/#\nsometimes a/#\n');
    await service.reload();
    expect(service.counters.reloadErrors).toBe(1);
    expect(hooks.authorizePublish!(anon, msg('a/1'))).toBe(0);
    expect(lines.some((l) => l.level === 50 && /previous rules stay in force/.test(l.msg) && /unknown keyword "sometimes"/.test(String(l['err'])))).toBe(true);
  });

  it('re-reads config file sections through readSections', async () => {
    let sections: Record<string, unknown> = { acl: { anonymous: [{ topic: 'x', access: 'read' }] } };
    const { hooks, service } = harness({ sections }, { readSections: () => sections });
    expect(hooks.authorizePublish!(client({}), msg('x'))).toBe(0x87);
    sections = { acl: { anonymous: [{ topic: 'x', access: 'write' }] } };
    await service.reload();
    expect(hooks.authorizePublish!(client({}), msg('x'))).toBe(0);
  });
});

describe('password checks under a flood', () => {
  it('bound the hashing in progress: excess CONNECTs get 0x89 at once, and a real user still gets in', async () => {
    const d = dir();
    const pw = join(d, 'passwd');
    writeFileSync(pw, `alice:${await hashPassword('wonder', { log2N: 10 })}\n`);
    const { hooks, service } = harness({ passwordFile: pw, loginFailureLimit: 1_000_000 });
    // made-up users cost a decoy scrypt at full cost: 300 of them would be ~15 s of hashing
    const flood = Array.from({ length: 300 }, (_, i) => hooks.authenticate!(connect({ username: `nobody-${i}`, password: Buffer.from('x') })));
    const results = await Promise.all(flood);
    const busy = results.filter((r) => !r.ok && r.reasonCode === 0x89).length;
    const refused = results.filter((r) => !r.ok && r.reasonCode === 0x86).length;
    expect(busy + refused).toBe(300);
    expect(busy).toBeGreaterThan(200);
    expect(service.counters.loginsBusy).toBe(busy);
    expect(await hooks.authenticate!(connect({ username: 'alice', password: Buffer.from('wonder') }))).toEqual({ ok: true });
  }, 60_000);
});

describe('config file sections', () => {
  it('reads `users` and `acl` from a YAML config file through loadConfig', async () => {
    const { loadConfig } = await import('../../src/config/load.js');
    const d = dir();
    const hash = await hashPassword('pw', { log2N: 10 });
    const file = join(d, 'edb.yaml');
    writeFileSync(
      file,
      [
        'allowAnonymous: false',
        'users:',
        `  carol: "${hash}"`,
        'acl:',
        '  users:',
        '    carol:',
        '      - { topic: "carol/#" }',
        '      - { topic: "carol/private", access: deny }',
        '  patterns:',
        '    - { topic: "clients/%c/#", access: read }',
        '',
      ].join('\n'),
    );
    const config = loadConfig({ EDB_CONFIG: file });
    const { hooks } = harness({ ...config, logLevel: 'silent', mqttPort: 0 });
    expect(await hooks.authenticate!(connect({ username: 'carol', password: Buffer.from('pw') }))).toEqual({ ok: true });
    expect(await hooks.authenticate!(connect({}))).toMatchObject({ ok: false, reasonCode: 0x87 });
    const carol = client({ clientId: 'k', username: 'carol' });
    expect(hooks.authorizePublish!(carol, msg('carol/a'))).toBe(0);
    expect(hooks.authorizePublish!(carol, msg('carol/private'))).toBe(0x87);
    expect(hooks.authorizeDelivery!(carol, msg('clients/k/x'))).toBe(true);
    expect(hooks.authorizePublish!(carol, msg('clients/k/x'))).toBe(0x87);
  });

  it('names the bad entry of an invalid acl section', async () => {
    const { loadConfig } = await import('../../src/config/load.js');
    const file = join(dir(), 'edb.yaml');
    writeFileSync(file, 'acl:\n  users:\n    carol:\n      - { topic: "a", access: everything }\n');
    const config = loadConfig({ EDB_CONFIG: file });
    expect(() => harness({ ...config, logLevel: 'silent' })).toThrow(/acl \(config file\)\.users\.carol\.0\.access/);
  });
});
