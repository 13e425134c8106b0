/**
 * Keeps V8's young generation small: at its initial size while the broker starts, and at most
 * YOUNG_GENERATION_CAP afterwards.
 *
 * V8 answers a high survival rate in the young generation by doubling it, up to 16 MiB per
 * semi-space (32 MiB in all on 64-bit), and an idle process never shrinks it back (its memory
 * reducer may, a minute later). Two things survive in bulk: start-up (module code, schemas,
 * tables) and connections (10,000 CONNECTs grew it to the full 32 MiB, 3 KiB of RSS per idle
 * connection, more than everything else a connection holds). Neither needs a large young
 * generation: what lives goes to the old generation anyway.
 *
 *  - While modules load and services start, the growth factor is held at 1.
 *  - Once the listeners are up, the default factor (2) is restored, and a GC observer holds it
 *    at 1 again whenever the young generation has reached YOUNG_GENERATION_CAP (restoring 2 if
 *    V8 shrinks it below). Traffic still grows a small young generation up to the cap.
 *
 * The cap is a trade: bench/RESULTS.md (issue 15, memory per idle connection) has the load run
 * with the young generation at 2, 8 and 32 MiB. Imported first by the CLI's entry point, so it
 * runs before the other modules load. Left alone when the operator set V8's semi-space flags
 * (NODE_OPTIONS or node's arguments): `--max-semi-space-size=16` gives V8's default back.
 */
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { PerformanceObserver } from 'node:perf_hooks';

/** Young generation (both semi-spaces) at most this size: 4 MiB semi-spaces. */
export const YOUNG_GENERATION_CAP = 8 * 1024 * 1024;

const operatorSet = /semi[-_]space/.test(`${process.env['NODE_OPTIONS'] ?? ''} ${process.execArgv.join(' ')}`);
let held = false;
let factor = 2;

function setGrowthFactor(f: 1 | 2): void {
  if (f === factor) return;
  factor = f;
  setFlagsFromString(`--semi-space-growth-factor=${f}`);
}

function youngGenerationSize(): number {
  for (const s of getHeapSpaceStatistics()) if (s.space_name === 'new_space') return s.space_size;
  return 0;
}

if (!operatorSet) {
  setGrowthFactor(1);
  held = true;
}

/** After each batch of GCs: growth allowed below the cap, held at it. */
function capYoungGeneration(): void {
  setGrowthFactor(youngGenerationSize() >= YOUNG_GENERATION_CAP ? 1 : 2);
}

/** Lets the young generation grow again, up to the cap; called once the broker listens. */
export function releaseYoungGeneration(): void {
  if (!held) return;
  held = false;
  capYoungGeneration();
  const observer = new PerformanceObserver(capYoungGeneration);
  observer.observe({ entryTypes: ['gc'] });
}
