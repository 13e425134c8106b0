import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PasswordFile } from '../../src/auth/password-file.js';
import { run } from './auth-stack.js';

/**
 * `edb passwd` on a real terminal (a pseudo-terminal from Python's pty module): it must
 * prompt twice and never echo the password. Runs the built CLI module (npm test builds first).
 */

const CLI = join(process.cwd(), 'dist/src/cli/passwd.js');

const DRIVER = String.raw`
import os, pty, sys, time
cli, file, user, first, second = sys.argv[1:6]
code = ("import { Command } from 'commander'; import { register } from '" + cli + "';"
        "const p = new Command(); p.exitOverride(); register(p);"
        "await p.parseAsync(process.argv.slice(1), { from: 'user' });")
pid, fd = pty.fork()
if pid == 0:
    os.execvp('node', ['node', '--input-type=module', '-e', code, 'passwd', file, user])
out = b''
def read_until(token, timeout=20):
    global out
    end = time.time() + timeout
    while token not in out and time.time() < end:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
read_until(b'Password: ')
os.write(fd, first.encode() + b'\r')
read_until(b'Reenter password: ')
os.write(fd, second.encode() + b'\r')
read_until(b'\x00never')  # read to EOF
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors='replace'))
sys.exit(os.waitstatus_to_exitcode(status))
`;

describe.skipIf(!existsSync(CLI))('edb passwd on a terminal', () => {
  it('prompts twice without echo and writes the hash', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'edb-tty-')), 'pw');
    const r = await run('/usr/bin/python3', ['-c', DRIVER, CLI, file, 'tty-user', 'Typed-Secret-1', 'Typed-Secret-1'], 30_000);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('Password: ');
    expect(r.stdout).toContain('Reenter password: ');
    expect(r.stdout).not.toContain('Typed-Secret-1');
    expect(r.stdout).toMatch(/added user "tty-user"/);
    const pf = PasswordFile.parse(readFileSync(file, 'utf8'));
    expect(await pf.verify('tty-user', Buffer.from('Typed-Secret-1'))).toBe(true);
  });

  it('refuses when the two entries differ', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'edb-tty-')), 'pw');
    const r = await run('/usr/bin/python3', ['-c', DRIVER, CLI, file, 'tty-user', 'one', 'two'], 30_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/the passwords do not match/);
    expect(existsSync(file)).toBe(false);
  });
});
