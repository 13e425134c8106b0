/**
 * Who may connect, publish, subscribe and receive: the auth service, wired from its parts:
 *  - rules-source.ts  password file, ACL file and the config file's `users` / `acl` sections;
 *  - authenticate.ts  CONNECT: enhanced auth refused, certificates, passwords, the login limiter;
 *  - authorize.ts     the ACL on PUBLISH, SUBSCRIBE and each delivery, cached per client;
 *  - reload.ts        SIGHUP and file-change reloads, coalesced;
 *  - counters.ts      the counts behind the metrics.
 * Both files are re-read on SIGHUP and when they change (fs.watch on the folder, debounced);
 * a file that no longer parses is reported and the previous rules stay in force.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { BrokerApi } from '../broker/api.js';
import type { ClientInfo } from '../broker/hooks.js';
import { Authenticator } from './authenticate.js';
import { TopicAuthorizer } from './authorize.js';
import { newAuthCounters, type AuthCounters } from './counters.js';
import { AuthFileWatcher, AuthReloader } from './reload.js';
import { describeAuthRules, loadAuthRules, loadAuthRulesSync, type AuthRules } from './rules-source.js';

export type { AuthCounters } from './counters.js';

/** What the state store's per-key rules match on. */
export interface Identity {
  clientId: string;
  /** The authenticated user name (the certificate identity for certificate clients); undefined when anonymous. */
  username: string | undefined;
  certificateSubject?: string;
  /** Subject fields of the client certificate (CN, O, OU, ...), for rules by certificate attribute. */
  certificateFields?: Readonly<Record<string, string>>;
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

export function createAuthService(broker: BrokerApi, config: Config, log: Logger, options: AuthServiceOptions = {}): AuthService {
  const alog = log.child({ part: 'auth' });
  const now = options.now ?? Date.now;
  const counters: AuthCounters = newAuthCounters();

  // start-up: read everything synchronously so a bad file stops the start with a clear message
  let rules: AuthRules = loadAuthRulesSync(config);
  const currentRules = (): AuthRules => rules;
  const authenticator = new Authenticator(config, currentRules, counters, alog, now);
  const authorizer = new TopicAuthorizer(currentRules, counters, alog);

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
  alog.info(describeAuthRules(rules, config), 'auth rules loaded');

  broker.addHooks({
    authenticate: (request) => authenticator.authenticate(request),
    authorizePublish: (client, message) => authorizer.authorizePublish(client, message),
    authorizeSubscribe: (client, filter, qos) => authorizer.authorizeSubscribe(client, filter, qos),
    authorizeDelivery: (client, message) => authorizer.authorizeDelivery(client, message),
    onConnect(client) {
      authorizer.forget(client.clientId);
    },
    onDisconnect(client) {
      authorizer.forget(client.clientId);
    },
  });

  const reloader = new AuthReloader(async () => {
    try {
      const sections = options.readSections ? options.readSections() : config.sections;
      rules = await loadAuthRules(config, sections);
      authorizer.rulesChanged();
      counters.reloads++;
      alog.info(describeAuthRules(rules, config), 'auth rules reloaded');
    } catch (err) {
      counters.reloadErrors++;
      alog.error({ err: (err as Error).message }, 'auth rules not reloaded; the previous rules stay in force');
    }
  });
  const reload = (): Promise<void> => reloader.reload();

  const onSighup = (): void => {
    alog.info('SIGHUP: reloading password file and ACL');
    void reload();
  };
  if (options.handleSighup !== false) process.on('SIGHUP', onSighup);
  const files = options.watchFiles === false ? [] : [config.passwordFile, config.aclFile];
  const watcher = new AuthFileWatcher(files, options.watchDebounceMs ?? 200, () => void reload(), alog);

  const aclFor = (client: { clientId: string; username: string | undefined }) => authorizer.aclFor(client);
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
      return { active: authenticator.verifyQueue.active, queued: authenticator.verifyQueue.queued };
    },
    async close() {
      watcher.close();
      process.off('SIGHUP', onSighup);
      const pending = reloader.pending;
      if (pending) await pending;
    },
  };
}
