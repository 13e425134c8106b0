import { describe, expect, it } from 'vitest';
import { parseTrusted, requiredAccess } from '../../src/http/access.js';
import { AdminUsers, isAdminUsersText, roleAtLeast, TokenStore } from '../../src/auth/admin-users.js';
import { hashPassword, PasswordFileError } from '../../src/auth/password-file.js';
import { checkAuthorAccess } from '../../src/rules/author-check.js';
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
