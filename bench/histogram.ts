/**
 * Latency histogram with logarithmic buckets (about 2.5 % wide), cheap to record into and
 * to merge across worker processes. Values are microseconds; negative readings (clock
 * granularity between processes) count as zero.
 */
const SCALE = 40;
const BUCKETS = 1024; // e^(1024/40) µs is far beyond any latency we can see

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  count = 0;

  record(micros: number): void {
    const i = micros > 0 ? Math.min(BUCKETS - 1, Math.floor(Math.log1p(micros) * SCALE)) : 0;
    this.counts[i]!++;
    this.count++;
  }

  /** Non-empty buckets as [index, count], for sending to the parent process. */
  entries(): [number, number][] {
    const out: [number, number][] = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i]! > 0) out.push([i, this.counts[i]!]);
    return out;
  }

  merge(entries: [number, number][]): void {
    for (const [i, c] of entries) {
      this.counts[i]! += c;
      this.count += c;
    }
  }

  /** The value (µs, bucket midpoint) below which fraction q of the readings fall. */
  quantile(q: number): number {
    if (this.count === 0) return NaN;
    const target = q * this.count;
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= target && this.counts[i]! > 0) return Math.expm1((i + 0.5) / SCALE);
    }
    return Math.expm1((BUCKETS - 0.5) / SCALE);
  }
}
