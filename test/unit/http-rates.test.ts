import { afterEach, describe, expect, it, vi } from 'vitest';
import { newBrokerStats, type BrokerStats } from '../../src/broker/api.js';
import { RateHistory } from '../../src/http/rates.js';

const stats = (): BrokerStats => newBrokerStats(0);

describe('RateHistory', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('turns counter deltas into per-second rates over the sample interval', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const s = stats();
    const h = new RateHistory(s, 5000, 3);
    expect(h.current()).toMatchObject({ in: 0, out: 0 });
    s.messagesReceived += 500;
    s.messagesSent += 1500;
    s.bytesReceived += 50_000;
    vi.advanceTimersByTime(5000);
    const p = h.sample();
    expect(p).toEqual({ t: 1_005_000, in: 100, out: 300, bytesIn: 10_000, bytesOut: 0 });
    expect(h.current()).toBe(p);
  });

  it('keeps only the newest `capacity` points, oldest first', () => {
    vi.useFakeTimers({ now: 0 });
    const s = stats();
    const h = new RateHistory(s, 1000, 3);
    for (let i = 1; i <= 5; i++) {
      s.messagesReceived += i * 10;
      vi.advanceTimersByTime(1000);
      h.sample();
    }
    expect(h.history().map((p) => p.in)).toEqual([30, 40, 50]);
  });

  it('samples on its timer once started, and stops', () => {
    vi.useFakeTimers({ now: 0 });
    const s = stats();
    const h = new RateHistory(s, 1000, 10);
    h.start();
    s.messagesSent = 20;
    vi.advanceTimersByTime(3000);
    expect(h.history().map((p) => p.out)).toEqual([20, 0, 0]);
    h.stop();
    vi.advanceTimersByTime(3000);
    expect(h.history()).toHaveLength(3);
  });
});
