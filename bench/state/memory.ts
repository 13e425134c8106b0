// Bytes per entry at 1 million 16-byte keys with 100-byte values: the Wasm table against
// the Map reference, each measured in a process of its own.
//   npm run build && node dist/bench/state/memory.js
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createStateTable } from '../../src/state/table.js';

const N = Number(process.env['ENTRIES'] ?? 1_000_000);

function measure(kind: 'wasm' | 'map'): Record<string, number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  const value = Buffer.alloc(100, 0x62);
  const key = Buffer.alloc(16);
  gc();
  const before = process.memoryUsage();
  const t = createStateTable(kind);
  const now = Date.now();
  for (let i = 0; i < N; i++) {
    key.write(String(i).padStart(16, '0'), 0, 'latin1');
    t.set(key, value, 0, now, 0, 0, undefined, now);
  }
  gc();
  gc();
  const after = process.memoryUsage();
  const js = after.heapUsed - before.heapUsed + (after.external - before.external) + (after.arrayBuffers - before.arrayBuffers);
  const s = t.stats();
  if (t.size !== N) throw new Error('not every entry was stored');
  return {
    // Wasm linear memory is not in the V8 heap or the external/arrayBuffers counters on
    // every Node version, so the Wasm figure is the memory's size, plus any JS-side growth
    processBytesPerEntry: js / N,
    rssBytesPerEntry: (after.rss - before.rss) / N,
    wasmMemoryBytesPerEntry: s.memoryBytes !== undefined ? s.memoryBytes / N : NaN,
    bytesPerEntry: s.memoryBytes !== undefined ? (s.memoryBytes + Math.max(0, after.heapUsed - before.heapUsed)) / N : js / N,
  };
}

if (process.argv[2] === 'child') {
  process.stdout.write(JSON.stringify(measure(process.argv[3] as 'wasm' | 'map')));
} else {
  const self = fileURLToPath(import.meta.url);
  const out: Record<string, Record<string, number>> = {};
  for (const kind of ['wasm', 'map'] as const) {
    const r = spawnSync(process.execPath, ['--expose-gc', '--max-old-space-size=8192', self, 'child', kind], { encoding: 'utf8', env: { ...process.env, ENTRIES: String(N) } });
    if (r.status !== 0) throw new Error(r.stderr);
    out[kind] = JSON.parse(r.stdout) as Record<string, number>;
  }
  console.log(`bytes per entry, ${N.toLocaleString('en')} entries of 16-byte keys and 100-byte values:`);
  for (const [kind, r] of Object.entries(out)) {
    console.log(`  ${kind.padEnd(5)} ${r['bytesPerEntry']!.toFixed(1)}  (rss delta ${r['rssBytesPerEntry']!.toFixed(1)}${kind === 'wasm' ? `, linear memory ${r['wasmMemoryBytesPerEntry']!.toFixed(1)}` : ''})`);
  }
  console.log(`  wasm / map: ${(out['wasm']!['bytesPerEntry']! / out['map']!['bytesPerEntry']!).toFixed(2)}`);
}
