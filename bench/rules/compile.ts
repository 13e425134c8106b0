/**
 * Compile time by document size (check + codegen + asc in the worker, Wasm compile and
 * instantiation on the main thread), and how long the broker's event loop is held up while
 * a document compiles (max and p99 event-loop delay during the compile, next to the same
 * measurement over an idle period of the same length: on a shared machine the idle figure
 * is the noise floor).
 *
 *   npm run build && node dist/bench/rules/compile.js [sizes...]
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { RulesCompiler } from '../../src/rules/compiler.js';
import { mixedDocument } from './documents.js';

const args = process.argv.slice(2).map(Number).filter((n) => n > 0);
const SIZES = args.length > 0 ? args : [10, 100, 1000, 10000];
const RUNS = 3;

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function delayOver<T>(work: () => Promise<T>): Promise<{ result: T; maxMs: number; p99Ms: number; millis: number }> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const t0 = performance.now();
  const result = await work();
  const millis = performance.now() - t0;
  h.disable();
  return { result, maxMs: h.max / 1e6, p99Ms: h.percentile(99) / 1e6, millis };
}

async function main(): Promise<void> {
  const compiler = new RulesCompiler();
  await compiler.compile({ document: {} }); // start the worker, warm asc
  console.log('| statements | compile (median) | of which asc | source | wasm | event-loop max / p99 while compiling | idle max / p99 |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const n of SIZES) {
    const text = JSON.stringify(mixedDocument(n));
    const totals: number[] = [];
    const ascs: number[] = [];
    const maxes: number[] = [];
    const p99s: number[] = [];
    let source = 0;
    let wasm = 0;
    for (let r = 0; r < RUNS; r++) {
      const m = await delayOver(() => compiler.compile({ text }));
      totals.push(m.result.millis);
      ascs.push(m.result.ascMillis);
      maxes.push(m.maxMs);
      p99s.push(m.p99Ms);
      source = m.result.source.length;
      wasm = m.result.wasmBytes;
    }
    const idle = await delayOver(() => new Promise((r) => setTimeout(r, median(totals))));
    console.log(
      `| ${n} | ${median(totals).toFixed(0)} ms | ${median(ascs).toFixed(0)} ms | ${(source / 1024).toFixed(1)} KiB | ${(wasm / 1024).toFixed(1)} KiB | ${median(maxes).toFixed(1)} / ${median(p99s).toFixed(1)} ms | ${idle.maxMs.toFixed(1)} / ${idle.p99Ms.toFixed(1)} ms |`,
    );
  }
  await compiler.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
