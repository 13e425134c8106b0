import { describe, expect, it } from 'vitest';
import { parseTrusted, requiredAccess } from '../../src/http/access.js';
import { AdminUsers, isAdminUsersText, roleAtLeast, TokenStore } from '../../src/auth/admin-users.js';
import { hashPassword, PasswordFileError } from '../../src/auth/password-file.js';
import fc from 'fast-check';
import { checkAuthorAccess, stateKeyPattern } from '../../src/rules/author-check.js';
import { globToRegExp, StateStoreAuthorizer } from '../../src/state/authorization.js';
import type { ClientInfo } from '../../src/broker/hooks.js';
import { RulesError } from '../../src/rules/errors.js';

describe('EDB_ADMIN_TRUSTED', () => {
  it('loopback, addresses and CIDRs; none is empty; junk is refused', () => {
    const l = parseTrusted('loopback');
    expect(l.check('127.0.0.1', 'ipv4')).toBe(true);
    expect(l.check('127.9.9.9', 'ipv4')).toBe(true);
    expect(l.check('::1', 'ipv6')).toBe(true);
    expect(l.check('10.0.0.1', 'ipv4')).toBe(false);
    const c = parseTrusted('10.20.0.0/16, 192.168.1.5');
    expect(c.check('10.20.3.4', 'ipv4')).toBe(true);
    expect(c.check('10.21.3.4', 'ipv4')).toBe(false);
    expect(c.check('192.168.1.5', 'ipv4')).toBe(true);
    expect(parseTrusted('none').check('127.0.0.1', 'ipv4')).toBe(false);
    expect(() => parseTrusted('intranet')).toThrow(/not an address or CIDR/);
    expect(() => parseTrusted('10.0.0.0/40')).toThrow(/prefix/);
  });
});

describe('requiredAccess', () => {
  it.each([
    ['GET', '/healthz', 'open'],
    ['GET', '/readyz', 'open'],
    ['GET', '/metrics', 'open'],
    ['GET', '/', 'open'],
    ['POST', '/api/login', 'open'],
    ['GET', '/api/status', 'viewer'],
    ['GET', '/rules', 'viewer'],
    ['POST', '/rules', 'operator'],
    ['POST', '/rules/test', 'operator'],
    ['DELETE', '/rules', 'operator'],
    ['POST', '/api/publish', 'operator'],
    ['PUT', '/api/state/key', 'admin'],
    ['DELETE', '/api/clients/c1', 'admin'],
    ['GET', '/api/bridges', 'viewer'],
    ['GET', '/api/bridges/br0', 'viewer'],
    ['POST', '/api/bridges', 'operator'],
    ['PUT', '/api/bridges/br0', 'operator'],
    ['DELETE', '/api/bridges/br0', 'operator'],
  ])('%s %s needs %s', (method, path, need) => {
    expect(requiredAccess(method, path, false)).toBe(need);
  });
  it('/metrics needs a viewer with EDB_METRICS_AUTH', () => {
    expect(requiredAccess('GET', '/metrics', true)).toBe('viewer');
  });
  it('roles include the ones below', () => {
    expect(roleAtLeast('admin', 'operator')).toBe(true);
    expect(roleAtLeast('operator', 'admin')).toBe(false);
    expect(roleAtLeast('viewer', 'viewer')).toBe(true);
  });
});

describe('the admin users file', () => {
  it('parses user:role:hash and verifies passwords with the role', async () => {
    const hash = await hashPassword('s3cret!', { log2N: 4 });
    const text = `# users\nada:admin:${hash}\nvera:viewer:${hash}\n`;
    expect(isAdminUsersText(text)).toBe(true);
    expect(isAdminUsersText(`ada:${hash}\n`)).toBe(false);
    const users = AdminUsers.parse(text);
    expect(await users.verify('ada', Buffer.from('s3cret!'))).toBe('admin');
    expect(await users.verify('vera', Buffer.from('s3cret!'))).toBe('viewer');
    expect(await users.verify('vera', Buffer.from('wrong'))).toBeUndefined();
    expect(await users.verify('nobody', Buffer.from('s3cret!'))).toBeUndefined();
  });
  it('refuses an unknown role and a line without one, naming the line', async () => {
    const hash = await hashPassword('x', { log2N: 4 });
    expect(() => AdminUsers.parse(`ada:root:${hash}`, 'f')).toThrow(/f:1: user "ada": role "root"/);
    expect(() => AdminUsers.parse(`ada`, 'f')).toThrow(PasswordFileError);
  });
  it('a token store without a file accepts nothing', () => {
    const store = new TokenStore('/nonexistent/admin-tokens.json');
    expect(store.verify(`edb_00000000_${'A'.repeat(43)}`)).toBeUndefined();
    expect(store.verify('garbage')).toBeUndefined();
  });
});

describe('checkAuthorAccess', () => {
  const access = {
    canReadAll: (f: string) => f.startsWith('sensors/'),
    canWriteAll: (f: string) => f.startsWith('sensors/') && f.includes('/alert/'),
  };
  const doc = (over: object) => ({ filters: [], rules: [], ...over });
  it('names the JSON path and topic of the first topic outside the ACL', () => {
    const run = (d: object): RulesError | undefined => {
      try {
        checkAuthorAccess(d, access, 'otto');
        return undefined;
      } catch (err) {
        return err as RulesError;
      }
    };
    expect(run(doc({ filters: [{ topic: 'sensors/+', subtopic: 'alert/', statements: [] }] }))).toBeUndefined();
    expect(run(doc({ filters: [{ topic: 'sensors/+', subtopic: 'x', statements: [] }] }))).toMatchObject({ path: 'filters/0/subtopic', status: 403 });
    expect(run(doc({ filters: [{ topic: 'plant/#', subtopic: 'alert/', statements: [] }] }))).toMatchObject({ path: 'filters/0/topic' });
    const rule = { statements: [{ id: 1, topic: 'sensors/a', payload_type: 'int', condition: '$ > 1' }], logic: [{ operations: '$1', new_topic: 'out', new_payload: '' }] };
    const e = run(doc({ rules: [rule] }));
    expect(e).toMatchObject({ path: 'rules/0/logic/0/new_topic' });
    expect(e!.message).toContain('"!out"');
    expect(run(doc({ rules: [{ ...rule, statements: [{ ...rule.statements[0], topic: 'other/x' }] }] }))).toMatchObject({ path: 'rules/0/statements/0/topic' });
  });
});

describe('set_state keys and the state store authorization', () => {
  it('a key template under a filter: concrete where the levels are literal, a glob where they are wildcards', () => {
    expect(stateKeyPattern('alarm/{2}', 'plant/3/temp')).toEqual({ key: 'alarm/3' });
    expect(stateKeyPattern('alarm/{2}', 'plant/+/temp')).toEqual({ glob: 'alarm/*' });
    expect(stateKeyPattern('last/{topic}', 'plant/3/temp')).toEqual({ key: 'last/plant/3/temp' });
    expect(stateKeyPattern('last/{topic}', 'plant/+/temp')).toEqual({ glob: 'last/plant/*/temp' });
    // a/# matches a itself too
    expect(stateKeyPattern('last/{topic}', 'plant/#')).toEqual({ glob: 'last/plant*' });
    expect(stateKeyPattern('x/{3}', 'plant/#')).toEqual({ glob: 'x/*' });
    // past the end of every topic the filter matches: never written
    expect(stateKeyPattern('x/{4}', 'plant/+/temp')).toBeUndefined();
    // glob characters in literal parts match only themselves
    expect(stateKeyPattern('odd*/{2}', 'a/+')).toEqual({ glob: 'odd[*]/*' });
    expect(stateKeyPattern('fixed', '#')).toEqual({ key: 'fixed' });
  });

  const who: ClientInfo = { clientId: 'rules/otto', username: 'otto', protocolVersion: 5, transport: 'tcp', remoteAddress: '', connectedAt: 0 };
  const authorizer = new StateStoreAuthorizer({
    rules: [
      { username: 'otto', access: 'readwrite', patterns: ['alarm/[1-5]', 'own/{username}/*'] },
      { username: 'otto', access: 'write', keys: ['exact-key'] },
      { username: 'otto', access: 'read', patterns: ['*'] },
      { clientId: 'sensor-*', access: 'readwrite', patterns: ['*'] },
    ],
  });

  it('allowedSome: false only when no key of the glob can be written', () => {
    expect(authorizer.allowedSome(who, 'alarm/*', 'write')).toBe(true);
    expect(authorizer.allowedSome(who, 'alarm/9*', 'write')).toBe(false);
    expect(authorizer.allowedSome(who, 'own/otto/*', 'write')).toBe(true);
    expect(authorizer.allowedSome(who, 'own/*/x', 'write')).toBe(true);
    expect(authorizer.allowedSome(who, 'own/ada/*', 'write')).toBe(false);
    expect(authorizer.allowedSome(who, 'exact-*', 'write')).toBe(true);
    expect(authorizer.allowedSome(who, 'limits/*', 'write')).toBe(false);
    expect(authorizer.allowedSome(who, 'limits/*', 'read')).toBe(true);
    // the author is not a client: client id rules do not apply to it
    expect(authorizer.allowedSome(who, 'x*', 'write')).toBe(false);
    expect(new StateStoreAuthorizer(undefined).allowedSome(who, 'anything', 'write')).toBe(true);
  });

  it('allowedSome agrees with trying every short key (fast-check)', () => {
    const token = fc.constantFrom('a', 'b', '/', '*', '?', '[ab]', '[!a]');
    const glob = fc.array(token, { maxLength: 3 }).map((t) => t.join(''));
    const keys: string[] = [''];
    for (let len = 1, layer = ['']; len <= 6; len++) {
      layer = layer.flatMap((k) => ['a', 'b', '/'].map((c) => k + c));
      keys.push(...layer);
    }
    fc.assert(
      fc.property(glob, glob, (template, pattern) => {
        const one = new StateStoreAuthorizer({ rules: [{ access: 'write', patterns: [pattern] }] });
        const a = globToRegExp(template);
        const b = globToRegExp(pattern);
        const witness = keys.some((k) => a.test(k) && b.test(k));
        expect(one.allowedSome(who, template, 'write')).toBe(witness);
      }),
      { numRuns: 500 },
    );
  });

  it('checkAuthorAccess names the JSON path and key of the first set_state key outside the grants', () => {
    const keys = { canWriteKey: (k: string) => authorizer.allowed(who, Buffer.from(k), 'write'), canWriteSomeKey: (g: string) => authorizer.allowedSome(who, g, 'write'), canReadKey: (k: string) => authorizer.allowed(who, Buffer.from(k), 'read'), canReadSomeKey: (g: string) => authorizer.allowedSome(who, g, 'read') };
    const run = (d: object): RulesError | undefined => {
      try {
        checkAuthorAccess(d, undefined, 'otto', keys);
        return undefined;
      } catch (err) {
        return err as RulesError;
      }
    };
    const filter = (topic: string, key: string) => ({ filters: [{ topic, subtopic: 'a', statements: [{ condition: '$v > 1' }, { condition: '$v > 2', set_state: { key, value: '1' } }] }] });
    expect(run(filter('plant/+/temp', 'alarm/{2}'))).toBeUndefined();
    expect(run(filter('plant/3/temp', 'alarm/{2}'))).toBeUndefined();
    const concrete = run(filter('plant/7/temp', 'alarm/{2}'));
    expect(concrete).toMatchObject({ status: 403, code: 'EDB_RULES_FORBIDDEN', path: 'filters/0/statements/1/set_state/key' });
    expect(concrete!.message).toContain('"alarm/7"');
    const never = run(filter('plant/+/temp', 'limits/{2}'));
    expect(never).toMatchObject({ path: 'filters/0/statements/1/set_state/key' });
    expect(never!.message).toContain('limits/{2}');
    const rule = { statements: [{ id: 1, topic: 'a', payload_type: 'int', condition: '$v > 1' }], logic: [{ operations: '$1', new_topic: 'x', set_state: { key: 'exact-key', value: '1' } }] };
    expect(run({ rules: [rule] })).toBeUndefined();
    const e = run({ rules: [{ ...rule, logic: [{ ...rule.logic[0], set_state: { key: 'other', value: '1' } }] }] });
    expect(e).toMatchObject({ path: 'rules/0/logic/0/set_state/key' });
    // topics are not checked without a topic ACL
    expect(run({ filters: [{ topic: 'anything/#', subtopic: 'x', statements: [{ condition: '$v > 1' }] }] })).toBeUndefined();
  });
});
