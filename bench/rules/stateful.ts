/**
 * Per-message cost with the functions of fr-script-state.md (a 5-minute average, a deadband
 * and a plain comparison per filter) at 10, 100 and 1,000 filters on distinct topics,
 * against (same messages, interleaved blocks, medians):
 *  - the reference interpreter (src/rules/reference.ts),
 *  - closures built with `new Function` doing the same window and deadband in JS Maps
 *    (JSON.parse, a Map from topic to closures, per-topic state in a Map): the hand-written
 *    JavaScript way.
 * Time advances 1 s per message, so the window holds up to 300 samples per topic.
 *
 *   npm run build && node dist/bench/rules/stateful.js [sizes...]
 */
import { checkDocument } from '../../src/rules/check.js';
import { RulesCompiler } from '../../src/rules/compiler.js';
import { ReferenceEngine } from '../../src/rules/reference.js';
import { filterTopic, payload, statefulDocument } from './documents.js';

const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
const SIZES = sizes.length > 0 ? sizes : [10, 100, 1000];
const MESSAGES = 64;
const WINDOW_MS = 300_000;

interface TopicState {
  times: number[];
  values: number[];
  head: number;
  ref: number | undefined;
}

/** The stateful condition as a JS closure over the parsed payload and a per-topic state. */
function closureFor(i: number): (p: any, s: TopicState, now: number) => boolean {
  return new Function(
    'p',
    's',
    'now',
    `const v = p["temperature"];
     if (typeof v === "number") { s.times.push(now); s.values.push(v); } else { s.times.push(now); s.values.push(NaN); }
     while (s.head < s.times.length && now - s.times[s.head] >= ${WINDOW_MS}) s.head++;
     if (s.head > 1024) { s.times = s.times.slice(s.head); s.values = s.values.slice(s.head); s.head = 0; }
     let sum = 0, c = 0;
     for (let k = s.head; k < s.values.length; k++) { const x = s.values[k]; if (x === x) { sum += x; c++; } }
     if (!(c > 0 && sum / c > ${i % 40})) return false;
     if (typeof v !== "number" || !(s.ref === undefined || Math.abs(v - s.ref) >= 0.5)) return false;
     const h = p["inside"] && p["inside"]["humidity"];
     if (!(h < ${60 + (i % 30)})) return false;
     s.ref = v;
     return true;`,
  ) as (p: any, s: TopicState, now: number) => boolean;
}

async function interleaved(cases: Record<string, { block: number; run: (k: number) => unknown }>, rounds = 15): Promise<Record<string, number>> {
  const names = Object.keys(cases);
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + r) % names.length]!;
      const c = cases[name]!;
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < c.block; k++) c.run(k);
      times[name]!.push(Number(process.hrtime.bigint() - t0) / c.block);
    }
  }
  return Object.fromEntries(names.map((n) => [n, [...times[n]!].sort((a, b) => a - b)[Math.floor(rounds / 2)]!]));
}

async function main(): Promise<void> {
  const compiler = new RulesCompiler();
  const rows: { n: number; m: Record<string, number> }[] = [];
  for (const n of SIZES) {
    const doc = checkDocument(statefulDocument(n));
    const { program } = await compiler.compileDocument(doc);
    const reference = new ReferenceEngine(doc);
    const closures = new Map<string, { fn: (p: any, s: TopicState, now: number) => boolean; out: string; states: Map<string, TopicState> }[]>();
    for (let i = 0; i < n; i++) closures.set(filterTopic(i), [{ fn: closureFor(i), out: `${filterTopic(i)}/alert`, states: new Map() }]);
    const topics = Array.from({ length: MESSAGES }, (_, k) => filterTopic(Math.floor((k * n) / MESSAGES)));
    const payloads = Array.from({ length: MESSAGES }, (_, k) => payload(k));
    const closure = (topic: string, body: Buffer, now: number): string[] => {
      const out: string[] = [];
      const list = closures.get(topic);
      if (!list) return out;
      const p = JSON.parse(body.toString());
      for (const c of list) {
        let s = c.states.get(topic);
        if (!s) c.states.set(topic, (s = { times: [], values: [], head: 0, ref: undefined }));
        if (c.fn(p, s, now)) out.push(c.out);
      }
      return out;
    };
    // the three agree on what fires over a first stretch of messages
    let fired = [0, 0, 0];
    for (let k = 0; k < 4 * MESSAGES; k++) {
      const t = k * 1000;
      fired[0]! += program.process(topics[k % MESSAGES]!, payloads[k % MESSAGES]!, t).length;
      fired[1]! += reference.process(topics[k % MESSAGES]!, payloads[k % MESSAGES]!, t).length;
      fired[2]! += closure(topics[k % MESSAGES]!, payloads[k % MESSAGES]!, t).length;
    }
    if (new Set(fired).size !== 1 || fired[0] === 0) throw new Error(`engines disagree at ${n}: ${fired.join(' ')}`);
    let tw = 4 * MESSAGES * 1000;
    let tr = tw;
    let tc = tw;
    const m = await interleaved({
      'wasm engine': { block: 20000, run: (i) => program.process(topics[i % MESSAGES]!, payloads[i % MESSAGES]!, (tw += 1000)) },
      closures: { block: 20000, run: (i) => closure(topics[i % MESSAGES]!, payloads[i % MESSAGES]!, (tc += 1000)) },
      reference: { block: 5000, run: (i) => reference.process(topics[i % MESSAGES]!, payloads[i % MESSAGES]!, (tr += 1000)) },
    });
    rows.push({ n, m });
  }
  await compiler.close();
  console.log('| filters (stateful) | wasm engine | closures (JS Maps) | reference | vs closures | vs reference |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: |');
  const f = (x: number): string => (x >= 1e4 ? `${(x / 1e3).toFixed(1)} µs` : `${x.toFixed(0)} ns`);
  for (const { n, m } of rows) {
    const w = m['wasm engine']!;
    console.log(`| ${n} | ${f(w)} | ${f(m['closures']!)} | ${f(m['reference']!)} | ${(m['closures']! / w).toFixed(2)}x | ${(m['reference']! / w).toFixed(1)}x |`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
