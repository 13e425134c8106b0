// Differential, with memory: generated documents using the functions of fr-script-state.md
// (prev, changed, delta, deadband, windows over time and counts, count, abs, topic, state)
// with string and object templates and set_state, run over generated timestamped message
// sequences on several topics. The WebAssembly engine must agree with the reference
// interpreter on every output (topic, bytes, state writes) and on the counters, including
// topics forgotten and window samples merged (small bounds, so both happen often).
import fc from 'fast-check';
import { afterAll, describe, expect, test, vi } from 'vitest';
import type { RulesDocument } from '../../src/rules/ast.js';
import { checkDocument } from '../../src/rules/check.js';
import { RulesCompiler } from '../../src/rules/compiler.js';
import { ReferenceEngine } from '../../src/rules/reference.js';
import type { RuleOutput } from '../../src/rules/runtime.js';

vi.setConfig({ testTimeout: 300_000, hookTimeout: 300_000 });
const compiler = new RulesCompiler();
afterAll(() => compiler.close());

const FIELDS = ['$a', '$b', '$s', '$m', '$o.x'];
const WINDOWS = ["'1s'", "'5s'", "'30s'", '1', '3', '7', "'250ms'"];
const STATE_KEYS = ["'lim'", "'k/{2}'", "'k/{topic}'", "'k/{9}'", "'none'"];
const fnValue: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(fc.constantFrom('prev', 'delta'), fc.constantFrom(...FIELDS)).map(([f, v]) => `${f}(${v})`),
  fc.tuple(fc.constantFrom('avg', 'min', 'max', 'sum'), fc.constantFrom(...FIELDS), fc.constantFrom(...WINDOWS)).map(([f, v, w]) => `${f}(${v}, ${w})`),
  fc.constantFrom(...WINDOWS).map((w) => `count(${w})`),
  fc.constantFrom(...FIELDS).map((v) => `abs(${v})`),
  fc.integer({ min: 1, max: 4 }).map((n) => `topic(${n})`),
  fc.constantFrom(...STATE_KEYS).map((k) => `state(${k})`),
);
const value: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fnValue },
  { weight: 2, arbitrary: fc.constantFrom(...FIELDS) },
  { weight: 1, arbitrary: fc.constantFrom('0', '1', '2.5', '-3', "'x'", "'1'", 'true', 'null') },
  { weight: 1, arbitrary: fc.tuple(fnValue, fc.constantFrom('+', '-', '*', '/'), fc.oneof(fnValue, fc.constantFrom(...FIELDS), fc.constantFrom('1', '2'))).map(([a, op, b]) => `( ${a} ${op} ${b} )`) },
);
const boolFn: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...FIELDS).map((v) => `changed(${v})`),
  fc.tuple(fc.constantFrom(...FIELDS), fc.constantFrom('0', '0.5', '2', '10')).map(([v, d]) => `deadband(${v}, ${d})`),
);
const comparison: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(value, fc.constantFrom('==', '!=', '<', '<=', '>', '>='), value).map(([a, op, b]) => `${a} ${op} ${b}`) },
  { weight: 2, arbitrary: boolFn },
);
const condition: fc.Arbitrary<string> = fc.letrec<{ c: string }>((tie) => ({
  c: fc.oneof({ depthSize: 'small' }, comparison, fc.tuple(tie('c'), fc.constantFrom('and', 'or'), tie('c')).map(([a, op, b]) => `( ${a} ) ${op} ( ${b} )`), tie('c').map((a) => `not ( ${a} )`)),
})).c;
const textTemplate = fc.array(fc.oneof(fc.constantFrom('v=', ' ', '/', 'é'), value.map((v) => `{{ ${v} }}`)), { minLength: 1, maxLength: 3 }).map((p) => p.join(''));
const objectTemplate = fc.dictionary(fc.constantFrom('x', 'y', 'z', 'n'), fc.oneof(value.map((v) => `{{ ${v} }}`), textTemplate, fc.constantFrom(1, 'plain', null, true)), { maxKeys: 3 });
const statement = fc.record({
  condition,
  payload: fc.oneof(fc.constant(''), fc.constant('fixed'), textTemplate, objectTemplate, fc.constant(undefined)),
  state: fc.option(fc.record({ key: fc.constantFrom('w/{2}', 'w/{topic}', 'w', 'w/{7}'), value: fc.oneof(textTemplate, objectTemplate), px: fc.option(fc.integer({ min: 1, max: 5000 }), { nil: undefined }) }), { nil: undefined }),
});
const logicTemplate = fc.oneof(
  fc.constant(''),
  fc.array(fc.oneof(fc.constantFrom('r ', '-'), fc.oneof(fc.constantFrom(...FIELDS), fc.integer({ min: 1, max: 3 }).map((n) => `topic(${n})`), fc.constantFrom(...STATE_KEYS).map((k) => `state(${k})`), fc.constantFrom(...FIELDS).map((v) => `abs(${v})`)).map((v) => `{{ ${v} }}`)), { minLength: 1, maxLength: 3 }).map((p) => p.join('')),
);

function documentOf(statements: fc.Arbitrary<unknown>[] | unknown[], rules: { condition: string; type: string }[], logic: string[]): RulesDocument {
  return {
    filters: [
      {
        topic: 's/+',
        subtopic: 'out',
        statements: (statements as { condition: string; payload: unknown; state?: { key: string; value: unknown; px?: number } }[]).map((s) => {
          const st: Record<string, unknown> = { condition: s.condition };
          if (s.payload !== undefined || !s.state) st['new_payload'] = s.payload ?? '';
          if (s.state) st['set_state'] = { key: s.state.key, value: s.state.value, ...(s.state.px === undefined ? {} : { px: s.state.px }) };
          return st;
        }),
      },
    ] as unknown as RulesDocument['filters'],
    rules: [
      {
        statements: rules.map((r, i) => ({ id: i + 1, topic: i % 2 === 0 ? 's/#' : 's/1', payload_type: r.type as 'float', condition: r.condition })),
        logic: logic.map((t, i) => ({ operations: `$${(i % rules.length) + 1}`, new_topic: `r/${i}`, new_payload: t, ...(i === 1 ? { set_state: { key: 'rl/{2}', value: t || '{{ $a }}' } } : {}) })),
      },
    ],
  };
}

const fieldValue = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: -20, max: 20 }) },
  { weight: 2, arbitrary: fc.double({ min: -100, max: 100, noNaN: true }) },
  { weight: 1, arbitrary: fc.constantFrom('x', 'é', '1', '', 'abc') },
  { weight: 1, arbitrary: fc.constantFrom(true, false, null) },
);
const message = fc.record({
  topic: fc.constantFrom('s/1', 's/2', 's/3', 's/4/deep', 't'),
  step: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 400 }), fc.integer({ min: 1000, max: 20_000 })),
  fields: fc.record({ a: fieldValue, b: fieldValue, s: fieldValue, o: fc.oneof(fc.record({ x: fieldValue }), fieldValue) }, { requiredKeys: [] }),
  raw: fc.option(fc.constantFrom('nope', '[1]', '{"a":'), { freq: 15, nil: undefined }),
});

const STORE = new Map<string, Buffer>([
  ['lim', Buffer.from('3')],
  ['k/1', Buffer.from('5')],
  ['k/2', Buffer.from('"x"')],
  ['k/s/3', Buffer.from('true')],
  ['k/3', Buffer.from('{"a":1}')],
  ['k/4', Buffer.from('null')],
  ['k/s/1', Buffer.from('not json')],
]);
const show = (o: readonly RuleOutput[]): string[] => o.map((x) => (x.state ? `STATE ${x.state.key} px=${x.state.px ?? ''} ${x.payload.toString('hex')}` : `${x.topic} ${x.payload.toString('hex')}`));

describe('stateful fr_script: Wasm engine vs reference interpreter', () => {
  for (let batch = 0; batch < 3; batch++) {
    test(`batch ${batch}: generated documents and timestamped messages`, async () => {
      const statements = fc.sample(statement, { numRuns: 60, seed: 11_000 + batch });
      const rules = fc.sample(fc.record({ condition, type: fc.constantFrom('int', 'float', 'str', 'bool') }), { numRuns: 12, seed: 12_000 + batch });
      const logic = fc.sample(logicTemplate, { numRuns: 4, seed: 13_000 + batch });
      const doc = checkDocument(documentOf(statements, rules, logic));
      const limits = { topics: 3, samples: 5 };
      const { program } = await compiler.compileDocument(doc, undefined, limits);
      program.stateReader = (k) => STORE.get(k);
      const reference = new ReferenceEngine(doc, { limits, state: (k) => STORE.get(k) });
      const messages = fc.sample(message, { numRuns: 1500, seed: 14_000 + batch });
      let now = 1_700_000_000_000;
      let outputs = 0;
      let writes = 0;
      for (const [i, m] of messages.entries()) {
        now += m.step;
        const body = Buffer.from(m.raw ?? JSON.stringify(m.fields));
        const wasm = show(program.process(m.topic, body, now));
        const ref = show(reference.process(m.topic, body, now));
        if (JSON.stringify(wasm) !== JSON.stringify(ref)) expect({ i, topic: m.topic, body: body.toString(), wasm }).toEqual({ i, topic: m.topic, body: body.toString(), wasm: ref });
        outputs += ref.length;
        writes += ref.filter((r) => r.startsWith('STATE')).length;
      }
      expect(program.counters()).toEqual(reference.counters);
      // the run exercised what it is about
      expect(outputs).toBeGreaterThan(200);
      expect(writes).toBeGreaterThan(10);
      expect(reference.counters.memoryEvicted).toBeGreaterThan(0);
      expect(reference.counters.samplesMerged).toBeGreaterThan(0);
    });
  }

  test('large bounds: windows keep 1,024 exact samples, then merge into 64 buckets', async () => {
    const doc = checkDocument({
      filters: [
        {
          topic: 'w/+',
          subtopic: 'o',
          statements: [
            { condition: "count('10s') > 0", new_payload: { n: "{{ count('10s') }}", avg: "{{ avg($v, '10s') }}", min: "{{ min($v, '10s') }}", max: "{{ max($v, '10s') }}", sum: "{{ sum($v, '10s') }}" } },
            { condition: 'count(2000) > 0', new_payload: "{{ count(2000) }} {{ avg($v, 2000) }} {{ sum($v, 2000) }} {{ min($v, 2000) }} {{ max($v, 2000) }}" },
          ],
        },
      ],
    });
    const { program } = await compiler.compileDocument(doc);
    const reference = new ReferenceEngine(doc);
    const values = fc.sample(fc.oneof(fc.double({ min: -1e6, max: 1e6, noNaN: true }), fc.constant('x')), { numRuns: 6000, seed: 99 });
    let now = 0;
    for (const [i, v] of values.entries()) {
      now += i % 500 === 0 ? 3000 : 1 + (i % 7);
      const body = Buffer.from(JSON.stringify({ v }));
      const topic = `w/${i % 2}`;
      expect(show(program.process(topic, body, now))).toEqual(show(reference.process(topic, body, now)));
    }
    expect(program.counters()).toEqual(reference.counters);
    expect(reference.counters.samplesMerged).toBeGreaterThan(1000);
  });
});
