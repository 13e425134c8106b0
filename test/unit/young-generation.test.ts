// V8's young generation is capped (src/cli/young-generation.ts): allocations that survive in
// bulk, as connections do, no longer grow it to 32 MiB. Real node processes: the flags are
// process-wide, so the test process itself is left alone.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const PROBE = fileURLToPath(new URL('../fixtures/young-generation-probe.mjs', import.meta.url));
const MODULE = fileURLToPath(new URL('../../dist/src/cli/young-generation.js', import.meta.url));

/** The young generation's size after the survivors, and the cap, in bytes. */
function youngGenerationAfterSurvivors(nodeOptions: string): { size: number; cap: number } {
  const out = execFileSync(process.execPath, [PROBE, MODULE], { env: { ...process.env, NODE_OPTIONS: nodeOptions }, encoding: 'utf8' });
  const [size, cap] = out.trim().split(' ').map(Number);
  return { size: size!, cap: cap! };
}

describe('young generation cap', () => {
  it('survivors grow the young generation up to the cap and no further', () => {
    const { size, cap } = youngGenerationAfterSurvivors('');
    expect(cap).toBe(8 * 1024 * 1024);
    expect(size).toBeGreaterThan(2 * 1024 * 1024); // growth is still allowed below the cap
    expect(size).toBeLessThanOrEqual(cap);
  });

  it('an operator semi-space flag turns the cap off (V8 grows it as before)', () => {
    const { size, cap } = youngGenerationAfterSurvivors('--max-semi-space-size=16');
    expect(size).toBeGreaterThan(cap);
  });
});
