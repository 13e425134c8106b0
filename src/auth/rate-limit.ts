import type { Config } from '../config/schema.js';

/**
 * Two limiters that protect the broker:
 *
 * - LoginLimiter: failed logins per source address. The first `freeFailures` failures cost
 *   nothing; after that each failure doubles a back-off (from `baseDelayMs` up to
 *   `maxDelayMs`) during which CONNECTs from that address are refused at once, without
 *   hashing a password. A success clears the address.
 *
 * - ClientLimits: per-client token buckets for messages and bytes per second, called
 *   synchronously from the publish path (no allocation per message).
 */

// ---------------------------------------------------------------------------------------
// Failed logins.

export interface LoginLimiterOptions {
  freeFailures: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** Addresses remembered at once; the least recently seen are forgotten first. */
  maxEntries?: number;
}

interface LoginEntry {
  failures: number;
  blockedUntil: number;
  lastFailure: number;
}

export type LoginCheck = { allowed: true } | { allowed: false; retryAfterMs: number };

/** The host part of "host:port", "[v6]:port" or a bare address: the key failures are counted under. */
export function addressKey(remoteAddress: string): string {
  if (remoteAddress.startsWith('[')) {
    const end = remoteAddress.indexOf(']');
    return end > 0 ? remoteAddress.slice(1, end) : remoteAddress;
  }
  // Transports report "address:port" (the interface's contract), also for IPv6 ("::1:5678").
  const colon = remoteAddress.lastIndexOf(':');
  if (colon <= 0 || !/^\d+$/.test(remoteAddress.slice(colon + 1))) return remoteAddress;
  return remoteAddress.slice(0, colon);
}

export class LoginLimiter {
  private readonly entries = new Map<string, LoginEntry>();
  private readonly maxEntries: number;

  constructor(private readonly options: LoginLimiterOptions) {
    this.maxEntries = options.maxEntries ?? 100_000;
  }

  /** Whether a login attempt from `address` may be checked now. */
  check(address: string, now: number): LoginCheck {
    const e = this.entries.get(address);
    if (!e || now >= e.blockedUntil) return { allowed: true };
    return { allowed: false, retryAfterMs: e.blockedUntil - now };
  }

  /** Record a failure; returns how long the address is now blocked (0 while still free). */
  failure(address: string, now: number): number {
    let e = this.entries.get(address);
    if (e) {
      this.entries.delete(address); // re-insert: Map order is then least recently failed first
      // a quiet spell longer than the longest back-off starts the count again
      if (now - e.lastFailure > this.options.maxDelayMs * 2) e.failures = 0;
    } else {
      e = { failures: 0, blockedUntil: 0, lastFailure: now };
      if (this.entries.size >= this.maxEntries) {
        const oldest = this.entries.keys().next();
        if (!oldest.done) this.entries.delete(oldest.value);
      }
    }
    e.failures++;
    e.lastFailure = now;
    const over = e.failures - this.options.freeFailures;
    const delay = over <= 0 ? 0 : Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** Math.min(over - 1, 30));
    e.blockedUntil = now + delay;
    this.entries.set(address, e);
    return delay;
  }

  success(address: string): void {
    this.entries.delete(address);
  }

  /** Addresses currently remembered (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }
}

export function createLoginLimiter(config: Pick<Config, 'loginFailureLimit' | 'loginBackoffMaxMs'>): LoginLimiter {
  return new LoginLimiter({
    freeFailures: config.loginFailureLimit,
    baseDelayMs: Math.min(1000, config.loginBackoffMaxMs),
    maxDelayMs: config.loginBackoffMaxMs,
  });
}

// ---------------------------------------------------------------------------------------
// Per-client message and byte rates.

/**
 * - 'ok': carry on.
 * - 'slow': over the rate; pause reading from this client for `resumeDelay()` ms.
 * - 'rate': flooding messages: disconnect with 0x96 (Message rate too high).
 * - 'quota': flooding bytes: disconnect with 0x97 (Quota exceeded).
 * Flooding is either more than FLOOD_SECONDS' worth ahead of the rate at once (a core that
 * parses a whole TCP chunk before pausing), or pressing against the limit, never letting the
 * bucket refill to half, for FLOOD_SECONDS (a core that pauses at once and resumes after
 * `resumeDelay()`: the client keeps a backlog and is slowed all the time).
 */
export type PublishVerdict = 'ok' | 'slow' | 'rate' | 'quota';

/** A client this many seconds' worth ahead of its rate, or held at it this long, is cut off. */
export const FLOOD_SECONDS = 5;
/** Burst allowance: one second's worth of the rate. */
const BURST_SECONDS = 1;

interface Buckets {
  messages: number;
  bytes: number;
  last: number;
  /** Since when the message / byte bucket has stayed low (0: it has not). */
  msgOverSince: number;
  byteOverSince: number;
}

export interface ClientLimits {
  /** False when neither rate is limited: the core may skip onPublish entirely. */
  readonly enabled: boolean;
  /** Subscriptions a client may hold (0 = no limit); past it, SUBACK 0x97 for that filter. */
  readonly maxSubscriptions: number;
  /** Account for one PUBLISH received from `clientId` (whole packet size in bytes). Synchronous. */
  onPublish(clientId: string, bytes: number, now: number): PublishVerdict;
  /** Milliseconds until the client is back within its rates (0 if it is). */
  resumeDelay(clientId: string, now: number): number;
  /** Whether a client holding `current` subscriptions may add one more. */
  subscriptionAllowed(current: number): boolean;
  /**
   * A client disconnected: its buckets go, unless it left in debt; then they are kept until
   * they have refilled, so reconnecting does not buy a flooder a fresh burst.
   */
  forget(clientId: string, now: number): void;
}

/** Buckets of disconnected clients kept at most (each a few dozen bytes). */
export const MAX_DEPARTED = 100_000;

export class TokenBucketLimits implements ClientLimits {
  readonly enabled: boolean;
  private readonly buckets = new Map<string, Buckets>();
  /** Disconnected clients whose buckets are kept, and when those will be full again (oldest first). */
  private readonly departed = new Map<string, number>();
  private readonly msgCapacity: number;
  private readonly byteCapacity: number;

  constructor(
    private readonly msgRate: number,
    private readonly byteRate: number,
    readonly maxSubscriptions: number,
    maxPacketSize: number,
  ) {
    this.enabled = msgRate > 0 || byteRate > 0;
    this.msgCapacity = Math.max(1, msgRate * BURST_SECONDS);
    // one packet of the largest allowed size always fits the burst
    this.byteCapacity = Math.max(maxPacketSize, byteRate * BURST_SECONDS);
  }

  private refill(clientId: string, now: number): Buckets {
    if (this.departed.size !== 0) this.departed.delete(clientId); // back again: its buckets are live
    let b = this.buckets.get(clientId);
    if (!b) {
      b = { messages: this.msgCapacity, bytes: this.byteCapacity, last: now, msgOverSince: 0, byteOverSince: 0 };
      this.buckets.set(clientId, b);
      return b;
    }
    const elapsed = now - b.last;
    if (elapsed > 0) {
      if (this.msgRate > 0) b.messages = Math.min(this.msgCapacity, b.messages + (elapsed * this.msgRate) / 1000);
      if (this.byteRate > 0) b.bytes = Math.min(this.byteCapacity, b.bytes + (elapsed * this.byteRate) / 1000);
      b.last = now;
    }
    return b;
  }

  onPublish(clientId: string, bytes: number, now: number): PublishVerdict {
    if (!this.enabled) return 'ok';
    const b = this.refill(clientId, now);
    let verdict: PublishVerdict = 'ok';
    if (this.msgRate > 0) {
      // back to half full: the client has slowed down, forgive it
      if (b.messages >= this.msgCapacity / 2) b.msgOverSince = 0;
      b.messages -= 1;
      if (b.messages < 0) {
        if (b.msgOverSince === 0) b.msgOverSince = now;
        if (b.messages < -this.msgRate * FLOOD_SECONDS || now - b.msgOverSince >= FLOOD_SECONDS * 1000) return 'rate';
        verdict = 'slow';
      }
    }
    if (this.byteRate > 0) {
      if (b.bytes >= this.byteCapacity / 2) b.byteOverSince = 0;
      b.bytes -= bytes;
      if (b.bytes < 0) {
        if (b.byteOverSince === 0) b.byteOverSince = now;
        if (b.bytes < -this.byteRate * FLOOD_SECONDS || now - b.byteOverSince >= FLOOD_SECONDS * 1000) return 'quota';
        verdict = 'slow';
      }
    }
    return verdict;
  }

  resumeDelay(clientId: string, now: number): number {
    const b = this.buckets.get(clientId);
    if (!b) return 0;
    this.refill(clientId, now);
    let ms = 0;
    if (this.msgRate > 0 && b.messages < 0) ms = Math.max(ms, (-b.messages * 1000) / this.msgRate);
    if (this.byteRate > 0 && b.bytes < 0) ms = Math.max(ms, (-b.bytes * 1000) / this.byteRate);
    return Math.ceil(ms);
  }

  subscriptionAllowed(current: number): boolean {
    return this.maxSubscriptions === 0 || current < this.maxSubscriptions;
  }

  forget(clientId: string, now: number): void {
    if (!this.buckets.has(clientId)) return;
    const b = this.refill(clientId, now);
    let fullIn = 0;
    if (this.msgRate > 0) fullIn = Math.max(fullIn, ((this.msgCapacity - b.messages) * 1000) / this.msgRate);
    if (this.byteRate > 0) fullIn = Math.max(fullIn, ((this.byteCapacity - b.bytes) * 1000) / this.byteRate);
    if (fullIn <= 0) {
      this.buckets.delete(clientId);
      return;
    }
    this.departed.set(clientId, now + fullIn);
    // drop the kept buckets that have refilled by now, and never keep more than MAX_DEPARTED
    for (const [id, fullAt] of this.departed) {
      if (fullAt > now && this.departed.size <= MAX_DEPARTED) break;
      this.departed.delete(id);
      this.buckets.delete(id);
    }
  }
}

/** The per-client limits from EDB_MAX_MSG_RATE, EDB_MAX_BYTES_RATE and EDB_MAX_SUBSCRIPTIONS. */
export function createClientLimits(config: Pick<Config, 'maxMsgRate' | 'maxBytesRate' | 'maxSubscriptions' | 'maxPacketSize'>): ClientLimits {
  return new TokenBucketLimits(config.maxMsgRate, config.maxBytesRate, config.maxSubscriptions, config.maxPacketSize);
}
