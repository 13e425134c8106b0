/**
 * Who may use the HTTP surfaces (src/http/access.ts), on a real broker over real sockets:
 * the main HTTP port and the standalone rules port. Admin users are written by the real
 * `edb passwd --role`, tokens by the real `edb token create` / `revoke` (child processes).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { CLI } from '../helpers/process.js';
import { run } from './helpers.js';
import { collect, connectClient, closeAll } from '../helpers/mqttjs.js';

const PASSWORDS = { ada: 'admin pw!', otto: 'operator pw!', vera: 'viewer pw!' } as const;

/** Every endpoint of the admin surfaces on the HTTP port (method, path, body). */
const ADMIN_ENDPOINTS: [string, string, string?][] = [
  ['GET', '/status'],
  ['GET', '/status/app.js'],
  ['GET', '/api/status'],
  ['GET', '/api/clients'],
  ['GET', '/api/subscriptions'],
  ['GET', '/rules'],
  ['GET', '/rules/source'],
  ['GET', '/rules/openapi.json'],
  ['POST', '/rules', '{"filters":[],"rules":[]}'],
  ['PATCH', '/rules', '{"filters":[],"rules":[]}'],
  ['DELETE', '/rules'],
  ['GET', '/api/topics'],
  ['GET', '/api/topics/search?q=a'],
  ['GET', '/api/topics/message?topic=a'],
  ['POST', '/api/publish', '{"topic":"a","payload":"b"}'],
  ['GET', '/api/state/keys'],
  ['GET', '/api/state/key?key=a'],
  ['PUT', '/api/state/key?key=a', '{"value":"b"}'],
  ['DELETE', '/api/state/key?key=a'],
  ['DELETE', '/api/clients?clientId=a'],
];
/** The same on the rules port. */
const RULES_PORT_ENDPOINTS: [string, string, string?][] = [
  ['GET', '/'],
  ['GET', '/source'],
  ['GET', '/docs'],
  ['POST', '/', '{"filters":[],"rules":[]}'],
  ['DELETE', '/'],
];

function basic(user: string, password: string): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` };
}

async function call(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers: { 'content-type': 'application/json', ...headers }, ...(body === undefined ? {} : { body }) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

async function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, ...args], 30_000);
}

describe('without admin users, EDB_ADMIN_TRUSTED=none', () => {
  let dir: string;
  let server: EdbServer;
  let http: number;
  let rules: number;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edb-access-'));
    server = await startEdb(testConfig({ httpPort: 0, rulesPort: 0, adminTrusted: 'none', dataDir: dir }), silentLogger());
    http = server.port('http');
    rules = server.port('rules');
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every admin endpoint answers 401 with a one-line hint on how to add a user', async () => {
    for (const [method, path, body] of ADMIN_ENDPOINTS) {
      const r = await call(http, method, path, {}, body);
      expect(r.status, `${method} ${path}`).toBe(401);
      expect(r.json.message, `${method} ${path}`).toMatch(/edb passwd --role admin/);
      expect(r.json.message).not.toContain('\n');
    }
    for (const [method, path, body] of RULES_PORT_ENDPOINTS) {
      const r = await call(rules, method, path, {}, body);
      expect(r.status, `rules port ${method} ${path}`).toBe(401);
      expect(r.json.message).toMatch(/EDB_ADMIN_USERS_FILE/);
    }
  });

  it('health, readiness and metrics stay open', async () => {
    expect((await call(http, 'GET', '/healthz')).status).toBe(200);
    expect((await call(http, 'GET', '/readyz')).status).toBe(200);
    expect((await call(http, 'GET', '/metrics')).status).toBe(200);
  });

  it('an API token from `edb token create` works with its role until `edb token revoke`', async () => {
    const file = join(dir, 'admin-tokens.json');
    const created = await cli(['token', 'create', '--role', 'viewer', '--name', 'ci', '--file', file]);
    expect(created.code, created.stderr).toBe(0);
    const token = created.stdout.trim();
    expect(token).toMatch(/^edb_[0-9a-f]{8}_/);
    const auth = { authorization: `Bearer ${token}` };
    expect((await call(http, 'GET', '/api/status', auth)).status).toBe(200);
    expect((await call(rules, 'GET', '/', auth)).status).toBe(200);
    // a viewer reads but does not write
    const post = await call(http, 'POST', '/rules', auth, '{"filters":[],"rules":[]}');
    expect(post.status).toBe(403);
    expect(post.json.message).toMatch(/operator/);
    // the file holds a hash, not the token
    const listed = await cli(['token', 'list', '--json', '--file', file]);
    expect(JSON.parse(listed.stdout)).toMatchObject([{ name: 'ci', role: 'viewer' }]);
    expect(listed.stdout).not.toContain(token.slice(14));
    const revoked = await cli(['token', 'revoke', 'ci', '--file', file]);
    expect(revoked.code, revoked.stderr).toBe(0);
    const after = await call(http, 'GET', '/api/status', auth);
    expect(after.status).toBe(401);
    expect(after.json.message).toMatch(/revoked/);
    expect((await call(rules, 'GET', '/', auth)).status).toBe(401);
    // a made-up token of the right shape is refused too
    expect((await call(http, 'GET', '/api/status', { authorization: `Bearer edb_00000000_${'A'.repeat(43)}` })).status).toBe(401);
  });
});

describe('the default EDB_ADMIN_TRUSTED (loopback)', () => {
  it('lets this machine in as admin without credentials, and still refuses a cross-site POST', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'edb-access-'));
    const server = await startEdb(testConfig({ httpPort: 0, dataDir: dir }), silentLogger());
    try {
      const http = server.port('http');
      const session = await call(http, 'GET', '/api/session');
      expect(session.json).toMatchObject({ user: 'trusted', role: 'admin', via: 'trusted' });
      expect((await call(http, 'DELETE', '/rules')).status).toBe(200);
      const cross = await call(http, 'DELETE', '/rules', { origin: 'http://evil.example' });
      expect(cross.status).toBe(403);
      expect(cross.json.error).toBe('cross_site');
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('with admin users and an ACL', () => {
  let dir: string;
  let server: EdbServer;
  let http: number;
  let rules: number;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edb-access-'));
    const users = join(dir, 'admin-users');
    for (const [user, role] of [['ada', 'admin'], ['otto', 'operator'], ['vera', 'viewer']] as const) {
      const r = await cli(['passwd', users, user, '--role', role, '--password', PASSWORDS[user]]);
      expect(r.code, r.stderr).toBe(0);
    }
    const acl = join(dir, 'acl');
    writeFileSync(
      acl,
      ['topic readwrite #', '', 'user otto', 'topic read sensors/#', 'topic write sensors/+/alert/#', 'topic deny sensors/secret/alert/#', ''].join('\n'),
    );
    server = await startEdb(
      testConfig({ httpPort: 0, rulesPort: 0, adminUsersFile: users, aclFile: acl, dataDir: dir, loginFailureLimit: 3, loginBackoffMaxMs: 60_000 }),
      silentLogger(),
    );
    http = server.port('http');
    rules = server.port('rules');
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every request but health, readiness and metrics needs credentials, even from loopback', async () => {
    for (const [method, path, body] of ADMIN_ENDPOINTS) {
      const r = await call(http, method, path, {}, body);
      expect(r.status, `${method} ${path}`).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/^Basic/);
    }
    for (const [method, path, body] of RULES_PORT_ENDPOINTS) expect((await call(rules, method, path, {}, body)).status, `rules ${method} ${path}`).toBe(401);
    expect((await call(http, 'GET', '/healthz')).status).toBe(200);
    expect((await call(http, 'GET', '/metrics')).status).toBe(200);
  });

  it('HTTP Basic with the role from the users file: viewers read, operators write rules', async () => {
    expect((await call(http, 'GET', '/api/status', basic('vera', PASSWORDS.vera))).status).toBe(200);
    expect((await call(rules, 'GET', '/', basic('vera', PASSWORDS.vera))).status).toBe(200);
    const denied = await call(rules, 'DELETE', '/', basic('vera', PASSWORDS.vera));
    expect(denied.status).toBe(403);
    expect((await call(http, 'DELETE', '/rules', basic('otto', PASSWORDS.otto))).status).toBe(200);
    const doc = await call(http, 'GET', '/rules', basic('ada', PASSWORDS.ada));
    expect(doc.headers.get('x-edb-uploaded-by')).toBe('otto');
  });

  it('the console login sets an HttpOnly SameSite=Strict cookie; a change needs the CSRF token, and a cross-site POST is refused', async () => {
    const login = await call(http, 'POST', '/api/login', {}, JSON.stringify({ user: 'ada', password: PASSWORDS.ada }));
    expect(login.status).toBe(200);
    const setCookie = login.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    const cookie = setCookie.split(';')[0]!;
    const csrf = login.json.csrf as string;
    const session = await call(http, 'GET', '/api/session', { cookie });
    expect(session.json).toMatchObject({ user: 'ada', role: 'admin', csrf });
    expect((await call(http, 'GET', '/api/status', { cookie })).status).toBe(200);
    // a form posted from another site carries the cookie (if the browser sends it) but not the token
    const noToken = await call(http, 'DELETE', '/rules', { cookie });
    expect(noToken.status).toBe(403);
    expect(noToken.json.error).toBe('csrf');
    const crossSite = await call(http, 'POST', '/rules', { cookie, 'x-edb-csrf': csrf, origin: 'http://plant-intranet.example' }, '{"filters":[],"rules":[]}');
    expect(crossSite.status).toBe(403);
    expect(crossSite.json.error).toBe('cross_site');
    const fetchMeta = await call(http, 'POST', '/rules', { cookie, 'x-edb-csrf': csrf, 'sec-fetch-site': 'cross-site' }, '{"filters":[],"rules":[]}');
    expect(fetchMeta.status).toBe(403);
    const sameSite = await call(http, 'POST', '/rules', { cookie, 'x-edb-csrf': csrf, origin: `http://127.0.0.1:${http}` }, '{"filters":[],"rules":[]}');
    expect(sameSite.status).toBe(200);
    // logging out ends the session
    expect((await call(http, 'POST', '/api/logout', { cookie, 'x-edb-csrf': csrf })).status).toBe(200);
    expect((await call(http, 'GET', '/api/status', { cookie })).status).toBe(401);
  }, 120_000); // the first non-empty document compiles with asc

  it('a rules upload that would publish outside its author\'s ACL gets 403 naming the JSON path and topic', async () => {
    const outside = JSON.stringify({ filters: [{ topic: 'sensors/+', subtopic: 'copy/', statements: [{ condition: '$v > 1', new_payload: 'x' }] }] });
    const r = await call(rules, 'POST', '/', basic('otto', PASSWORDS.otto), outside);
    expect(r.status).toBe(403);
    expect(r.json.error).toMatchObject({ code: 'EDB_RULES_FORBIDDEN', path: 'filters/0/subtopic' });
    expect(r.json.error.message).toContain('sensors/+/copy/');
    const unreadable = JSON.stringify({ filters: [{ topic: 'plant/#', subtopic: 'alert/', statements: [{ condition: '$v > 1', new_payload: 'x' }] }] });
    const r2 = await call(http, 'POST', '/rules', basic('otto', PASSWORDS.otto), unreadable);
    expect(r2.status).toBe(403);
    expect(r2.json.error).toMatchObject({ path: 'filters/0/topic' });
    expect(r2.json.error.message).toContain('plant/#');
  });

  it('at run time, an output its author may not publish is dropped and counted', async () => {
    const doc = JSON.stringify({ filters: [{ topic: 'sensors/+', subtopic: 'alert/', statements: [{ condition: '$v > 1', new_payload: 'hot' }] }] });
    const up = await call(rules, 'POST', '/', basic('otto', PASSWORDS.otto), doc);
    expect(up.status, JSON.stringify(up.json)).toBe(200);
    const sub = await connectClient(server.port('mqtt'));
    const pub = await connectClient(server.port('mqtt'));
    try {
      const got = collect(sub);
      await sub.subscribeAsync('sensors/+/alert/#');
      await pub.publishAsync('sensors/secret', '{"v":5}', { qos: 1 });
      await pub.publishAsync('sensors/1', '{"v":5}', { qos: 1 });
      const [m] = await got.wait(1);
      expect(m!.topic).toBe('sensors/1/alert/');
      const metrics = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
      expect(metrics).toMatch(/edb_rules_denied_outputs_total 1\b/);
      // nothing else arrived (the secret output would have come before sensors/1's)
      expect(got.messages.map((x) => x.topic)).toEqual(['sensors/1/alert/']);
    } finally {
      await closeAll(sub, pub);
    }
  }, 120_000);

  it('an open state watch (server-sent events) ends with what allowed it: a logout, a revoked token, a deleted user', async () => {
    /** Opens a watch and reads its first event; `ended` settles when the server closes the stream. */
    const watch = async (headers: Record<string, string>): Promise<{ first: string; ended: Promise<'ended'> }> => {
      const res = await fetch(`http://127.0.0.1:${http}/api/state/watch?key=plant/mode`, { headers });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      const first = Buffer.from((await reader.read()).value ?? []).toString();
      const ended = (async () => {
        for (;;) if ((await reader.read()).done) return 'ended' as const;
      })();
      return { first, ended };
    };
    /** Whether the stream ended within `ms` (the server checks open streams every STREAM_RECHECK_MS, 5 s). */
    const endsWithin = (p: Promise<'ended'>, ms: number) => Promise.race([p, new Promise<'still open'>((r) => setTimeout(() => r('still open'), ms).unref())]);

    // a console session: logging out ends its stream at once
    const login = await call(http, 'POST', '/api/login', {}, JSON.stringify({ user: 'ada', password: PASSWORDS.ada }));
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    const bySession = await watch({ cookie });
    expect(bySession.first).toContain('event: value');
    expect(await endsWithin(bySession.ended, 1_000)).toBe('still open');
    expect((await call(http, 'POST', '/api/logout', { cookie, 'x-edb-csrf': login.json.csrf as string })).status).toBe(200);
    expect(await endsWithin(bySession.ended, 5_000)).toBe('ended');

    // a token: revoked with the CLI, the stream ends at the next check
    const file = join(dir, 'admin-tokens.json');
    const created = await cli(['token', 'create', '--role', 'viewer', '--name', 'watcher', '--file', file]);
    expect(created.code, created.stderr).toBe(0);
    const byToken = await watch({ authorization: `Bearer ${created.stdout.trim()}` });
    expect((await cli(['token', 'revoke', 'watcher', '--file', file])).code).toBe(0);
    expect(await endsWithin(byToken.ended, 15_000)).toBe('ended');

    // HTTP Basic: the user deleted from the users file, the stream ends at the next check
    const users = join(dir, 'admin-users');
    expect((await cli(['passwd', users, 'walt', '--role', 'viewer', '--password', 'walt pw!'])).code).toBe(0);
    const byPassword = await watch(basic('walt', 'walt pw!'));
    expect(await endsWithin(byPassword.ended, 1_000)).toBe('still open');
    expect((await cli(['passwd', users, 'walt', '--delete'])).code).toBe(0);
    expect(await endsWithin(byPassword.ended, 15_000)).toBe('ended');
  }, 60_000);

  it('failed logins back off per address (429 with Retry-After), like MQTT logins', async () => {
    // EDB_LOGIN_FAILURE_LIMIT=3 failures are free; the next starts a back-off (1 s, doubling)
    const statuses: number[] = [];
    for (let i = 0; i < 8 && !statuses.includes(429); i++) statuses.push((await call(http, 'GET', '/api/status', basic('vera', 'wrong'))).status);
    expect(statuses.slice(0, 4)).toEqual([401, 401, 401, 401]);
    // the right password does not help while the address backs off
    const blocked = await call(http, 'POST', '/api/login', {}, JSON.stringify({ user: 'vera', password: PASSWORDS.vera }));
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
  });
});
