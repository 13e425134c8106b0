import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { BrokerApi } from '../broker/api.js';
import type { AuthenticateResult, ClientInfo, ConnectRequest } from '../broker/hooks.js';
import type { Message, QoS } from '../mqtt/message.js';
import { ClientAcl, loadAclFile, loadAclFileSync, mergeAcl, parseAclSection, type AclDocument } from './acl.js';
import { PasswordFile, parseHash, type PasswordHash } from './password-file.js';
import { addressKey, createLoginLimiter, type LoginLimiter } from './rate-limit.js';
import { VerifyQueue } from './verify-queue.js';
import { RC } from '../mqtt/reason-codes.js';

/** Password checks at once (each a 32 MiB scrypt on the libuv pool of 4) and waiting; see VerifyQueue. */
const VERIFY_CONCURRENCY = 2;
const VERIFY_WAITING = 64;

/**
 * Who may connect, publish, subscribe and receive.
 *
 * Authentication, in order:
 *  1. an MQTT 5 Authentication Method: refused with 0x8C (enhanced auth is not supported);
 *  2. a verified client certificate: the user name is its subject, or the field named by
 *     EDB_CERT_IDENTITY_FIELD (e.g. CN); the CONNECT user name and password are ignored;
 *  3. a user name: checked against EDB_PASSWORD_FILE (and the config file's `users`);
 *     without any password source it is taken on trust when anonymous access is on;
 *  4. no user name: allowed when EDB_ALLOW_ANONYMOUS (default true, with a warning).
 * Failures answer 0x86 (bad user name or password) whether or not the user exists, are
 * logged, and count against the source address (LoginLimiter); an address in back-off
 * gets 0x9F (connection rate exceeded) without a password check.
 *
 * Authorization: the ACL (EDB_ACL_FILE and/or the config file's `acl` section), checked on
 * PUBLISH (incl. will and retained), SUBSCRIBE (per filter) and each delivery. Without an
 * ACL everything is allowed.
 *
 * Both files are re-read on SIGHUP and when they change (fs.watch on the folder, debounced);
 * a file that no longer parses is reported and the previous rules stay in force.
 */

/** What the state store's per-key rules match on. */
export interface Identity {
  clientId: string;
  /** The authenticated user name (the certificate identity for certificate clients); undefined when anonymous. */
  username: string | undefined;
  certificateSubject?: string;
  /** Subject fields of the client certificate (CN, O, OU, ...), for rules by certificate attribute. */
  certificateFields?: Readonly<Record<string, string>>;
}

export interface AuthCounters {
  loginsSucceeded: number;
  loginsFailed: number;
  loginsThrottled: number;
  /** Refused with 0x89 because too many password checks were already in progress. */
  loginsBusy: number;
  publishDenied: number;
  subscribeDenied: number;
  deliveryDenied: number;
  reloads: number;
  reloadErrors: number;
}

export interface AuthService {
  /** Identity of a connected client, for per-key rules elsewhere (state store). */
  identityFor(client: ClientInfo): Identity;
  canPublish(client: ClientInfo, topic: string): boolean;
  canRead(client: ClientInfo, topic: string): boolean;
  canSubscribe(client: ClientInfo, filter: string): boolean;
  /**
   * What the ACL allows a user who is not an MQTT client (the author of a rules document):
   * everything is allowed while there is no ACL (`aclEnabled`). `%c` patterns grant nothing to such a user.
   */
  accessFor(username: string | undefined): { canReadAll(filter: string): boolean; canWriteAll(filter: string): boolean; canWrite(topic: string): boolean };
  /** Re-read the password file and ACL now; resolves once the new rules are in force (or rejected). */
  reload(): Promise<void>;
  /** Whether an ACL is configured (otherwise every topic is allowed). */
  readonly aclEnabled: boolean;
  readonly counters: Readonly<AuthCounters>;
  /** Password checks hashing now and waiting (gauges, for metrics). */
  readonly passwordChecks: { readonly active: number; readonly queued: number };
  close(): Promise<void>;
}

export interface AuthServiceOptions {
  /** Re-read the config file's sections on reload (server.ts passes `() => loadConfig().sections`). */
  readSections?: () => Record<string, unknown>;
  /** Debounce for file-change reloads. */
  watchDebounceMs?: number;
  /** Listen for SIGHUP (default true). Tests embedding several brokers may turn it off. */
  handleSighup?: boolean;
  /** Reload when the files change (default true). */
  watchFiles?: boolean;
  /** Clock, for tests of the login limiter. */
  now?: () => number;
}

const USERS_SECTION_ERROR = 'users (config file): expected a mapping of user name to a hash written by `edb passwd`';

function usersFromSection(section: unknown): Map<string, PasswordHash> {
  const users = new Map<string, PasswordHash>();
  if (section === undefined || section === null) return users;
  if (typeof section !== 'object' || Array.isArray(section)) throw new ConfigError(USERS_SECTION_ERROR);
  for (const [user, hash] of Object.entries(section as Record<string, unknown>)) {
    if (typeof hash !== 'string') throw new ConfigError(`${USERS_SECTION_ERROR} (users.${user})`);
    try {
      users.set(user, parseHash(hash));
    } catch (err) {
      throw new ConfigError(`users.${user} (config file): ${(err as Error).message}`);
    }
  }
  return users;
}

function aclFromSection(section: unknown): AclDocument | null {
  if (section === undefined || section === null) return null;
  return parseAclSection(section);
}

interface Rules {
  /** null: no password source configured at all. */
  passwords: PasswordFile | null;
  /** null: no ACL configured, everything allowed. */
  acl: AclDocument | null;
}

function combine(fileUsers: PasswordFile | null, sectionUsers: Map<string, PasswordHash>, fileAcl: AclDocument | null, sectionAcl: AclDocument | null): Rules {
  let passwords: PasswordFile | null = null;
  if (fileUsers || sectionUsers.size > 0) {
    passwords = new PasswordFile();
    for (const [u, h] of sectionUsers) passwords.users.set(u, h);
    // the password file wins over the config file for a user named in both
    if (fileUsers) for (const [u, h] of fileUsers.users) passwords.users.set(u, h);
  }
  const acl = fileAcl && sectionAcl ? mergeAcl(fileAcl, sectionAcl) : (fileAcl ?? sectionAcl);
  return { passwords, acl };
}

function identityName(certificateSubject: string | undefined, fields: Readonly<Record<string, string>> | undefined, field: string | null): string | undefined {
  if (certificateSubject === undefined) return undefined;
  if (field === null) return certificateSubject;
  const value = fields?.[field];
  return value === undefined || value === '' ? undefined : value;
}

export function createAuthService(broker: BrokerApi, config: Config, log: Logger, options: AuthServiceOptions = {}): AuthService {
  const alog = log.child({ part: 'auth' });
  const now = options.now ?? Date.now;
  const limiter: LoginLimiter = createLoginLimiter(config);
  const verifyQueue = new VerifyQueue(VERIFY_CONCURRENCY, VERIFY_WAITING, now);
  let busyLoggedAt = 0;
  const counters: AuthCounters = {
    loginsSucceeded: 0,
    loginsFailed: 0,
    loginsThrottled: 0,
    loginsBusy: 0,
    publishDenied: 0,
    subscribeDenied: 0,
    deliveryDenied: 0,
    reloads: 0,
    reloadErrors: 0,
  };

  // ---- start-up: read everything synchronously so a bad file stops the start with a clear message
  let rules: Rules;
  try {
    const fileUsers = config.passwordFile ? PasswordFile.parse(readText(config.passwordFile, 'password file'), config.passwordFile) : null;
    const fileAcl = config.aclFile ? loadAclFileSync(config.aclFile) : null;
    rules = combine(fileUsers, usersFromSection(config.sections['users']), fileAcl, aclFromSection(config.sections['acl']));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError((err as Error).message);
  }
  let generation = 0;
  const clientAcls = new Map<string, ClientAcl>();

  const tlsClientCerts = config.tlsCa !== null;
  if (config.allowAnonymous) {
    alog.warn('anonymous access is on: clients without a user name may connect; set EDB_ALLOW_ANONYMOUS=false to refuse them');
  } else if (!rules.passwords && !tlsClientCerts) {
    alog.warn('anonymous access is off and there is no password file or client-certificate CA: no client can connect');
  }
  if (!rules.passwords && config.allowAnonymous && rules.acl && rules.acl.users.size > 0) {
    // user names in CONNECT are then taken on trust (certificate identities are still verified)
    alog.warn('the ACL has "user" sections but no password file is set: user names are not verified');
  }
  logRules('auth rules loaded');

  function readText(path: string, what: string): string {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`${path}: cannot read the ${what}: ${(err as Error).message}`);
    }
  }

  function logRules(msg: string): void {
    alog.info(
      {
        users: rules.passwords?.users.size ?? 0,
        acl: rules.acl ? { anonymousRules: rules.acl.anonymous.length, users: rules.acl.users.size, patterns: rules.acl.patterns.length } : 'off',
        allowAnonymous: config.allowAnonymous,
      },
      msg,
    );
  }

  function aclFor(client: { clientId: string; username: string | undefined }): ClientAcl | null {
    const acl = rules.acl;
    if (!acl) return null;
    const cached = clientAcls.get(client.clientId);
    if (cached && cached.generation === generation && cached.username === client.username) return cached;
    const fresh = new ClientAcl(acl, client.clientId, client.username, generation);
    clientAcls.set(client.clientId, fresh);
    return fresh;
  }

  // ---- authentication

  function refuse(request: ConnectRequest, reasonCode: number, why: string, countFailure: boolean): AuthenticateResult {
    const address = addressKey(request.remoteAddress);
    let backoffMs = 0;
    if (countFailure) {
      counters.loginsFailed++;
      backoffMs = limiter.failure(address, now());
    }
    // One message for unknown users and wrong passwords alike; `why` is for the operator.
    alog.warn({ clientId: request.clientId, username: request.username, address, reason: why, backoffMs }, 'login refused');
    return { ok: false, reasonCode };
  }

  async function authenticate(request: ConnectRequest): Promise<AuthenticateResult> {
    if (request.authenticationMethod !== undefined) {
      // [MQTT-4.12.0-1] enhanced authentication is not supported: 0x8C Bad authentication method
      return refuse(request, RC.BAD_AUTHENTICATION_METHOD, 'authentication method not supported', false);
    }

    const certName = identityName(request.certificateSubject, request.certificateFields, config.certIdentityField);
    if (request.certificateSubject !== undefined) {
      if (certName === undefined) {
        return refuse(request, RC.NOT_AUTHORIZED, `certificate subject has no ${config.certIdentityField} field`, true);
      }
      counters.loginsSucceeded++;
      alog.debug({ clientId: request.clientId, username: certName }, 'client certificate accepted');
      return { ok: true, username: certName };
    }

    const address = addressKey(request.remoteAddress);
    const gate = limiter.check(address, now());
    if (!gate.allowed) {
      counters.loginsThrottled++;
      alog.debug({ clientId: request.clientId, address, retryAfterMs: gate.retryAfterMs }, 'login refused: address is backing off');
      return { ok: false, reasonCode: RC.CONNECTION_RATE_EXCEEDED, reasonString: 'too many failed logins, retry later' };
    }

    if (request.username === undefined) {
      if (config.allowAnonymous) {
        counters.loginsSucceeded++;
        return { ok: true };
      }
      return refuse(request, RC.NOT_AUTHORIZED, 'anonymous access is off', true);
    }

    const passwords = rules.passwords;
    if (!passwords) {
      if (config.allowAnonymous) {
        counters.loginsSucceeded++;
        return { ok: true };
      }
      return refuse(request, RC.BAD_USER_NAME_OR_PASSWORD, 'no password file to check the user against', true);
    }

    let ok: boolean | 'busy' | 'expired' = false;
    try {
      const username = request.username;
      ok = await verifyQueue.run(() => passwords.verify(username, request.password), now() + config.connectTimeoutMs);
    } catch (err) {
      alog.error({ err, clientId: request.clientId }, 'password check failed');
      return { ok: false, reasonCode: RC.UNSPECIFIED_ERROR };
    }
    if (ok === 'busy' || ok === 'expired') {
      counters.loginsBusy++;
      if (now() - busyLoggedAt >= 10_000) {
        busyLoggedAt = now();
        alog.warn({ address, total: counters.loginsBusy }, 'too many password checks at once: CONNECT refused with 0x89 (server busy)');
      }
      return { ok: false, reasonCode: RC.SERVER_BUSY, reasonString: 'server busy, retry later' };
    }
    if (!ok) return refuse(request, RC.BAD_USER_NAME_OR_PASSWORD, 'bad user name or password', true);
    limiter.success(address);
    counters.loginsSucceeded++;
    return { ok: true };
  }

  // ---- authorization (synchronous: called on the publish and delivery paths)

  function authorizePublish(client: ClientInfo, message: Message): number {
    const acl = aclFor(client);
    if (!acl || acl.canWrite(message.topic)) return 0;
    counters.publishDenied++;
    alog.debug({ clientId: client.clientId, username: client.username, topic: message.topic }, 'publish denied');
    return RC.NOT_AUTHORIZED;
  }

  function authorizeSubscribe(client: ClientInfo, filter: string, qos: QoS): number {
    const acl = aclFor(client);
    if (!acl || acl.canSubscribe(filter)) return qos;
    counters.subscribeDenied++;
    alog.debug({ clientId: client.clientId, username: client.username, filter }, 'subscribe denied');
    return RC.NOT_AUTHORIZED;
  }

  function authorizeDelivery(client: ClientInfo, message: Message): boolean {
    const acl = aclFor(client);
    if (!acl || acl.canRead(message.topic)) return true;
    counters.deliveryDenied++;
    return false;
  }

  broker.addHooks({
    authenticate,
    authorizePublish,
    authorizeSubscribe,
    authorizeDelivery,
    onConnect(client) {
      clientAcls.delete(client.clientId);
    },
    onDisconnect(client) {
      clientAcls.delete(client.clientId);
    },
  });

  // ---- reloading

  let reloading: Promise<void> | null = null;
  let again = false;

  async function reloadOnce(): Promise<void> {
    try {
      const sections = options.readSections ? options.readSections() : config.sections;
      const fileUsers = config.passwordFile ? await PasswordFile.load(config.passwordFile) : null;
      const fileAcl = config.aclFile ? await loadAclFile(config.aclFile) : null;
      rules = combine(fileUsers, usersFromSection(sections['users']), fileAcl, aclFromSection(sections['acl']));
      generation++;
      clientAcls.clear();
      counters.reloads++;
      logRules('auth rules reloaded');
    } catch (err) {
      counters.reloadErrors++;
      alog.error({ err: (err as Error).message }, 'auth rules not reloaded; the previous rules stay in force');
    }
  }

  function reload(): Promise<void> {
    if (reloading) {
      again = true;
      return reloading;
    }
    reloading = (async () => {
      do {
        again = false;
        await reloadOnce();
      } while (again);
      reloading = null;
    })();
    return reloading;
  }

  const onSighup = (): void => {
    alog.info('SIGHUP: reloading password file and ACL');
    void reload();
  };
  if (options.handleSighup !== false) process.on('SIGHUP', onSighup);

  const watchers: FSWatcher[] = [];
  let debounce: NodeJS.Timeout | undefined;
  const debounceMs = options.watchDebounceMs ?? 200;
  // Watch the folder, not the file: editors and `edb passwd` replace the file by rename.
  const watched = new Map<string, Set<string>>();
  for (const file of options.watchFiles === false ? [] : [config.passwordFile, config.aclFile]) {
    if (!file) continue;
    const dir = dirname(resolve(file));
    if (!watched.has(dir)) watched.set(dir, new Set());
    watched.get(dir)!.add(basename(file));
  }
  for (const [dir, names] of watched) {
    try {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        if (name !== null && !names.has(name.toString())) return;
        clearTimeout(debounce);
        debounce = setTimeout(() => void reload(), debounceMs);
      });
      w.on('error', (err) => alog.warn({ err: err.message, dir }, 'cannot watch auth files; SIGHUP still reloads'));
      watchers.push(w);
    } catch (err) {
      alog.warn({ err: (err as Error).message, dir }, 'cannot watch auth files; SIGHUP still reloads');
    }
  }

  return {
    identityFor(client: ClientInfo): Identity {
      const id: Identity = { clientId: client.clientId, username: client.username };
      if (client.certificateSubject !== undefined) id.certificateSubject = client.certificateSubject;
      if (client.certificateFields !== undefined) id.certificateFields = client.certificateFields;
      return id;
    },
    canPublish: (client, topic) => aclFor(client)?.canWrite(topic) ?? true,
    canRead: (client, topic) => aclFor(client)?.canRead(topic) ?? true,
    canSubscribe: (client, filter) => aclFor(client)?.canSubscribe(filter) ?? true,
    accessFor(username) {
      // a client id with "/" makes %c patterns unusable: the author is not a client
      const view = { clientId: `rules/${username ?? ''}`, username };
      return {
        canReadAll: (filter) => aclFor(view)?.canSubscribe(filter) ?? true,
        canWriteAll: (filter) => aclFor(view)?.canWriteAll(filter) ?? true,
        canWrite: (topic) => aclFor(view)?.canWrite(topic) ?? true,
      };
    },
    reload,
    get aclEnabled() {
      return rules.acl !== null;
    },
    counters,
    get passwordChecks() {
      return { active: verifyQueue.active, queued: verifyQueue.queued };
    },
    async close() {
      clearTimeout(debounce);
      for (const w of watchers) w.close();
      process.off('SIGHUP', onSighup);
      if (reloading) await reloading;
    },
  };
}
