/**
 * Keeps V8's young generation small while the broker starts.
 *
 * Start-up allocates a lot that stays alive (module code, schemas, tables), and V8 answers
 * a high survival rate by doubling the young generation, up to 16 MiB per semi-space (32 MiB
 * in all on 64-bit). An idle broker allocates almost nothing afterwards, so V8 never shrinks
 * it back: about 15 MB of RSS an idle broker does not use. Holding the growth factor at 1
 * while modules load and services start keeps the young generation at its initial size
 * (start-up's survivors go to the old generation, where they belong anyway); once the
 * listeners are up the default factor (2) is restored, so traffic grows it as before.
 *
 * Imported first by the CLI's entry point, so it runs before the other modules load. Left
 * alone when the operator set V8's semi-space flags (NODE_OPTIONS or node's arguments).
 */
import { setFlagsFromString } from 'node:v8';

const operatorSet = /semi[-_]space/.test(`${process.env['NODE_OPTIONS'] ?? ''} ${process.execArgv.join(' ')}`);
let held = false;

if (!operatorSet) {
  setFlagsFromString('--semi-space-growth-factor=1');
  held = true;
}

/** Lets the young generation grow again (V8's default factor); called once the broker listens. */
export function releaseYoungGeneration(): void {
  if (!held) return;
  held = false;
  setFlagsFromString('--semi-space-growth-factor=2');
}
