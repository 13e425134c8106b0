import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { parseHash, PasswordFile, PasswordFileError, type PasswordHash } from './password-file.js';
import { writeFileAtomic } from '../persistence/atomic-file.js';

/**
 * Who may use the HTTP surfaces (status, /api, the console, the rules API).
 *
 * Roles, each including the one before it:
 *   viewer    status, topics, sessions, metrics, read the rules document and the state store
 *   operator  also change the rules document, publish from the console, bridges
 *   admin     also state-store writes, disconnecting clients, users
 *
 * The admin users file (EDB_ADMIN_USERS_FILE), written by `edb passwd --role ROLE FILE USER`,
 * holds one user a line with the same scrypt hashes as the MQTT password file:
 *
 *   # comment
 *   alice:admin:$scrypt$ln=15,r=8,p=1$<salt>$<hash>
 *
 * API tokens (EDB_ADMIN_TOKENS_FILE, `edb token create --role ROLE`) are for automation:
 * `edb_<id>_<secret>`; the file keeps only the SHA-256 of the whole token (a token is 32
 * random bytes, so a fast hash is enough: nothing to guess), and a revoked token is removed.
 */

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** Whether `have` includes the rights of `need`. */
export function roleAtLeast(have: Role, need: Role): boolean {
  return ROLES.indexOf(have) >= ROLES.indexOf(need);
}

export interface AdminUser {
  role: Role;
  hash: PasswordHash;
}

/** Whether a file's text is in the admin users format (`user:role:$hash`), judged by its first user line. */
export function isAdminUsersText(text: string): boolean {
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const parts = line.split(':');
    return parts.length >= 3 && isRole(parts[1]) && (parts[2] ?? '').startsWith('$');
  }
  return false;
}

export class AdminUsers {
  readonly users = new Map<string, AdminUser>();
  /** Checks unknown users against a decoy, so timing does not say who exists. */
  private readonly checker = new PasswordFile();

  static parse(text: string, source = 'admin users file'): AdminUsers {
    const file = new AdminUsers();
    const lines = text.split(/\r?\n/);
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === '' || line.startsWith('#')) continue;
      const first = line.indexOf(':');
      const second = first < 0 ? -1 : line.indexOf(':', first + 1);
      if (first <= 0 || second < 0) throw new PasswordFileError(`${source}:${i + 1}: expected user:role:hash (write it with \`edb passwd --role ROLE\`)`);
      const user = line.slice(0, first);
      const role = line.slice(first + 1, second);
      if (!isRole(role)) throw new PasswordFileError(`${source}:${i + 1}: user "${user}": role "${role}" is not one of ${ROLES.join(', ')}`);
      let hash: PasswordHash;
      try {
        hash = parseHash(line.slice(second + 1));
      } catch (err) {
        throw new PasswordFileError(`${source}:${i + 1}: user "${user}": ${(err as Error).message}`);
      }
      if (file.users.has(user)) throw new PasswordFileError(`${source}:${i + 1}: user "${user}" appears twice`);
      file.users.set(user, { role, hash });
      file.checker.users.set(user, hash);
    }
    return file;
  }

  static async load(path: string): Promise<AdminUsers> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new PasswordFileError(`${path}: cannot read the admin users file: ${(err as Error).message}`);
    }
    return AdminUsers.parse(text, path);
  }

  /** The user's role when the password is right, otherwise undefined (same cost either way). */
  async verify(username: string, password: Buffer): Promise<Role | undefined> {
    const ok = await this.checker.verify(username, password);
    return ok ? this.users.get(username)?.role : undefined;
  }
}

// ---------------------------------------------------------------------------------------
// API tokens.

export interface TokenRecord {
  id: string;
  name: string;
  role: Role;
  /** SHA-256 of the whole token text, hex. */
  sha256: string;
  createdAt: string;
}

export class TokenFileError extends Error {
  readonly code = 'EDB_TOKEN_FILE_INVALID';
}

const TOKEN_RE = /^edb_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$/;

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function parseTokenFile(text: string, source = 'token file'): TokenRecord[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new TokenFileError(`${source}: not JSON: ${(err as Error).message}`);
  }
  const list = (raw as { tokens?: unknown }).tokens;
  if (!Array.isArray(list)) throw new TokenFileError(`${source}: expected {"tokens": [...]}`);
  return list.map((t: Partial<TokenRecord>, i) => {
    if (typeof t.id !== 'string' || typeof t.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(t.sha256) || !isRole(t.role)) {
      throw new TokenFileError(`${source}: tokens/${i}: expected id, role (${ROLES.join(', ')}) and sha256`);
    }
    return { id: t.id, name: typeof t.name === 'string' ? t.name : '', role: t.role, sha256: t.sha256, createdAt: typeof t.createdAt === 'string' ? t.createdAt : '' };
  });
}

export function formatTokenFile(tokens: readonly TokenRecord[]): string {
  return JSON.stringify({ tokens }, null, 2) + '\n';
}

/** A new token and the record to store for it (the token itself is shown once and never stored). */
export function newToken(role: Role, name: string, now = new Date()): { token: string; record: TokenRecord } {
  const id = randomBytes(4).toString('hex');
  const token = `edb_${id}_${randomBytes(32).toString('base64url')}`;
  return { token, record: { id, name, role, sha256: sha256(token), createdAt: now.toISOString() } };
}

export async function readTokenFile(path: string): Promise<TokenRecord[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TokenFileError(`${path}: ${(err as Error).message}`);
  }
  return parseTokenFile(text, path);
}

export async function writeTokenFile(path: string, tokens: readonly TokenRecord[]): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFileAtomic(path, formatTokenFile(tokens));
}

/**
 * The broker's view of the token file: re-read when its size or modification time changes
 * (checked at each bearer request), so `edb token revoke` takes effect at the next request.
 */
export class TokenStore {
  private stamp = '';
  private byId = new Map<string, TokenRecord>();
  private problem: string | undefined;

  constructor(readonly path: string) {}

  private refresh(): void {
    let stamp: string;
    try {
      const st = statSync(this.path);
      stamp = `${st.size}:${st.mtimeMs}:${st.ino}`;
    } catch {
      stamp = 'missing';
    }
    if (stamp === this.stamp) return;
    this.stamp = stamp;
    if (stamp === 'missing') {
      this.byId = new Map();
      this.problem = undefined;
      return;
    }
    try {
      const records = parseTokenFile(readFileSync(this.path, 'utf8'), this.path);
      this.byId = new Map(records.map((r) => [r.id, r]));
      this.problem = undefined;
    } catch (err) {
      // a broken file accepts no token at all (fail closed) until it is fixed
      this.byId = new Map();
      this.problem = (err as Error).message;
    }
  }

  /** Why the file could not be read, if it could not. */
  get error(): string | undefined {
    this.refresh();
    return this.problem;
  }

  get size(): number {
    this.refresh();
    return this.byId.size;
  }

  /** The token's record when it is valid and not revoked. */
  verify(token: string): TokenRecord | undefined {
    const m = TOKEN_RE.exec(token);
    if (!m) return undefined;
    this.refresh();
    const record = this.byId.get(m[1]!);
    if (!record) return undefined;
    const a = Buffer.from(sha256(token), 'hex');
    const b = Buffer.from(record.sha256, 'hex');
    return a.length === b.length && timingSafeEqual(a, b) ? record : undefined;
  }
}
