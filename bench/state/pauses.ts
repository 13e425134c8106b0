// The longest single SET while a table grows from empty to 1 million keys: the Wasm table
// resizes incrementally; the Map rehashes inside V8 (for comparison).
//   npm run build && node dist/bench/state/pauses.js
import { createStateTable } from '../../src/state/table.js';

const N = Number(process.env['ENTRIES'] ?? 1_000_000);
const value = Buffer.alloc(100, 0x64);
const key = Buffer.alloc(16);
for (const kind of ['wasm', 'map'] as const) {
  const t = createStateTable(kind);
  const now = Date.now();
  const lat: number[] = [];
  for (let i = 0; i < N; i++) {
    key.write(String(i).padStart(16, '0'), 0, 'latin1');
    const s = process.hrtime.bigint();
    t.set(key, value, 0, now, 0, 0, undefined, now);
    lat.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))]!.toFixed(3);
  console.log(`${kind.padEnd(5)} SET latency while growing to ${N.toLocaleString('en')} keys: p50 ${q(0.5)} ms, p99.99 ${q(0.9999)} ms, max ${q(1)} ms`);
}
