/**
 * Message rates over the last minutes for the status page: a fixed ring of samples of the
 * broker's counters, taken on a timer (not on the message path).
 */
import type { BrokerStats } from '../broker/api.js';

export interface RatePoint {
  /** Sample time, ms since epoch. */
  t: number;
  /** Messages per second received from clients / delivered to subscribers, over the interval before t. */
  in: number;
  out: number;
  /** Bytes per second received / sent. */
  bytesIn: number;
  bytesOut: number;
}

export class RateHistory {
  private readonly points: RatePoint[] = [];
  private last: { t: number; in: number; out: number; bytesIn: number; bytesOut: number };
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly stats: BrokerStats,
    readonly intervalMs = 5000,
    readonly capacity = 120,
  ) {
    this.last = this.read();
  }

  private read() {
    const s = this.stats;
    return { t: Date.now(), in: s.messagesReceived, out: s.messagesSent, bytesIn: s.bytesReceived, bytesOut: s.bytesSent };
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Takes one sample now (the timer calls this; tests may too). */
  sample(): RatePoint {
    const now = this.read();
    const seconds = Math.max((now.t - this.last.t) / 1000, 0.001);
    const point: RatePoint = {
      t: now.t,
      in: (now.in - this.last.in) / seconds,
      out: (now.out - this.last.out) / seconds,
      bytesIn: (now.bytesIn - this.last.bytesIn) / seconds,
      bytesOut: (now.bytesOut - this.last.bytesOut) / seconds,
    };
    this.last = now;
    this.points.push(point);
    if (this.points.length > this.capacity) this.points.shift();
    return point;
  }

  history(): readonly RatePoint[] {
    return this.points;
  }

  /** The most recent rate, or zeros before the first sample. */
  current(): RatePoint {
    return this.points[this.points.length - 1] ?? { t: Date.now(), in: 0, out: 0, bytesIn: 0, bytesOut: 0 };
  }
}
