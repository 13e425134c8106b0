/**
 * A lease lock on the state store, built the way the SDKs build theirs:
 *   acquire = SET lock holder NEX PX ttl   (the answer's version is the fencing token)
 *   renew   = the same SET again
 *   release = VDEL lock holder
 *   wait    = KEYNOTIFY on the lock key, retry the acquire on every DELETE
 *
 * Pass the fencing token with every write to the resources the lock protects
 * (`store.set(key, value, { fencingToken })`): a holder whose lease ran out and was taken
 * over is then refused ("... lower version than the fencing token protecting the resource").
 */
import type { Hlc } from './hlc.js';
import type { Bytes, KeyNotification, StateStoreClient } from './client.js';

const asBuffer = (b: Bytes) => (typeof b === 'string' ? Buffer.from(b, 'utf8') : Buffer.from(b));

export class LeaseLock {
  private readonly key: Buffer;
  private readonly holder: Buffer;
  /** The fencing token of the last successful acquire or renew. */
  fencingToken: Hlc | undefined;

  constructor(
    private readonly store: StateStoreClient,
    lockKey: Bytes,
    holder: Bytes,
  ) {
    this.key = asBuffer(lockKey);
    this.holder = asBuffer(holder);
  }

  /** Take the lock for ttlMs if it is free (or already ours). The fencing token, or undefined. */
  async acquire(ttlMs: number): Promise<Hlc | undefined> {
    const r = await this.store.set(this.key, this.holder, { condition: 'nex', expiresInMs: ttlMs });
    this.fencingToken = r.applied ? r.version : undefined;
    return this.fencingToken;
  }

  /** Extend the lease; undefined when the lock is no longer ours. */
  renew(ttlMs: number): Promise<Hlc | undefined> {
    return this.acquire(ttlMs);
  }

  /** Give the lock up; false when it was not ours (any more). */
  async release(): Promise<boolean> {
    const r = await this.store.vdel(this.key, this.holder);
    this.fencingToken = undefined;
    return r.deleted === 1;
  }

  /** The current holder, or undefined when the lock is free. */
  async holderOf(): Promise<Buffer | undefined> {
    return (await this.store.get(this.key)).value;
  }

  /**
   * Wait until the lock is ours: try, then retry each time the lock key is deleted (or
   * expires), and at least every `retryMs` in case a notification was missed.
   */
  async waitAndAcquire(ttlMs: number, options: { signal?: AbortSignal; retryMs?: number } = {}): Promise<Hlc> {
    const retryMs = options.retryMs ?? Math.max(ttlMs, 100);
    let wake: (() => void) | undefined;
    const onNotification = (n: KeyNotification) => {
      if (n.operation === 'DELETE' && n.key.equals(this.key)) wake?.();
    };
    this.store.on('notification', onNotification);
    await this.store.observe(this.key);
    try {
      for (;;) {
        options.signal?.throwIfAborted();
        const token = await this.acquire(ttlMs);
        if (token) return token;
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(done, retryMs);
          const abort = () => {
            clearTimeout(timer);
            reject(options.signal!.reason);
          };
          function done() {
            clearTimeout(timer);
            options.signal?.removeEventListener('abort', abort);
            resolve();
          }
          wake = done;
          options.signal?.addEventListener('abort', abort, { once: true });
        });
        wake = undefined;
      }
    } finally {
      this.store.off('notification', onNotification);
      await this.store.unobserve(this.key).catch(() => undefined);
    }
  }
}
