/**
 * Hybrid logical clock, as the state-store protocol writes it:
 * `{wallClockMs}:{counter}:{nodeId}`, zero-padded by the SDKs to 15 and 5 digits
 * (`001696374425000:00000:node-a`); padded and unpadded forms are accepted.
 * Order: wall clock, then counter, then node id.
 */
export interface Hlc {
  wall: number;
  counter: number;
  node: string;
}

/** How far ahead of the broker's clock a request's `__ts` / `__ft` may be. */
export const MAX_CLOCK_DRIFT_MS = 60_000;

const MAX_COUNTER = 0xffff_ffff;

/** Digits of text[from, to) as a number, or -1 when empty, too long or not all digits. */
function digits(text: string, from: number, to: number, maxLength: number): number {
  if (to <= from || to - from > maxLength) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
  }
  return n;
}

/** Parse a timestamp; undefined when it is not one. (On every request: no regex, no split.) */
export function parseHlc(text: string): Hlc | undefined {
  const first = text.indexOf(':');
  if (first <= 0) return undefined;
  const second = text.indexOf(':', first + 1);
  if (second < 0 || second === text.length - 1) return undefined;
  const wall = digits(text, 0, first, 16);
  const counter = digits(text, first + 1, second, 10);
  if (wall < 0 || counter < 0 || !Number.isSafeInteger(wall) || counter > MAX_COUNTER) return undefined;
  return { wall, counter, node: text.slice(second + 1) };
}

/** The SDKs' form: 15-digit wall clock, 5-digit counter (wider when it must be). */
const ZEROS = '000000000000000';
export function formatHlc(t: Hlc): string {
  const w = String(t.wall);
  const c = String(t.counter);
  return `${w.length < 15 ? ZEROS.slice(w.length) + w : w}:${c.length < 5 ? ZEROS.slice(c.length + 10) + c : c}:${t.node}`;
}

export function compareHlc(a: Hlc, b: Hlc): number {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1;
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1;
  return a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
}

/**
 * The broker's clock. `tick(seen)` returns a version greater than `seen` (a request's
 * `__ts`) and than every version issued before; `observe(seen)` only merges.
 */
export class HybridLogicalClock {
  private wall = 0;
  private counter = 0;

  constructor(
    readonly node: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** The last issued (or restored) version's wall clock and counter. */
  get last(): Hlc {
    return { wall: this.wall, counter: this.counter, node: this.node };
  }

  /** Whether t is too far ahead of the broker's clock. */
  tooFarAhead(t: Hlc): boolean {
    return t.wall > this.now() + MAX_CLOCK_DRIFT_MS;
  }

  /** Merge a received timestamp without issuing a version. */
  observe(seen: Hlc): void {
    if (seen.wall > this.wall || (seen.wall === this.wall && seen.counter > this.counter)) {
      this.wall = seen.wall;
      this.counter = seen.counter;
    }
  }

  /** A new version, after both `seen` and anything issued before. */
  tick(seen?: Hlc): Hlc {
    const physical = this.now();
    let wall = this.wall;
    let counter = this.counter;
    if (seen !== undefined && (seen.wall > wall || (seen.wall === wall && seen.counter >= counter))) {
      wall = seen.wall;
      // on a tie of wall and counter the node ids decide; stepping the counter beats both
      counter = seen.counter;
    }
    if (physical > wall) {
      wall = physical;
      counter = 0;
    } else if (counter >= MAX_COUNTER) {
      wall += 1;
      counter = 0;
    } else {
      counter += 1;
    }
    this.wall = wall;
    this.counter = counter;
    return { wall, counter, node: this.node };
  }

  /** Restore the clock from a snapshot so versions keep growing across restarts. */
  restore(wall: number, counter: number): void {
    this.observe({ wall, counter, node: this.node });
  }
}
