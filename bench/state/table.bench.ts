// The state store's Wasm table against the Map reference, in one run (benny).
//   npm run build && node dist/bench/state/table.bench.js
// Each case does a batch of 1,000 operations on tables preloaded with 100,000 keys of
// 16 bytes and values of 100 bytes; ops/s x 1,000 is operations per second.
import b from 'benny';
import { createStateTable, codes, type StateTable } from '../../src/state/table.js';

const KEYS = 100_000;
const BATCH = 1_000;
const keys = Array.from({ length: KEYS }, (_, i) => Buffer.from(`key:${String(i).padStart(12, '0')}`));
const fresh = Array.from({ length: BATCH }, (_, i) => Buffer.from(`new:${String(i).padStart(12, '0')}`));
const value = Buffer.alloc(100, 0x61);
const NOW = Date.now();

function loaded(kind: 'wasm' | 'map'): StateTable {
  const t = createStateTable(kind);
  for (const k of keys) t.set(k, value, 0, NOW, 0, 0, undefined, NOW);
  return t;
}

const tables = { wasm: loaded('wasm'), map: loaded('map') };
let cursor = 0;
const next = () => keys[(cursor = (cursor + 7919) % KEYS)]!;

async function main(): Promise<void> {
  const results: Record<string, Record<string, number>> = {};
  const record = (suite: string) =>
    b.complete((summary) => {
      results[suite] = Object.fromEntries(summary.results.map((r) => [r.name, r.ops * BATCH]));
    });
  const cases = (name: string, op: (t: StateTable) => void) =>
    b.suite(
      `state table: ${name} (x${BATCH})`,
      ...(['wasm', 'map'] as const).map((kind) =>
        b.add(kind, () => {
          const t = tables[kind];
          for (let i = 0; i < BATCH; i++) op(t);
        }),
      ),
      b.cycle(),
      record(name),
    );
  await cases('GET hit', (t) => void t.get(next(), NOW));
  await cases('SET overwrite', (t) => void t.set(next(), value, 0, NOW, 1, 0, undefined, NOW));
  let f = 0;
  await cases('SET new + DEL', (t) => {
    const k = fresh[(f = (f + 1) % BATCH)]!;
    if (t.set(k, value, codes.SET_NX, NOW, 0, 0, undefined, NOW) !== codes.RESULT_OK) throw new Error('set failed');
    t.delete(k, undefined, undefined, NOW);
  });
  console.log('\noperations/s (benny mean x batch), wasm / map:');
  for (const [name, r] of Object.entries(results)) {
    console.log(`  ${name.padEnd(16)} wasm ${Math.round(r['wasm']!).toLocaleString('en')}  map ${Math.round(r['map']!).toLocaleString('en')}  ratio ${(r['wasm']! / r['map']!).toFixed(2)}`);
  }
}

await main();
