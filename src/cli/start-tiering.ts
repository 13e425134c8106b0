/**
 * Holds V8's optimising compiler (TurboFan) back while the broker starts.
 *
 * The only code hot during start-up is Node's module resolver (a few hundred ESM specifiers:
 * `normalizeString`, `resolve`, `URL`): V8 optimises it, and running TurboFan the first time
 * brings 3.6 MB of the node binary's pages into memory (its compiler's code), which then stay
 * resident in an idle broker that will not optimise anything else until traffic comes (issue
 * 15, idle RSS: 65.7 -> 61.0 MB; bench/RESULTS.md). Ignition and Sparkplug still run, so start-up
 * is not slower (the same RESULTS section has its CPU). Once the listeners are up, tier-up is
 * allowed again: the first load optimises the hot path as before.
 *
 * Imported first by the CLI's entry point. Left alone when the operator set a TurboFan flag
 * (NODE_OPTIONS or node's arguments). Commands other than `edb start` never call release():
 * the timer restores tier-up for one that runs long.
 */
import { setFlagsFromString } from 'node:v8';

const operatorSet = /--(no-)?(turbofan|opt)\b/.test(`${process.env['NODE_OPTIONS'] ?? ''} ${process.execArgv.join(' ')}`);
let held = false;

/** Most a command runs with tier-up held if nothing releases it first. */
const HOLD_MAX_MS = 10_000;

if (!operatorSet) {
  setFlagsFromString('--no-turbofan');
  held = true;
  setTimeout(releaseTiering, HOLD_MAX_MS).unref();
}

/** Lets V8 optimise again; called once the broker listens. */
export function releaseTiering(): void {
  if (!held) return;
  held = false;
  setFlagsFromString('--turbofan');
}

/** Whether tier-up is held now (tests). */
export function tieringHeld(): boolean {
  return held;
}
