import { describe, expect, it } from 'vitest';
import { testConfig } from '../../src/config/load.js';
import { loadConfig } from '../../src/config/load.js';
import { addressKey, createClientLimits, createLoginLimiter, FLOOD_SECONDS, LoginLimiter } from '../../src/auth/rate-limit.js';

describe('addressKey', () => {
  it.each([
    ['127.0.0.1:5000', '127.0.0.1'],
    ['::1:5000', '::1'],
    ['::ffff:10.0.0.2:61000', '::ffff:10.0.0.2'],
    ['[2001:db8::1]:1883', '2001:db8::1'],
    ['unix-socket', 'unix-socket'],
  ])('%s -> %s', (input, expected) => {
    expect(addressKey(input)).toBe(expected);
  });
});

describe('LoginLimiter', () => {
  it('lets the first failures through, then backs off exponentially up to the cap', () => {
    const l = new LoginLimiter({ freeFailures: 3, baseDelayMs: 1000, maxDelayMs: 8000 });
    let t = 0;
    expect(l.failure('a', t)).toBe(0);
    expect(l.failure('a', t)).toBe(0);
    expect(l.failure('a', t)).toBe(0);
    expect(l.check('a', t)).toEqual({ allowed: true });
    expect(l.failure('a', t)).toBe(1000);
    expect(l.check('a', t + 10)).toEqual({ allowed: false, retryAfterMs: 990 });
    expect(l.check('b', t + 10)).toEqual({ allowed: true }); // other addresses unaffected
    t += 1000;
    expect(l.check('a', t)).toEqual({ allowed: true });
    expect(l.failure('a', t)).toBe(2000);
    expect(l.failure('a', t)).toBe(4000);
    expect(l.failure('a', t)).toBe(8000);
    expect(l.failure('a', t)).toBe(8000);
  });

  it('clears an address on success, and forgets after a long quiet spell', () => {
    const l = new LoginLimiter({ freeFailures: 1, baseDelayMs: 100, maxDelayMs: 1000 });
    l.failure('a', 0);
    expect(l.failure('a', 0)).toBe(100);
    l.success('a');
    expect(l.check('a', 1)).toEqual({ allowed: true });
    expect(l.failure('a', 1)).toBe(0);
    expect(l.failure('a', 10_000)).toBe(0); // quiet for > 2 x max: counting starts again
  });

  it('remembers a bounded number of addresses, oldest forgotten first', () => {
    const l = new LoginLimiter({ freeFailures: 0, baseDelayMs: 1000, maxDelayMs: 1000, maxEntries: 3 });
    for (const a of ['a', 'b', 'c', 'd']) l.failure(a, 0);
    expect(l.size).toBe(3);
    expect(l.check('a', 1).allowed).toBe(true);
    expect(l.check('d', 1).allowed).toBe(false);
  });

  it('is built from settings', () => {
    const l = createLoginLimiter(testConfig({ loginFailureLimit: 0, loginBackoffMaxMs: 500 }));
    expect(l.failure('x', 0)).toBe(500);
  });
});

describe('client limits', () => {
  it('are off by default and then always ok', () => {
    const limits = createClientLimits(testConfig());
    expect(limits.enabled).toBe(false);
    for (let i = 0; i < 10_000; i++) expect(limits.onPublish('c', 1_000_000, 0)).toBe('ok');
    expect(limits.maxSubscriptions).toBe(10000);
  });

  it('message rate: burst, slow, recover, then cut off a flood with 0x96', () => {
    const limits = createClientLimits(testConfig({ maxMsgRate: 10 }));
    expect(limits.enabled).toBe(true);
    const verdicts = Array.from({ length: 10 }, () => limits.onPublish('c', 10, 0));
    expect(verdicts.every((v) => v === 'ok')).toBe(true);
    expect(limits.onPublish('c', 10, 0)).toBe('slow');
    expect(limits.resumeDelay('c', 0)).toBe(100);
    expect(limits.resumeDelay('c', 50)).toBe(50);
    expect(limits.resumeDelay('c', 100)).toBe(0);
    expect(limits.onPublish('c', 10, 200)).toBe('ok');
    // another client has its own bucket
    expect(limits.onPublish('d', 10, 200)).toBe('ok');
    // a flood: keeps sending at once while paused data still arrives
    let v: string = 'ok';
    let n = 0;
    while (v !== 'rate' && n < 1000) {
      v = limits.onPublish('c', 10, 200);
      n++;
    }
    expect(v).toBe('rate');
    expect(n).toBe(10 * FLOOD_SECONDS + 1);
    // reconnecting does not wipe the debt: the buckets of a client that left in debt are kept
    limits.forget('c', 200);
    expect(limits.onPublish('c', 10, 200)).not.toBe('ok');
    limits.forget('c', 200);
    // once they have refilled (the debt, then the burst, at 10 a second) they are a fresh client's
    const refilled = 200 + ((10 * FLOOD_SECONDS + 2) + 10) * 100;
    expect(limits.onPublish('c', 10, refilled)).toBe('ok');
    // a client that leaves with full buckets is forgotten at once
    limits.forget('d', 10_000_000);
    expect(limits.resumeDelay('d', 10_000_000)).toBe(0);
  });

  it('keeps the buckets of departed clients in debt only until they refill, and a bounded number of them', () => {
    const limits = createClientLimits(testConfig({ maxMsgRate: 10 }));
    const internals = limits as unknown as { buckets: Map<string, unknown>; departed: Map<string, number> };
    for (let i = 0; i < 20; i++) limits.onPublish('a', 10, 0);
    limits.forget('a', 0); // 10 in debt: full again 2 s later
    limits.onPublish('b', 10, 0);
    limits.forget('b', 0); // 1 used: full again 100 ms later
    expect(internals.departed.size).toBe(2);
    for (let i = 0; i < 20; i++) limits.onPublish('c', 10, 5000);
    limits.forget('c', 5000); // by now a and b have refilled: they go
    expect([...internals.departed.keys()]).toEqual(['c']);
    expect(internals.buckets.has('a')).toBe(false);
    expect(internals.buckets.has('b')).toBe(false);
  });

  it('byte rate: one max-size packet fits the burst; a sustained stream is slowed then cut off with 0x97', () => {
    const limits = createClientLimits(testConfig({ maxBytesRate: 1000, maxPacketSize: 4096 }));
    expect(limits.onPublish('c', 4096, 0)).toBe('ok');
    expect(limits.onPublish('c', 500, 0)).toBe('slow');
    expect(limits.resumeDelay('c', 0)).toBe(500);
    let v: string = 'slow';
    let t = 0;
    while (v !== 'quota' && t < 100_000) {
      v = limits.onPublish('c', 2000, t); // 2000 B every 100 ms = 20x the rate
      t += 100;
    }
    expect(v).toBe('quota');
  });

  it('a client within its rates is never slowed', () => {
    const limits = createClientLimits(testConfig({ maxMsgRate: 100, maxBytesRate: 100_000 }));
    for (let t = 0; t < 60_000; t += 10) expect(limits.onPublish('c', 900, t)).toBe('ok'); // 100/s, 90 kB/s
  });

  it('counts subscriptions against the maximum', () => {
    const limits = createClientLimits(testConfig({ maxSubscriptions: 2 }));
    expect(limits.subscriptionAllowed(0)).toBe(true);
    expect(limits.subscriptionAllowed(1)).toBe(true);
    expect(limits.subscriptionAllowed(2)).toBe(false);
    expect(createClientLimits(testConfig({ maxSubscriptions: 0 })).subscriptionAllowed(1e9)).toBe(true);
  });

  it('reads the new settings from the environment', () => {
    const c = loadConfig({ EDB_MAX_MSG_RATE: '50', EDB_MAX_BYTES_RATE: '65536', EDB_MAX_SUBSCRIPTIONS: '7', EDB_CERT_IDENTITY_FIELD: 'CN' });
    expect([c.maxMsgRate, c.maxBytesRate, c.maxSubscriptions, c.certIdentityField]).toEqual([50, 65536, 7, 'CN']);
    expect(() => loadConfig({ EDB_MAX_MSG_RATE: '-1' })).toThrow(/EDB_MAX_MSG_RATE/);
  });
});

describe('client limits with a core that pauses at once', () => {
  // The core stops parsing on 'slow' and resumes after resumeDelay(): one message per resume.
  function drive(limits: ReturnType<typeof createClientLimits>, bytes: number, gapMs: number, untilMs: number): { verdict: string; at: number } {
    let now = 0;
    while (now < untilMs) {
      const v = limits.onPublish('c', bytes, now);
      if (v === 'rate' || v === 'quota') return { verdict: v, at: now };
      now += v === 'slow' ? Math.max(gapMs, limits.resumeDelay('c', now)) : gapMs;
    }
    return { verdict: 'ok', at: now };
  }

  it('a client with a backlog (always over its rate) is cut off after FLOOD_SECONDS', () => {
    const r = drive(createClientLimits(testConfig({ maxMsgRate: 50 })), 10, 0, 60_000);
    expect(r.verdict).toBe('rate');
    expect(r.at).toBeGreaterThanOrEqual(FLOOD_SECONDS * 1000);
    expect(r.at).toBeLessThan(FLOOD_SECONDS * 1000 + 2000);
    const q = drive(createClientLimits(testConfig({ maxBytesRate: 10_000, maxPacketSize: 1024 })), 1000, 0, 60_000);
    expect(q.verdict).toBe('quota');
  });

  it('a burst that then calms down is only slowed', () => {
    const limits = createClientLimits(testConfig({ maxMsgRate: 50 }));
    let now = 0;
    const verdicts = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const v = limits.onPublish('c', 10, now); // 200 at once: 4 s of backlog at 50/s
      verdicts.add(v);
      if (v === 'slow') now += limits.resumeDelay('c', now);
    }
    for (let i = 0; i < 500; i++) {
      now += 25; // then 40/s, under the rate
      verdicts.add(limits.onPublish('c', 10, now));
    }
    expect([...verdicts].sort()).toEqual(['ok', 'slow']);
  });

  it('a client sending steadily just under its rate is never slowed', () => {
    expect(drive(createClientLimits(testConfig({ maxMsgRate: 50 })), 10, 21, 60_000).verdict).toBe('ok');
  });
});
