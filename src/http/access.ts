/**
 * Who may use the HTTP surfaces: the main HTTP port (status, /api, the console, /rules)
 * and the standalone rules port apply the same policy (see docs/security.md).
 *
 * - /healthz and /readyz are open; /metrics too unless EDB_METRICS_AUTH=true; so are the
 *   console's static files and its login call (they carry no data).
 * - Without admin users (EDB_ADMIN_USERS_FILE unset): requests from EDB_ADMIN_TRUSTED
 *   (default loopback) act as admin; a valid API token acts with its role; anyone else gets
 *   401 with a one-line hint on how to add a user.
 * - With admin users: every other request needs credentials: HTTP Basic (an admin user),
 *   `Authorization: Bearer <token>`, or the console's session cookie (HttpOnly,
 *   SameSite=Strict) from POST /api/login.
 * - State-changing requests (anything but GET/HEAD/OPTIONS) are refused (403) when they
 *   come from another site (Origin not this host, or Sec-Fetch-Site: cross-site), and when
 *   authenticated by the session cookie they also need the session's CSRF token in
 *   `X-EDB-CSRF`.
 * - Failed logins (Basic or the login form) count per address like MQTT logins
 *   (EDB_LOGIN_FAILURE_LIMIT, back-off doubling up to EDB_LOGIN_BACKOFF_MAX_MS): 429.
 * - Every state-changing request, allowed or not, leaves one audit line in the log:
 *   who, role, how authenticated, from where, method, path, status.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { AdminUsers, roleAtLeast, TokenStore, type Role } from '../auth/admin-users.js';
import { addressKey, createLoginLimiter, type LoginLimiter } from '../auth/rate-limit.js';
import { VerifyQueue } from '../auth/verify-queue.js';
import { json, type HttpRequest, type HttpResponse, type ResponseStream } from './server.js';

export type { Role };

/** What a request needs: nothing, or at least this role. */
export type Need = 'open' | Role;

export interface Principal {
  /** The user name; "trusted" for a trusted address, "token:<name>" for a token. */
  user: string;
  role: Role;
  via: 'open' | 'trusted' | 'password' | 'token' | 'session';
  /** The user name the ACL knows this principal by (undefined: anonymous or trusted). */
  aclUser: string | undefined;
}

export const SESSION_COOKIE = 'edb_session';
export const CSRF_HEADER = 'x-edb-csrf';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The access a method and path need (`path` as seen on the main HTTP port: the rules API under /rules). */
export function requiredAccess(method: string, path: string, metricsAuth: boolean): Need {
  const m = method.toUpperCase();
  if (path === '/healthz' || path === '/readyz') return 'open';
  if (path === '/metrics') return metricsAuth ? 'viewer' : 'open';
  // the console shell and its login call carry no data
  if (path === '/' || path === '/console' || path.startsWith('/console/')) return 'open';
  if (path === '/api/login' || path === '/api/logout' || path === '/api/session') return 'open';
  if (SAFE_METHODS.has(m)) return 'viewer';
  if (path === '/rules' || path.startsWith('/rules/')) {
    // a dry run changes nothing, but compiles: operators
    return 'operator';
  }
  if (path === '/api/publish') return 'operator';
  // bridges are added, changed and removed by operators
  if (path === '/api/bridges' || path.startsWith('/api/bridges/')) return 'operator';
  // state-store writes, disconnecting clients, anything else that changes: admins
  return 'admin';
}

/** EDB_ADMIN_TRUSTED: "loopback", "none", or a comma list of addresses and CIDRs (may include "loopback"). */
export function parseTrusted(text: string): BlockList {
  const list = new BlockList();
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '' || item === 'none') continue;
    if (item === 'loopback') {
      list.addSubnet('127.0.0.0', 8, 'ipv4');
      list.addAddress('::1', 'ipv6');
      list.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');
      continue;
    }
    const slash = item.indexOf('/');
    const addr = slash < 0 ? item : item.slice(0, slash);
    const family = isIP(addr);
    if (family === 0) throw new Error(`EDB_ADMIN_TRUSTED: "${item}" is not an address or CIDR (use "loopback", "none", 10.0.0.0/8, ::1, ...)`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (slash < 0) list.addAddress(addr, type);
    else {
      const prefix = Number(item.slice(slash + 1));
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) throw new Error(`EDB_ADMIN_TRUSTED: bad prefix length in "${item}"`);
      list.addSubnet(addr, prefix, type);
    }
  }
  return list;
}

function isTrusted(list: BlockList, address: string): boolean {
  const a = addressKey(address);
  const family = isIP(a);
  if (family === 0) return false;
  return list.check(a, family === 4 ? 'ipv4' : 'ipv6');
}

interface Session {
  user: string;
  csrf: string;
  expiresAt: number;
}

function cookie(req: HttpRequest, name: string): string | undefined {
  const header = req.headers['cookie'];
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** An Authorization header's scheme (lower case) and credentials. */
function authorizationParts(header: string): { scheme: string; value: string } {
  const space = header.indexOf(' ');
  return { scheme: (space < 0 ? header : header.slice(0, space)).toLowerCase(), value: space < 0 ? '' : header.slice(space + 1).trim() };
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export const MAX_SESSIONS = 10_000;

/** How often the credentials of open streams (server-sent events) are checked again. */
export const STREAM_RECHECK_MS = 5_000;

/** An open stream and what it was allowed by, so it can end when that ends. */
interface OpenStream {
  req: HttpRequest;
  need: Need;
  principal: Principal;
  /** The users-file entry of a Basic login when the stream opened (a new password ends it). */
  hashAtOpen: string | undefined;
  out: ResponseStream;
}

export interface HttpAccessOptions {
  now?: () => number;
  /** Sessions cookies get `Secure` (the listener speaks HTTPS). */
  secure?: boolean;
}

export interface AuthDecision {
  principal?: Principal;
  response?: HttpResponse;
}

export class HttpAccess {
  private readonly trusted: BlockList;
  private readonly tokens: TokenStore;
  private readonly limiter: LoginLimiter;
  private readonly verifyQueue: VerifyQueue;
  private readonly sessions = new Map<string, Session>();
  private readonly streams = new Set<OpenStream>();
  private streamTimer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  private users: AdminUsers | undefined;
  private usersStamp = '';
  private usersError: string | undefined;
  private readonly alog: Logger;
  secure: boolean;

  constructor(
    private readonly config: Config,
    log: Logger,
    options: HttpAccessOptions = {},
  ) {
    this.alog = log.child({ part: 'http-access' });
    this.now = options.now ?? Date.now;
    this.secure = options.secure ?? false;
    this.trusted = parseTrusted(config.adminTrusted);
    this.tokens = new TokenStore(config.adminTokensFile ?? join(config.dataDir, 'admin-tokens.json'));
    this.limiter = createLoginLimiter(config);
    this.verifyQueue = new VerifyQueue(2, 32, this.now);
    if (config.adminUsersFile) {
      // a missing or broken file at start stops the start: better than an open door
      this.readUsers(true);
      this.alog.info({ users: this.users?.users.size ?? 0, file: config.adminUsersFile }, 'HTTP surfaces need credentials (admin users file)');
    } else {
      this.alog.info({ trusted: config.adminTrusted }, `no admin users: the HTTP admin surfaces answer only EDB_ADMIN_TRUSTED (${config.adminTrusted}) and API tokens`);
    }
  }

  /** Whether admin users are configured (then every non-open request needs credentials). */
  get usersConfigured(): boolean {
    return this.config.adminUsersFile !== null;
  }

  /** Re-read the users file when it changed (size, time, inode); a broken file keeps the previous users. */
  private readUsers(atStart = false): AdminUsers | undefined {
    const path = this.config.adminUsersFile;
    if (!path) return undefined;
    let stamp: string;
    try {
      const st = statSync(path);
      stamp = `${st.size}:${st.mtimeMs}:${st.ino}`;
    } catch (err) {
      if (atStart) throw new Error(`EDB_ADMIN_USERS_FILE=${path}: ${(err as Error).message}`);
      stamp = 'missing';
    }
    if (stamp === this.usersStamp) return this.users;
    this.usersStamp = stamp;
    if (stamp === 'missing') {
      // fail closed: nobody logs in by password until the file is back
      this.users = new AdminUsers();
      this.alog.error({ file: path }, 'the admin users file is gone: password logins refused until it is back');
      return this.users;
    }
    try {
      const text = readFileSync(path, 'utf8');
      this.users = AdminUsers.parse(text, path);
      this.usersError = undefined;
      if (!atStart) this.alog.info({ users: this.users.users.size }, 'admin users file reloaded');
    } catch (err) {
      if (atStart) throw new Error(`EDB_ADMIN_USERS_FILE: ${(err as Error).message}`);
      this.usersError = (err as Error).message;
      this.alog.error({ err: this.usersError }, 'admin users file not reloaded; the previous users stay');
    }
    return this.users;
  }

  private deny(status: number, error: string, message: string, headers: Record<string, string> = {}): AuthDecision {
    return { response: json(status, { error, message }, headers) };
  }

  private unauthorized(req: HttpRequest, message: string): AuthDecision {
    // no Basic challenge for the console's own calls (a browser would pop up its dialog)
    const fromConsole = req.headers['x-requested-with'] === 'edb-console';
    return this.deny(401, 'unauthorized', message, fromConsole ? {} : { 'www-authenticate': 'Basic realm="edb", charset="UTF-8"' });
  }

  private hint(req: HttpRequest): string {
    if (this.usersConfigured) return 'credentials needed: HTTP Basic with an admin user, a bearer token (`edb token create`), or log in on the console';
    return `no admin user is set up and ${addressKey(req.remoteAddress)} is not in EDB_ADMIN_TRUSTED: add one with \`edb passwd --role admin FILE USER\` and set EDB_ADMIN_USERS_FILE=FILE (or use a token from \`edb token create\`)`;
  }

  private throttled(address: string): AuthDecision | undefined {
    const gate = this.limiter.check(address, this.now());
    if (gate.allowed) return undefined;
    const seconds = Math.max(1, Math.ceil(gate.retryAfterMs / 1000));
    return this.deny(429, 'too_many_failed_logins', `too many failed logins from ${address}: retry in ${seconds} s`, { 'retry-after': String(seconds) });
  }

  /** Checks a user name and password (scrypt, bounded concurrency, back-off per address). */
  private async checkPassword(req: HttpRequest, user: string, password: string): Promise<{ role: Role } | AuthDecision> {
    const address = addressKey(req.remoteAddress);
    const blocked = this.throttled(address);
    if (blocked) return blocked;
    const users = this.readUsers();
    if (!users) return this.unauthorized(req, this.hint(req));
    const verdict = await this.verifyQueue.run(() => users.verify(user, Buffer.from(password, 'utf8')), this.now() + 10_000);
    if (verdict === 'busy' || verdict === 'expired') return this.deny(503, 'busy', 'too many logins at once, retry shortly', { 'retry-after': '1' });
    if (verdict === undefined) {
      const backoffMs = this.limiter.failure(address, this.now());
      this.alog.warn({ user, address, backoffMs }, 'HTTP login refused');
      return this.unauthorized(req, 'bad user name or password');
    }
    this.limiter.success(address);
    return { role: verdict };
  }

  /**
   * The live session of a request's cookie with its user's role now: undefined (and forgotten)
   * when it expired or its user is gone from the users file. Does not extend it.
   */
  private liveSession(req: HttpRequest): { id: string; session: Session; role: Role } | undefined {
    const id = cookie(req, SESSION_COOKIE);
    if (!id) return undefined;
    const session = this.sessions.get(id);
    if (!session) return undefined;
    if (this.now() >= session.expiresAt) {
      this.sessions.delete(id);
      return undefined;
    }
    // the role follows the users file; a deleted user's session ends
    const role = this.readUsers()?.users.get(session.user)?.role;
    if (!role) {
      this.sessions.delete(id);
      return undefined;
    }
    return { id, session, role };
  }

  /** The live session of a request, extended by the session TTL (a request uses it). */
  private sessionFor(req: HttpRequest): { id: string; session: Session; role: Role } | undefined {
    const live = this.liveSession(req);
    if (live) live.session.expiresAt = this.now() + this.config.adminSessionTtl * 1000;
    return live;
  }

  /** A state-changing request from another site (CSRF) is refused whatever its credentials. */
  private crossSite(req: HttpRequest): boolean {
    if (req.headers['sec-fetch-site'] === 'cross-site') return true;
    const origin = req.headers['origin'];
    if (origin === undefined) return false;
    if (origin === 'null') return true;
    try {
      return new URL(origin).host !== (req.headers['host'] ?? '');
    } catch {
      return true;
    }
  }

  /** Who is asking, and whether they may: a principal, or the response to send instead. */
  async authorize(req: HttpRequest, need: Need): Promise<AuthDecision> {
    const changing = !SAFE_METHODS.has(req.method);
    if (changing && this.crossSite(req)) return this.deny(403, 'cross_site', 'cross-site request refused: state-changing requests must come from this host');
    if (need === 'open') return { principal: { user: 'anonymous', role: 'viewer', via: 'open', aclUser: undefined } };

    let principal: Principal | undefined;
    const authz = req.headers['authorization'];
    if (authz !== undefined) {
      const { scheme, value } = authorizationParts(authz);
      if (scheme === 'bearer') {
        const problem = this.tokens.error;
        const record = this.tokens.verify(value);
        if (!record) {
          if (problem) this.alog.error({ err: problem }, 'the token file cannot be read: every token is refused');
          return this.unauthorized(req, 'the token is not valid (revoked, or never issued)');
        }
        const name = record.name || record.id;
        principal = { user: `token:${name}`, role: record.role, via: 'token', aclUser: name };
      } else if (scheme === 'basic') {
        if (!this.usersConfigured) return this.unauthorized(req, this.hint(req));
        const decoded = Buffer.from(value, 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        if (colon < 0) return this.unauthorized(req, 'malformed Basic credentials');
        const user = decoded.slice(0, colon);
        const checked = await this.checkPassword(req, user, decoded.slice(colon + 1));
        if (!('role' in checked)) return checked;
        principal = { user, role: checked.role, via: 'password', aclUser: user };
      } else {
        return this.unauthorized(req, `authorization scheme "${scheme}" is not supported (Basic or Bearer)`);
      }
    } else {
      const s = this.sessionFor(req);
      if (s) {
        if (changing) {
          const csrf = req.headers[CSRF_HEADER];
          if (csrf === undefined || !sameText(csrf, s.session.csrf)) return this.deny(403, 'csrf', `a state-changing request with the session cookie needs the session's ${CSRF_HEADER} header`);
        }
        principal = { user: s.session.user, role: s.role, via: 'session', aclUser: s.session.user };
      } else if (!this.usersConfigured && isTrusted(this.trusted, req.remoteAddress)) {
        principal = { user: 'trusted', role: 'admin', via: 'trusted', aclUser: undefined };
      }
    }
    if (!principal) return this.unauthorized(req, this.hint(req));
    if (!roleAtLeast(principal.role, need)) {
      return { principal, response: json(403, { error: 'forbidden', message: `${principal.user} (${principal.role}) may not ${req.method} ${req.path}: it needs the ${need} role` }) };
    }
    return { principal };
  }

  /** Gate a handler: authorize, run, and write the audit line for changes. */
  async guard(req: HttpRequest, need: Need, run: (req: HttpRequest) => Promise<HttpResponse>): Promise<HttpResponse> {
    const decision = await this.authorize(req, need);
    let response: HttpResponse;
    if (decision.response) response = decision.response;
    else {
      req.principal = decision.principal;
      response = await run(req);
      if (response.stream && need !== 'open' && decision.principal) response = this.tracked(req, need, decision.principal, response);
    }
    if (!SAFE_METHODS.has(req.method) && req.path !== '/api/login' && req.path !== '/api/logout') this.audit(req, decision.principal, response.status);
    return response;
  }

  audit(req: HttpRequest, principal: Principal | undefined, status: number, what?: string): void {
    const who = principal && principal.via !== 'open' ? principal.user : 'unauthenticated';
    this.alog.info(
      { audit: { who, role: principal?.role, via: principal?.via, from: addressKey(req.remoteAddress), method: req.method, path: req.path, status } },
      `audit: ${who} ${what ?? `${req.method} ${req.path}`} from ${addressKey(req.remoteAddress)}: ${status}`,
    );
  }

  // ---- the console's login

  private parseLogin(req: HttpRequest): { user: string; password: string } | undefined {
    const body = req.body.toString('utf8');
    const type = req.headers['content-type'] ?? '';
    try {
      if (type.startsWith('application/x-www-form-urlencoded')) {
        const form = new URLSearchParams(body);
        const user = form.get('user');
        const password = form.get('password');
        return user !== null && password !== null ? { user, password } : undefined;
      }
      const v = JSON.parse(body) as { user?: unknown; password?: unknown };
      return typeof v.user === 'string' && typeof v.password === 'string' ? { user: v.user, password: v.password } : undefined;
    } catch {
      return undefined;
    }
  }

  private sessionCookie(id: string, maxAge: number): string {
    return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${this.secure ? '; Secure' : ''}`;
  }

  /** POST /api/login {user, password} (JSON or a form): sets the session cookie, answers the CSRF token. */
  async login(req: HttpRequest): Promise<HttpResponse> {
    if (req.method !== 'POST') return json(405, { error: 'method_not_allowed', message: 'POST user and password' }, { allow: 'POST' });
    if (this.crossSite(req)) return json(403, { error: 'cross_site', message: 'cross-site login refused' });
    if (!this.usersConfigured) return json(409, { error: 'no_users', message: 'no admin users are set up (EDB_ADMIN_USERS_FILE); trusted addresses need no login' });
    const creds = this.parseLogin(req);
    if (!creds) return json(400, { error: 'bad_request', message: 'expected {"user": ..., "password": ...}' });
    const checked = await this.checkPassword(req, creds.user, creds.password);
    if (!('role' in checked)) {
      this.audit(req, undefined, checked.response!.status, `login as ${JSON.stringify(creds.user)}`);
      const r = checked.response!;
      // the login form shows the message; no Basic challenge here
      return { ...r, headers: Object.fromEntries(Object.entries(r.headers ?? {}).filter(([k]) => k !== 'www-authenticate')) };
    }
    const now = this.now();
    for (const [id, s] of this.sessions) if (now >= s.expiresAt) this.sessions.delete(id);
    if (this.sessions.size >= MAX_SESSIONS) {
      const oldest = this.sessions.keys().next();
      if (!oldest.done) this.sessions.delete(oldest.value);
    }
    const id = randomBytes(32).toString('base64url');
    const csrf = randomBytes(24).toString('base64url');
    this.sessions.set(id, { user: creds.user, csrf, expiresAt: now + this.config.adminSessionTtl * 1000 });
    const principal: Principal = { user: creds.user, role: checked.role, via: 'session', aclUser: creds.user };
    this.audit(req, principal, 200, 'logged in');
    return json(200, { user: creds.user, role: checked.role, csrf }, { 'set-cookie': this.sessionCookie(id, this.config.adminSessionTtl) });
  }

  /**
   * A stream (server-sent events) lives as long as what allowed it: it is closed when its
   * session is logged out (at once), and when a check every STREAM_RECHECK_MS finds its
   * session expired, its user gone, demoted below what the path needs or given a new
   * password, or its token revoked. A trusted address stays trusted.
   */
  private tracked(req: HttpRequest, need: Need, principal: Principal, response: HttpResponse): HttpResponse {
    const open = response.stream!;
    const hashAtOpen = principal.via === 'password' && principal.aclUser !== undefined ? this.hashOf(principal.aclUser) : undefined;
    return {
      ...response,
      stream: (out) => {
        const entry: OpenStream = { req, need, principal, hashAtOpen, out };
        this.streams.add(entry);
        out.onClose(() => {
          this.streams.delete(entry);
          if (this.streams.size === 0 && this.streamTimer) {
            clearInterval(this.streamTimer);
            this.streamTimer = undefined;
          }
        });
        if (!this.streamTimer) {
          this.streamTimer = setInterval(() => this.recheckStreams(), STREAM_RECHECK_MS);
          this.streamTimer.unref();
        }
        open(out);
      },
    };
  }

  private hashOf(user: string): string | undefined {
    const h = this.readUsers()?.users.get(user)?.hash;
    return h ? `${h.kind}:${h.salt.toString('base64')}:${h.hash.toString('base64')}` : undefined;
  }

  /** Whether an open stream's credentials still allow it (no password is hashed again). */
  private stillAllowed(s: OpenStream): boolean {
    const need = s.need as Role;
    switch (s.principal.via) {
      case 'session': {
        const live = this.liveSession(s.req);
        return live !== undefined && roleAtLeast(live.role, need);
      }
      case 'token': {
        const record = this.tokens.verify(authorizationParts(s.req.headers['authorization'] ?? '').value);
        return record !== undefined && roleAtLeast(record.role, need);
      }
      case 'password': {
        const user = s.principal.aclUser!;
        const role = this.readUsers()?.users.get(user)?.role;
        return role !== undefined && roleAtLeast(role, need) && this.hashOf(user) === s.hashAtOpen;
      }
      default:
        return true;
    }
  }

  private recheckStreams(): void {
    for (const s of [...this.streams]) {
      if (this.stillAllowed(s)) continue;
      this.alog.info({ user: s.principal.user, path: s.req.path }, 'an open stream ended: its credentials no longer allow it');
      s.out.close();
    }
  }

  /** Number of open streams (server-sent events) tracked (tests, status). */
  get openStreams(): number {
    return this.streams.size;
  }

  /** POST /api/logout: ends the session. */
  logout(req: HttpRequest): HttpResponse {
    if (req.method !== 'POST') return json(405, { error: 'method_not_allowed', message: 'POST' }, { allow: 'POST' });
    if (this.crossSite(req)) return json(403, { error: 'cross_site', message: 'cross-site request refused' });
    const s = this.sessionFor(req);
    if (s) {
      const csrf = req.headers[CSRF_HEADER];
      if (csrf === undefined || !sameText(csrf, s.session.csrf)) return json(403, { error: 'csrf', message: `logout needs the ${CSRF_HEADER} header` });
      this.sessions.delete(s.id);
      this.audit(req, { user: s.session.user, role: s.role, via: 'session', aclUser: s.session.user }, 200, 'logged out');
      // the session's open streams end with it
      for (const open of [...this.streams]) if (open.principal.via === 'session' && cookie(open.req, SESSION_COOKIE) === s.id) open.out.close();
    }
    return json(200, { ok: true }, { 'set-cookie': this.sessionCookie('', 0) });
  }

  /** GET /api/session: who the console is (user, role, CSRF token), or 401 with how to log in. */
  async session(req: HttpRequest): Promise<HttpResponse> {
    const s = this.sessionFor(req);
    if (s) return json(200, { user: s.session.user, role: s.role, via: 'session', csrf: s.session.csrf, login: true });
    const decision = await this.authorize({ ...req, method: 'GET' }, 'viewer');
    if (decision.response) return json(401, { error: 'unauthorized', message: this.hint(req), login: this.usersConfigured });
    const p = decision.principal!;
    return json(200, { user: p.user, role: p.role, via: p.via, csrf: null, login: this.usersConfigured });
  }
}
