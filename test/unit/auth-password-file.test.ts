import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  hashPassword,
  parseHash,
  PasswordFile,
  PasswordFileError,
  updatePasswordText,
  verifyPassword,
} from '../../src/auth/password-file.js';
import { PasswdError, runPasswd, type PasswdIO } from '../../src/cli/passwd.js';

const FAST = { log2N: 10 }; // keep unit tests quick; the default cost is checked once below

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'edb-passwd-'));
}

function pipeIO(input: string): PasswdIO {
  const stdin = new PassThrough() as unknown as NodeJS.ReadStream;
  (stdin as unknown as PassThrough).end(input);
  return { stdin, stderr: new PassThrough() };
}

describe('password hashing', () => {
  it('writes scrypt with the default cost, a random salt, and verifies', async () => {
    const a = await hashPassword('correct horse');
    const b = await hashPassword('correct horse');
    expect(a).toMatch(/^\$scrypt\$ln=15,r=8,p=1\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$/);
    expect(a).not.toBe(b); // salted
    expect(a).not.toContain('correct');
    const parsed = parseHash(a);
    expect(parsed.kind).toBe('scrypt');
    expect(parsed.salt.length).toBe(16);
    expect(await verifyPassword(Buffer.from('correct horse'), parsed)).toBe(true);
    expect(await verifyPassword(Buffer.from('correct horsE'), parsed)).toBe(false);
    expect(await verifyPassword(Buffer.alloc(0), parsed)).toBe(false);
  });

  it('keeps cost parameters in the line', async () => {
    const h = await hashPassword('pw', { log2N: 11, r: 4, p: 2 });
    expect(h.startsWith('$scrypt$ln=11,r=4,p=2$')).toBe(true);
    expect(await verifyPassword(Buffer.from('pw'), parseHash(h))).toBe(true);
  });

  it('accepts binary (non UTF-8) passwords as bytes', async () => {
    const pw = Buffer.from([0xff, 0x00, 0xfe]);
    const h = parseHash(await hashPassword(pw, FAST));
    expect(await verifyPassword(pw, h)).toBe(true);
    expect(await verifyPassword(Buffer.from([0xff, 0x00]), h)).toBe(false);
  });

  it.each([
    ['plain text', 'secret', /plain-text/],
    ['$6$ (one SHA-512 round)', '$6$abcd$efgh', /too weak/],
    ['unknown type', '$2b$10$xxxx', /unknown hash type/],
    ['scrypt without params', '$scrypt$$c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==', /bad scrypt parameter/],
    ['scrypt cost too high', '$scrypt$ln=30,r=8,p=1$c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==', /out of range/],
    ['bad base64', '$scrypt$ln=10,r=8,p=1$not base64$aGFzaA==', /salt is not base64/],
    ['short hash', '$scrypt$ln=10,r=8,p=1$c2FsdA==$aGFzaA==', /too short/],
    ['$7$ missing parts', '$7$101$c2FsdA==', /expected \$7\$/],
  ])('refuses %s', (_name, text, message) => {
    expect(() => parseHash(text)).toThrow(PasswordFileError);
    expect(() => parseHash(text)).toThrow(message);
  });

  it('reads a file written by mosquitto_passwd ($7$, PBKDF2-SHA512)', async () => {
    const dir = tmp();
    const file = join(dir, 'mosquitto.pw');
    execFileSync('mosquitto_passwd', ['-c', '-b', file, 'alice', 's3cret']);
    const pf = PasswordFile.parse(readFileSync(file, 'utf8'), file);
    expect(pf.users.get('alice')?.kind).toBe('pbkdf2-sha512');
    expect(await pf.verify('alice', Buffer.from('s3cret'))).toBe(true);
    expect(await pf.verify('alice', Buffer.from('s3creT'))).toBe(false);
  });
});

describe('password file', () => {
  it('parses users, comments and blank lines; names the bad line', async () => {
    const h = await hashPassword('pw', FAST);
    const text = `# users\n\nalice:${h}\r\nbob:${h}\n`;
    const pf = PasswordFile.parse(text, 'pw.txt');
    expect([...pf.users.keys()]).toEqual(['alice', 'bob']);
    expect(() => PasswordFile.parse(`alice:${h}\nbob\n`, 'pw.txt')).toThrow('pw.txt:2: expected user:hash');
    expect(() => PasswordFile.parse(`alice:${h}\nalice:${h}\n`, 'pw.txt')).toThrow('pw.txt:2: user "alice" appears twice');
    expect(() => PasswordFile.parse(`carol:plain\n`, 'pw.txt')).toThrow('pw.txt:1: user "carol": a hash starts with $');
  });

  it('answers false for an unknown user or a missing password, and true only for the right one', async () => {
    const pf = PasswordFile.parse(`alice:${await hashPassword('pw', FAST)}\n`);
    expect(await pf.verify('alice', Buffer.from('pw'))).toBe(true);
    expect(await pf.verify('alice', undefined)).toBe(false);
    expect(await pf.verify('mallory', Buffer.from('pw'))).toBe(false);
    expect(await pf.verify('', Buffer.from('pw'))).toBe(false);
  });

  it('updates one user keeping comments and order; deletes', () => {
    const text = '# header\nalice:$scrypt$old\n# about bob\nbob:$scrypt$b\n';
    const changed = updatePasswordText(text, 'alice', '$scrypt$new');
    expect(changed).toEqual({ existed: true, text: '# header\nalice:$scrypt$new\n# about bob\nbob:$scrypt$b\n' });
    const added = updatePasswordText(text, 'carol', '$scrypt$c');
    expect(added.existed).toBe(false);
    expect(added.text.endsWith('bob:$scrypt$b\ncarol:$scrypt$c\n')).toBe(true);
    const deleted = updatePasswordText(text, 'bob', null);
    expect(deleted).toEqual({ existed: true, text: '# header\nalice:$scrypt$old\n# about bob\n' });
    // a user whose name is a prefix of another is not confused with it
    expect(updatePasswordText('alice2:$x\n', 'alice', null).existed).toBe(false);
    expect(() => updatePasswordText('', 'a:b', 'h')).toThrow(/may not/);
  });
});

describe('edb passwd', () => {
  it('creates the file (mode 0600), adds, changes and deletes users', async () => {
    const file = join(tmp(), 'pw');
    const io = pipeIO('');
    expect(await runPasswd(file, 'alice', { password: 'one!' }, io)).toMatch(/added user "alice"/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await runPasswd(file, 'bob', { password: 'two!' }, io)).toMatch(/added user "bob"/);
    expect(await runPasswd(file, 'alice', { password: 'three!' }, io)).toMatch(/changed the password of user "alice"/);
    let pf = await PasswordFile.load(file);
    expect(await pf.verify('alice', Buffer.from('three!'))).toBe(true);
    expect(await pf.verify('alice', Buffer.from('one!'))).toBe(false);
    expect(await pf.verify('bob', Buffer.from('two!'))).toBe(true);
    // '!' is in no hash encoding: a base64 salt or hash may well contain "one" or "two" by chance
    expect(readFileSync(file, 'utf8')).not.toMatch(/one!|two!|three!/);

    expect(await runPasswd(file, 'bob', { delete: true }, io)).toMatch(/deleted user "bob"/);
    pf = await PasswordFile.load(file);
    expect([...pf.users.keys()]).toEqual(['alice']);
    await expect(runPasswd(file, 'bob', { delete: true }, io)).rejects.toThrow(PasswdError);
  });

  it('reads the password from a pipe when not given', async () => {
    const file = join(tmp(), 'pw');
    await runPasswd(file, 'dave', {}, pipeIO('piped-secret\nignored\n'));
    const pf = await PasswordFile.load(file);
    expect(await pf.verify('dave', Buffer.from('piped-secret'))).toBe(true);
  });

  it('refuses empty passwords, bad names, and files it cannot read back', async () => {
    const dir = tmp();
    const file = join(dir, 'pw');
    await expect(runPasswd(file, 'erin', { password: '' }, pipeIO(''))).rejects.toThrow(/empty passwords/);
    await expect(runPasswd(file, 'a:b', { password: 'x' }, pipeIO(''))).rejects.toThrow(/may not/);
    expect(existsSync(file)).toBe(false);
    writeFileSync(file, 'frank:plaintext\n');
    await expect(runPasswd(file, 'erin', { password: 'x' }, pipeIO(''))).rejects.toThrow(PasswordFileError);
    expect(readFileSync(file, 'utf8')).toBe('frank:plaintext\n');
  });

  it('runs as a commander subcommand', async () => {
    const { Command } = await import('commander');
    const { register } = await import('../../src/cli/passwd.js');
    const program = new Command().exitOverride();
    register(program);
    const file = join(tmp(), 'pw');
    await program.parseAsync(['node', 'edb', 'passwd', file, 'gina', '--password', 'pw']);
    const pf = await PasswordFile.load(file);
    expect(await pf.verify('gina', Buffer.from('pw'))).toBe(true);
  });
});
