import { pbkdf2, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../persistence/atomic-file.js';

/**
 * The password file: one user a line, `user:hash`, like mosquitto's and VerneMQ's.
 *
 *   # comment
 *   alice:$scrypt$ln=15,r=8,p=1$<salt, base64>$<hash, base64>
 *   bob:$7$101$<salt, base64>$<hash, base64>      (mosquitto_passwd, PBKDF2-SHA512: read only)
 *
 * `edb passwd` writes scrypt (node:crypto, a maintained memory-hard KDF; no extra dependency)
 * with a 16-byte random salt and N = 2^15, r = 8, p = 1 (32 MiB, ~100 ms on a small core).
 * The parameters travel in each line, so raising them later keeps old lines valid.
 * mosquitto's `$7$` lines are accepted so a mosquitto password file can be used as is;
 * its older `$6$` (one SHA-512 round) is refused as too weak to be called a password hash.
 * Verification runs on the libuv thread pool (async scrypt / pbkdf2), never on the event loop.
 */

export type PasswordHash =
  | { kind: 'scrypt'; log2N: number; r: number; p: number; salt: Buffer; hash: Buffer }
  | { kind: 'pbkdf2-sha512'; iterations: number; salt: Buffer; hash: Buffer };

export class PasswordFileError extends Error {
  readonly code = 'EDB_PASSWORD_FILE_INVALID';
}

/** Defaults for new hashes. */
export const SCRYPT_DEFAULTS = { log2N: 15, r: 8, p: 1, saltBytes: 16, keyBytes: 32 } as const;

/** Bounds on what a file may ask for, so one line cannot make every login cost seconds and GiB. */
const SCRYPT_MAX_LOG2N = 20;
const SCRYPT_MAX_R = 32;
const SCRYPT_MAX_P = 16;
const PBKDF2_MAX_ITERATIONS = 10_000_000;

const B64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** A user name the file can hold: no ':' (the separator), no line breaks, not empty. */
export function validUsername(name: string): boolean {
  return name.length > 0 && name.length <= 65535 && !/[:\r\n\0]/.test(name);
}

function b64(field: string | undefined, what: string): Buffer {
  if (!field || !B64.test(field)) throw new PasswordFileError(`${what} is not base64`);
  return Buffer.from(field, 'base64');
}

/** Parse one stored hash (`$scrypt$...` or `$7$...`). Throws PasswordFileError. */
export function parseHash(text: string): PasswordHash {
  const parts = text.split('$');
  // '', kind, params..., salt, hash
  if (parts[0] !== '') throw new PasswordFileError('a hash starts with $ (plain-text passwords are not accepted)');
  switch (parts[1]) {
    case 'scrypt': {
      if (parts.length !== 5) throw new PasswordFileError('expected $scrypt$ln=N,r=R,p=P$salt$hash');
      const params = new Map<string, number>();
      for (const kv of parts[2]!.split(',')) {
        const m = /^(ln|r|p)=(\d{1,3})$/.exec(kv);
        if (!m) throw new PasswordFileError(`bad scrypt parameter "${kv}"`);
        params.set(m[1]!, Number(m[2]));
      }
      const log2N = params.get('ln');
      const r = params.get('r');
      const p = params.get('p');
      if (log2N === undefined || r === undefined || p === undefined) throw new PasswordFileError('scrypt needs ln, r and p');
      if (log2N < 1 || log2N > SCRYPT_MAX_LOG2N || r < 1 || r > SCRYPT_MAX_R || p < 1 || p > SCRYPT_MAX_P) {
        throw new PasswordFileError(`scrypt parameters out of range (ln 1-${SCRYPT_MAX_LOG2N}, r 1-${SCRYPT_MAX_R}, p 1-${SCRYPT_MAX_P})`);
      }
      const salt = b64(parts[3], 'salt');
      const hash = b64(parts[4], 'hash');
      if (hash.length < 16) throw new PasswordFileError('hash too short');
      return { kind: 'scrypt', log2N, r, p, salt, hash };
    }
    case '7': {
      if (parts.length !== 5 || !/^\d{1,8}$/.test(parts[2]!)) throw new PasswordFileError('expected $7$iterations$salt$hash');
      const iterations = Number(parts[2]);
      if (iterations < 1 || iterations > PBKDF2_MAX_ITERATIONS) throw new PasswordFileError('PBKDF2 iterations out of range');
      const salt = b64(parts[3], 'salt');
      const hash = b64(parts[4], 'hash');
      if (hash.length < 16) throw new PasswordFileError('hash too short');
      return { kind: 'pbkdf2-sha512', iterations, salt, hash };
    }
    case '6':
      throw new PasswordFileError('$6$ (a single SHA-512 round) is too weak; set the password again with `edb passwd`');
    default:
      throw new PasswordFileError(`unknown hash type "$${parts[1] ?? ''}$"`);
  }
}

export function formatHash(h: PasswordHash): string {
  if (h.kind === 'scrypt') return `$scrypt$ln=${h.log2N},r=${h.r},p=${h.p}$${h.salt.toString('base64')}$${h.hash.toString('base64')}`;
  return `$7$${h.iterations}$${h.salt.toString('base64')}$${h.hash.toString('base64')}`;
}

function scryptMaxmem(log2N: number, r: number, p: number): number {
  // node needs 128 * N * r (+ 128 * r * p) bytes; leave headroom.
  return 128 * r * (2 ** log2N + p) * 2 + 1024 * 1024;
}

function derive(password: Buffer, h: PasswordHash): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (h.kind === 'scrypt') {
      const N = 2 ** h.log2N;
      scrypt(password, h.salt, h.hash.length, { N, r: h.r, p: h.p, maxmem: scryptMaxmem(h.log2N, h.r, h.p) }, (err, key) =>
        err ? reject(err) : resolve(key),
      );
    } else {
      pbkdf2(password, h.salt, h.iterations, h.hash.length, 'sha512', (err, key) => (err ? reject(err) : resolve(key)));
    }
  });
}

/** Hash a new password with scrypt and a fresh random salt. */
export async function hashPassword(password: string | Buffer, params: { log2N?: number; r?: number; p?: number } = {}): Promise<string> {
  const h: PasswordHash = {
    kind: 'scrypt',
    log2N: params.log2N ?? SCRYPT_DEFAULTS.log2N,
    r: params.r ?? SCRYPT_DEFAULTS.r,
    p: params.p ?? SCRYPT_DEFAULTS.p,
    salt: randomBytes(SCRYPT_DEFAULTS.saltBytes),
    hash: Buffer.alloc(SCRYPT_DEFAULTS.keyBytes),
  };
  const key = await derive(Buffer.isBuffer(password) ? password : Buffer.from(password, 'utf8'), h);
  return formatHash({ ...h, hash: key });
}

/** Whether `password` matches the stored hash; constant-time comparison of the derived keys. */
export async function verifyPassword(password: Buffer, stored: PasswordHash): Promise<boolean> {
  const key = await derive(password, stored);
  return key.length === stored.hash.length && timingSafeEqual(key, stored.hash);
}

/** One parsed file: users in order, plus the raw lines so `edb passwd` can rewrite it keeping comments. */
export class PasswordFile {
  readonly users = new Map<string, PasswordHash>();
  /**
   * Checked against when the user does not exist, so timing does not tell: scrypt with the
   * cost of the file's first scrypt line (the defaults if none), made on first use.
   */
  private decoy: Promise<PasswordHash> | undefined;

  static parse(text: string, source = 'password file'): PasswordFile {
    const file = new PasswordFile();
    const lines = text.split(/\r?\n/);
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === '' || line.startsWith('#')) continue;
      const colon = line.indexOf(':');
      if (colon <= 0) throw new PasswordFileError(`${source}:${i + 1}: expected user:hash`);
      const user = line.slice(0, colon);
      let hash: PasswordHash;
      try {
        hash = parseHash(line.slice(colon + 1));
      } catch (err) {
        throw new PasswordFileError(`${source}:${i + 1}: user "${user}": ${(err as Error).message}`);
      }
      if (file.users.has(user)) throw new PasswordFileError(`${source}:${i + 1}: user "${user}" appears twice`);
      file.users.set(user, hash);
    }
    return file;
  }

  static async load(path: string): Promise<PasswordFile> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new PasswordFileError(`${path}: cannot read the password file: ${(err as Error).message}`);
    }
    return PasswordFile.parse(text, path);
  }

  /**
   * Check a user's password. An unknown user costs the same scrypt as a known one
   * (against a decoy hash), so neither the answer nor its timing says whether the user exists.
   */
  async verify(username: string, password: Buffer | undefined): Promise<boolean> {
    const stored = this.users.get(username);
    if (stored === undefined || password === undefined) {
      this.decoy ??= this.makeDecoy();
      await verifyPassword(password ?? Buffer.alloc(0), await this.decoy);
      return false;
    }
    return verifyPassword(password, stored);
  }

  private async makeDecoy(): Promise<PasswordHash> {
    let params: { log2N?: number; r?: number; p?: number } = {};
    for (const h of this.users.values()) {
      if (h.kind === 'scrypt') {
        params = { log2N: h.log2N, r: h.r, p: h.p };
        break;
      }
    }
    return parseHash(await hashPassword(randomBytes(16), params));
  }
}

/**
 * Add, change (`hash` given) or delete (`hash` null) one user in the file's text, keeping
 * comments and the order of the other lines. Returns the new text and whether the user existed.
 */
export function updatePasswordText(text: string, username: string, hash: string | null): { text: string; existed: boolean } {
  if (!validUsername(username)) throw new PasswordFileError(`user name "${username}" may not be empty or contain ':' or line breaks`);
  const lines = text === '' ? [] : text.replace(/\r?\n$/, '').split(/\r?\n/);
  let existed = false;
  const out: string[] = [];
  for (const line of lines) {
    const trimmed = line.trim();
    if (!trimmed.startsWith('#') && trimmed.slice(0, trimmed.indexOf(':')) === username && trimmed.includes(':')) {
      existed = true;
      if (hash !== null) out.push(`${username}:${hash}`);
      continue;
    }
    out.push(line);
  }
  if (!existed && hash !== null) out.push(`${username}:${hash}`);
  return { text: out.length === 0 ? '' : out.join('\n') + '\n', existed };
}

/** Write the file atomically (temporary file, fsync, rename), readable by its owner only. */
export async function writePasswordFile(path: string, text: string): Promise<void> {
  await writeFileAtomic(path, text);
}
