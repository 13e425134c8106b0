/**
 * Authentication of a CONNECT, in order:
 *  1. an MQTT 5 Authentication Method: refused with 0x8C (enhanced auth is not supported);
 *  2. a verified client certificate: the user name is its subject, or the field named by
 *     EDB_CERT_IDENTITY_FIELD (e.g. CN); the CONNECT user name and password are ignored;
 *  3. a user name: checked against EDB_PASSWORD_FILE (and the config file's `users`);
 *     without any password source it is taken on trust when anonymous access is on;
 *  4. no user name: allowed when EDB_ALLOW_ANONYMOUS (default true, with a warning).
 * Failures answer 0x86 (bad user name or password) whether or not the user exists, are
 * logged, and count against the source address (LoginLimiter); an address in back-off
 * gets 0x9F (connection rate exceeded) without a password check.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { AuthenticateResult, ConnectRequest } from '../broker/hooks.js';
import { RC } from '../mqtt/reason-codes.js';
import type { AuthCounters } from './counters.js';
import { addressKey, createLoginLimiter, type LoginLimiter } from './rate-limit.js';
import type { AuthRules } from './rules-source.js';
import { VerifyQueue } from './verify-queue.js';

/** Password checks at once (each a 32 MiB scrypt on the libuv pool of 4) and waiting; see VerifyQueue. */
const VERIFY_CONCURRENCY = 2;
const VERIFY_WAITING = 64;
/** At most one "server busy" warning per this many ms. */
const BUSY_LOG_EVERY_MS = 10_000;

function identityName(certificateSubject: string | undefined, fields: Readonly<Record<string, string>> | undefined, field: string | null): string | undefined {
  if (certificateSubject === undefined) return undefined;
  if (field === null) return certificateSubject;
  const value = fields?.[field];
  return value === undefined || value === '' ? undefined : value;
}

export class Authenticator {
  private readonly limiter: LoginLimiter;
  readonly verifyQueue: VerifyQueue;
  private busyLoggedAt = 0;

  constructor(
    private readonly config: Config,
    /** The rules in force (they change on reload). */
    private readonly rules: () => AuthRules,
    private readonly counters: AuthCounters,
    private readonly log: Logger,
    private readonly now: () => number,
  ) {
    this.limiter = createLoginLimiter(config);
    this.verifyQueue = new VerifyQueue(VERIFY_CONCURRENCY, VERIFY_WAITING, now);
  }

  private refuse(request: ConnectRequest, reasonCode: number, why: string, countFailure: boolean): AuthenticateResult {
    const address = addressKey(request.remoteAddress);
    let backoffMs = 0;
    if (countFailure) {
      this.counters.loginsFailed++;
      backoffMs = this.limiter.failure(address, this.now());
    }
    // One message for unknown users and wrong passwords alike; `why` is for the operator.
    this.log.warn({ clientId: request.clientId, username: request.username, address, reason: why, backoffMs }, 'login refused');
    return { ok: false, reasonCode };
  }

  async authenticate(request: ConnectRequest): Promise<AuthenticateResult> {
    const { config, counters, log, now } = this;
    if (request.authenticationMethod !== undefined) {
      // [MQTT-5-4.12.0-1] enhanced authentication is not supported: 0x8C Bad authentication method
      return this.refuse(request, RC.BAD_AUTHENTICATION_METHOD, 'authentication method not supported', false);
    }

    const certName = identityName(request.certificateSubject, request.certificateFields, config.certIdentityField);
    if (request.certificateSubject !== undefined) {
      if (certName === undefined) {
        return this.refuse(request, RC.NOT_AUTHORIZED, `certificate subject has no ${config.certIdentityField} field`, true);
      }
      counters.loginsSucceeded++;
      log.debug({ clientId: request.clientId, username: certName }, 'client certificate accepted');
      return { ok: true, username: certName };
    }

    const address = addressKey(request.remoteAddress);
    const gate = this.limiter.check(address, now());
    if (!gate.allowed) {
      counters.loginsThrottled++;
      log.debug({ clientId: request.clientId, address, retryAfterMs: gate.retryAfterMs }, 'login refused: address is backing off');
      return { ok: false, reasonCode: RC.CONNECTION_RATE_EXCEEDED, reasonString: 'too many failed logins, retry later' };
    }

    if (request.username === undefined) {
      if (config.allowAnonymous) {
        counters.loginsSucceeded++;
        return { ok: true };
      }
      return this.refuse(request, RC.NOT_AUTHORIZED, 'anonymous access is off', true);
    }

    const passwords = this.rules().passwords;
    if (!passwords) {
      if (config.allowAnonymous) {
        counters.loginsSucceeded++;
        return { ok: true };
      }
      return this.refuse(request, RC.BAD_USER_NAME_OR_PASSWORD, 'no password file to check the user against', true);
    }

    let ok: boolean | 'busy' | 'expired' = false;
    try {
      const username = request.username;
      ok = await this.verifyQueue.run(() => passwords.verify(username, request.password), now() + config.connectTimeoutMs);
    } catch (err) {
      log.error({ err, clientId: request.clientId }, 'password check failed');
      return { ok: false, reasonCode: RC.UNSPECIFIED_ERROR };
    }
    if (ok === 'busy' || ok === 'expired') {
      counters.loginsBusy++;
      if (now() - this.busyLoggedAt >= BUSY_LOG_EVERY_MS) {
        this.busyLoggedAt = now();
        log.warn({ address, total: counters.loginsBusy }, 'too many password checks at once: CONNECT refused with 0x89 (server busy)');
      }
      return { ok: false, reasonCode: RC.SERVER_BUSY, reasonString: 'server busy, retry later' };
    }
    if (!ok) return this.refuse(request, RC.BAD_USER_NAME_OR_PASSWORD, 'bad user name or password', true);
    this.limiter.success(address);
    counters.loginsSucceeded++;
    return { ok: true };
  }
}
