/**
 * Per-message cost of the rules engine at 10, 100, 1,000 and 10,000 filters on distinct
 * topics, against (same run, same messages):
 *  - the reference interpreter (JSON.parse + AST walk, src/rules/reference.ts),
 *  - json-rules-engine with equivalent rules (topic equality + the two comparisons),
 *  - closures built with `new Function` per condition, behind a Map from topic to closures
 *    (JSON.parse + closure: the fast hand-written JavaScript way).
 * Each message goes to one of the N topics in turn; every other message fires.
 *
 *   npm run build && node dist/bench/rules/engine.js [sizes...]
 */
import b from 'benny';
import { Engine } from 'json-rules-engine';
import { checkDocument } from '../../src/rules/check.js';
import { RulesCompiler } from '../../src/rules/compiler.js';
import { ReferenceEngine } from '../../src/rules/reference.js';
import { TOPIC_CACHE } from '../../src/rules/runtime.js';
import { condition, filterTopic, filtersDocument, payload } from './documents.js';

const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
const SIZES = sizes.length > 0 ? sizes : [10, 100, 1000, 10000];
const MESSAGES = 64;
const options = { minSamples: 5, maxTime: 2 };

/** `$a.b > 3 and $c < 4` -> a JS closure over the parsed payload. */
function closureFor(text: string): (p: any) => boolean {
  const js = text.replace(/\$([A-Za-z0-9_.-]+)/g, (_, path: string) => `p${path.split('.').map((k) => `[${JSON.stringify(k)}]`).join('')}`).replace(/\band\b/g, '&&').replace(/\bor\b/g, '||');
  return new Function('p', `return ${js};`) as (p: any) => boolean;
}

function jsonRulesEngine(n: number): Engine {
  const engine = new Engine([], { allowUndefinedFacts: true });
  for (let i = 0; i < n; i++) {
    engine.addRule({
      conditions: {
        all: [
          { fact: 'topic', operator: 'equal', value: filterTopic(i) },
          { fact: 'temperature', operator: 'greaterThan', value: i % 40 },
          { fact: 'inside', path: '$.humidity', operator: 'lessThan', value: 60 + (i % 30) },
        ],
      },
      event: { type: 'alert', params: { topic: `${filterTopic(i)}/alert` } },
    });
  }
  return engine;
}

interface Row {
  n: number;
  ops: Record<string, number>;
  /** ns per message, median of interleaved rounds. */
  interleaved: Record<string, number>;
}

/**
 * Ratios on a shared, loaded machine: the engines take turns in short blocks, many rounds,
 * in rotating order, and the median block of each is kept, so a burst of load from elsewhere
 * hits all of them alike.
 */
async function interleaved(cases: Record<string, { block: number; run: (k: number) => unknown }>, rounds = 21): Promise<Record<string, number>> {
  const names = Object.keys(cases);
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + r) % names.length]!;
      const c = cases[name]!;
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < c.block; k++) {
        const p = c.run(k);
        if (p instanceof Promise) await p;
      }
      times[name]!.push(Number(process.hrtime.bigint() - t0) / c.block);
    }
  }
  return Object.fromEntries(names.map((n) => [n, [...times[n]!].sort((a, b) => a - b)[Math.floor(rounds / 2)]!]));
}

async function main(): Promise<void> {
  const compiler = new RulesCompiler();
  const rows: Row[] = [];
  for (const n of SIZES) {
    const doc = checkDocument(filtersDocument(n));
    const { program } = await compiler.compileDocument(doc);
    const reference = new ReferenceEngine(doc);
    const jre = jsonRulesEngine(n);
    const closures = new Map<string, { fn: (p: any) => boolean; out: string }[]>();
    for (let i = 0; i < n; i++) closures.set(filterTopic(i), [{ fn: closureFor(condition(i)), out: `${filterTopic(i)}/alert` }]);
    const topics = Array.from({ length: MESSAGES }, (_, k) => filterTopic(Math.floor((k * n) / MESSAGES)));
    const payloads = Array.from({ length: MESSAGES }, (_, k) => payload(k));

    // the engines agree on what fires
    let fired = [0, 0, 0];
    for (let k = 0; k < MESSAGES; k++) {
      fired[0]! += program.process(topics[k]!, payloads[k]!).length;
      fired[1]! += reference.process(topics[k]!, payloads[k]!).length;
      const p = JSON.parse(payloads[k]!.toString());
      for (const c of closures.get(topics[k]!) ?? []) if (c.fn(p)) fired[2]!++;
    }
    if (new Set(fired).size !== 1 || fired[0] === 0) throw new Error(`engines disagree at ${n}: ${fired.join(' ')}`);

    let k = 0;
    const summary = await b.suite(
      `rules engine, ${n} filters`,
      b.add(
        'wasm engine',
        () => {
          k = (k + 1) % MESSAGES;
          program.process(topics[k]!, payloads[k]!);
        },
        options,
      ),
      b.add(
        'closures (JSON.parse + new Function)',
        () => {
          k = (k + 1) % MESSAGES;
          const list = closures.get(topics[k]!);
          if (list) {
            const p = JSON.parse(payloads[k]!.toString());
            const out: string[] = [];
            for (const c of list) if (c.fn(p)) out.push(c.out);
          }
        },
        options,
      ),
      b.add(
        'reference interpreter',
        () => {
          k = (k + 1) % MESSAGES;
          reference.process(topics[k]!, payloads[k]!);
        },
        options,
      ),
      b.add(
        'json-rules-engine',
        async () => {
          k = (k + 1) % MESSAGES;
          const facts = JSON.parse(payloads[k]!.toString());
          facts.topic = topics[k];
          await jre.run(facts);
        },
        { minSamples: 3, maxTime: n >= 1000 ? 3 : 2 },
      ),
      b.cycle(),
    );
    const jreBlock = Math.max(1, Math.min(200, Math.round(20000 / n)));
    const medians = await interleaved({
      'wasm engine': { block: 20000, run: (i) => program.process(topics[i % MESSAGES]!, payloads[i % MESSAGES]!) },
      closures: {
        block: 20000,
        run: (i) => {
          const list = closures.get(topics[i % MESSAGES]!);
          if (list) {
            const p = JSON.parse(payloads[i % MESSAGES]!.toString());
            const out: string[] = [];
            for (const c of list) if (c.fn(p)) out.push(c.out);
            return out;
          }
          return undefined;
        },
      },
      reference: { block: Math.max(2, Math.round(200000 / n)), run: (i) => reference.process(topics[i % MESSAGES]!, payloads[i % MESSAGES]!) },
      'json-rules-engine': {
        block: jreBlock,
        run: (i) => {
          const facts = JSON.parse(payloads[i % MESSAGES]!.toString());
          facts.topic = topics[i % MESSAGES];
          return jre.run(facts);
        },
      },
    }, n >= 10000 ? 7 : 21);
    rows.push({ n, ops: Object.fromEntries(summary.results.map((r) => [r.name, r.ops])), interleaved: medians });
  }
  const cold = await topicCacheMiss(compiler, SIZES.includes(1000) ? 1000 : SIZES[0]!);
  await compiler.close();

  console.log('\nInterleaved blocks (median per engine, same messages), and the Wasm engine\'s speed-up:');
  console.log('| filters | wasm engine | closures | reference | json-rules-engine | vs closures | vs reference | vs json-rules-engine |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    const m = r.interleaved;
    const w = m['wasm engine']!;
    const f = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(1)} ms` : x >= 1e4 ? `${(x / 1e3).toFixed(1)} µs` : `${x.toFixed(0)} ns`);
    console.log(`| ${r.n} | ${f(w)} | ${f(m['closures']!)} | ${f(m['reference']!)} | ${f(m['json-rules-engine']!)} | ${(m['closures']! / w).toFixed(2)}x | ${(m['reference']! / w).toFixed(0)}x | ${(m['json-rules-engine']! / w).toFixed(0)}x |`);
  }
  console.log('\nPer-message cost (benny, one case after the other), and the Wasm engine\'s speed-up:');
  console.log('| filters | wasm engine | closures | reference | json-rules-engine | vs closures | vs reference | vs json-rules-engine |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  const ns = (ops: number): string => (ops > 0 ? `${(1e9 / ops).toFixed(0)} ns` : '-');
  for (const r of rows) {
    const w = r.ops['wasm engine']!;
    const c = r.ops['closures (JSON.parse + new Function)']!;
    const ref = r.ops['reference interpreter']!;
    const j = r.ops['json-rules-engine']!;
    console.log(`| ${r.n} | ${ns(w)} | ${ns(c)} | ${ns(ref)} | ${ns(j)} | ${(w / c).toFixed(1)}x | ${(w / ref).toFixed(1)}x | ${(w / j).toFixed(0)}x |`);
  }
}

/**
 * What a message costs when its topic was not seen before (the runtime matches a topic once
 * and keeps the result; a miss copies the topic and walks the topic tree; a stream of new
 * topics makes it stop keeping them for a while, see src/rules/runtime.ts). Filters
 * `site/<i>/+`, so any `site/<i>/<k>` matches: messages cycle over twice as many distinct
 * topics as the cache holds (every message a miss) or over the same 64 (hits).
 */
async function topicCacheMiss(compiler: RulesCompiler, n: number): Promise<{ hit: number; miss: number }> {
  const doc = filtersDocument(n);
  doc.filters.forEach((f, i) => (f.topic = `site/${i}/+`));
  // two instances: a stream of new topics makes an instance stop keeping topics for a while
  const { program } = await compiler.compileDocument(checkDocument(doc));
  const { program: cold } = await compiler.compileDocument(checkDocument(doc));
  const distinct = Array.from({ length: 2 * TOPIC_CACHE + 1 }, (_, k) => `site/${(k * 7919) % n}/s${k}`);
  const payloads = Array.from({ length: MESSAGES }, (_, k) => payload(k));
  let m = 0;
  const r = await interleaved({
    hit: { block: 20000, run: (i) => program.process(distinct[i % MESSAGES]!, payloads[i % MESSAGES]!) },
    miss: { block: 20000, run: () => { m = (m + 1) % distinct.length; return cold.process(distinct[m]!, payloads[m % MESSAGES]!); } },
  });
  console.log(`\nTopic cache, ${n} filters site/<i>/+: seen topics ${r['hit']!.toFixed(0)} ns, a new topic every message ${r['miss']!.toFixed(0)} ns`);
  return { hit: r['hit']!, miss: r['miss']! };
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
