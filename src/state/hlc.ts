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

/** Parse a timestamp; undefined when it is not one. */
export function parseHlc(text: string): Hlc | undefined {
  const first = text.indexOf(':');
  if (first <= 0) return undefined;
  const second = text.indexOf(':', first + 1);
  if (second <= first + 1) return undefined;
  const wallText = text.slice(0, first);
  const counterText = text.slice(first + 1, second);
  const node = text.slice(second + 1);
  if (!/^\d{1,16}$/.test(wallText) || !/^\d{1,10}$/.test(counterText) || node.length === 0) return undefined;
  const wall = Number(wallText);
  const counter = Number(counterText);
  if (!Number.isSafeInteger(wall) || counter > MAX_COUNTER) return undefined;
  return { wall, counter, node };
}

/** The SDKs' form: 15-digit wall clock, 5-digit counter (wider when it must be). */
export function formatHlc(t: Hlc): string {
  return `${String(t.wall).padStart(15, '0')}:${String(t.counter).padStart(5, '0')}:${t.node}`;
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
