// Differential: thousands of generated conditions and payloads; the WebAssembly engine must
// agree with the reference interpreter (src/rules/reference.ts) on every output byte and on
// the counters (evaluations, unknown results by cause, payloads that are not JSON objects).
import fc from 'fast-check';
import { afterAll, describe, expect, test, vi } from 'vitest';

// compiling runs asc (seconds; much longer on a loaded shared machine)
vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });
import type { RulesDocument } from '../../src/rules/ast.js';
import { checkDocument } from '../../src/rules/check.js';
import { RulesCompiler } from '../../src/rules/compiler.js';
import { ReferenceEngine } from '../../src/rules/reference.js';
import type { RulesProgram } from '../../src/rules/runtime.js';

const compiler = new RulesCompiler();
afterAll(() => compiler.close());

// ---- payloads, as trees with raw number tokens so the number parser sees many spellings
type J =
  | { t: 'num'; raw: string }
  | { t: 'str'; s: string }
  | { t: 'bool'; v: boolean }
  | { t: 'null' }
  | { t: 'arr'; items: J[] }
  | { t: 'obj'; entries: [string, J][] };

const digits = (min: number, max: number) => fc.array(fc.constantFrom(...'0123456789'), { minLength: min, maxLength: max }).map((d) => d.join(''));
const numberToken: fc.Arbitrary<string> = fc.oneof(
  fc.integer({ min: -200, max: 200 }).map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)),
  fc
    .tuple(fc.boolean(), fc.oneof(fc.constant('0'), digits(1, 1).filter((d) => d !== '0').chain((h) => digits(0, 18).map((t) => h + t))), fc.option(digits(1, 20)), fc.option(fc.tuple(fc.constantFrom('e', 'E'), fc.constantFrom('', '+', '-'), digits(1, 3))))
    .map(([neg, int, frac, exp]) => `${neg ? '-' : ''}${int}${frac === null ? '' : '.' + frac}${exp === null ? '' : exp.join('')}`),
);
const text: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('', 'x', 'abc', '10', ' 7 ', '+3.5', '-2e2', '.5', '5.', '1e', 'true', 'True', 'false', 'False', 'é', '😀', 'a"b', 'a\\b', 'tab\t', 'ÿ', '\u00ff\u0100', 'null'),
  fc.string({ maxLength: 6 }),
  fc.string({ unit: 'grapheme', maxLength: 4 }),
  // long strings: the scanner reads eight bytes at a time until a quote, backslash or control character
  fc.string({ unit: fc.constantFrom('a', 'b', '"', '\\', '\u0001', '\u001f', 'é', '😀', ' ', '\u007f'), minLength: 7, maxLength: 40 }),
);
const KEYS = ['a', 'b', 's', 'n', 'heart-rate', 'inside', 'list', 'obj', 'temperature'];
const leaf: fc.Arbitrary<J> = fc.oneof(
  { weight: 4, arbitrary: numberToken.map((raw) => ({ t: 'num' as const, raw })) },
  { weight: 3, arbitrary: text.map((s) => ({ t: 'str' as const, s })) },
  { weight: 1, arbitrary: fc.boolean().map((v) => ({ t: 'bool' as const, v })) },
  { weight: 1, arbitrary: fc.constant({ t: 'null' as const }) },
);
const jvalue: fc.Arbitrary<J> = fc.letrec<{ v: J }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.array(tie('v'), { maxLength: 3 }).map((items) => ({ t: 'arr' as const, items })),
    fc.array(fc.tuple(fc.constantFrom(...KEYS, 'temperature', 'humidity', '0'), tie('v')), { maxLength: 3 }).map((entries) => ({ t: 'obj' as const, entries })),
  ),
})).v;
const payloadTree: fc.Arbitrary<J> = fc.array(fc.tuple(fc.constantFrom(...KEYS), jvalue), { maxLength: 8 }).map((entries) => ({ t: 'obj' as const, entries }));

/** Serialises with optional white space and \u escapes (exercises the scanner's decoding). */
function serialize(j: J, escape: boolean, ws: string): string {
  const str = (s: string): string => {
    if (!escape) return JSON.stringify(s);
    let out = '"';
    for (const ch of s) {
      const units = [...Array(ch.length).keys()].map((i) => ch.charCodeAt(i));
      out += units.map((u) => '\\u' + u.toString(16).padStart(4, '0')).join('');
    }
    return out + '"';
  };
  switch (j.t) {
    case 'num':
      return j.raw;
    case 'str':
      return str(j.s);
    case 'bool':
      return String(j.v);
    case 'null':
      return 'null';
    case 'arr':
      return `[${ws}${j.items.map((i) => serialize(i, escape, ws)).join(`,${ws}`)}${ws}]`;
    case 'obj':
      return `{${ws}${j.entries.map(([k, v]) => `${str(k)}${ws}:${ws}${serialize(v, escape, ws)}`).join(`,${ws}`)}${ws}}`;
  }
}

const payload: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 10, arbitrary: fc.tuple(payloadTree, fc.boolean(), fc.constantFrom('', ' ', '\n\t')).map(([t, e, ws]) => Buffer.from(serialize(t, e, ws))) },
  // not JSON objects: arrays, scalars, truncated, trailing garbage
  { weight: 1, arbitrary: fc.constantFrom('[1,2]', '42', '"x"', 'null', '', '{', '{"a":1', '{"a":1}}', '{"a":01}', '{"a":1,}', '{"a":"\u0001"}', '{"a":tru}', '{"a":1} x', '\ufeff{"a":1}', '{"a":"abcdefghijklmnop\u0001qrstuvw"}', '{"abcdefghijklmnopq\u001f":1}', '{"a":"abcdefghijklmnopqrstuvwxyz').map((s) => Buffer.from(s)) },
  { weight: 1, arbitrary: fc.tuple(payloadTree, fc.nat()).map(([t, cut]) => { const s = serialize(t, false, ''); return Buffer.from(s.slice(0, cut % (s.length + 1))); }) },
);

// ---- conditions, rendered as text (so the parser is part of what is tested)
const VARS = ['$a', '$b', '$s', '$n', '$heart-rate', '$inside.temperature', '$inside.humidity', '$list.0', '$list.1', '$obj', '$obj.a', '$missing', '$temperature', '$inside.0'];
const literal = fc.oneof(
  fc.integer({ min: -5, max: 200 }).map(String),
  fc.constantFrom('0.5', '-3.5', '1e2', '100', '0', '-0', "'x'", '"abc"', "'10'", "''", "'é'", "'😀'", "'True'", 'true', 'false', 'True', 'False', 'null', 'None'),
);
const valueExpr: fc.Arbitrary<string> = fc.letrec<{ v: string }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    fc.constantFrom(...VARS),
    literal,
    fc.tuple(tie('v'), fc.constantFrom('+', '-', '*', '/', '%'), tie('v')).map(([a, op, b]) => `( ${a} ${op} ${b} )`),
    tie('v').map((a) => `-( ${a} )`),
  ),
})).v;
const CMP = ['==', '!=', '<', '<=', '>', '>='];
const comparison = fc.oneof(
  { weight: 5, arbitrary: fc.tuple(fc.constantFrom(...VARS), fc.constantFrom(...CMP), literal).map(([a, op, b]) => `${a} ${op} ${b}`) },
  { weight: 3, arbitrary: fc.tuple(valueExpr, fc.constantFrom(...CMP), valueExpr).map(([a, op, b]) => `${a} ${op} ${b}`) },
  { weight: 1, arbitrary: fc.tuple(valueExpr, fc.constantFrom(...CMP), valueExpr, fc.constantFrom(...CMP), valueExpr).map(([a, o1, b, o2, c]) => `${a} ${o1} ${b} ${o2} ${c}`) },
  { weight: 1, arbitrary: fc.constantFrom(...VARS, 'true', 'False', '1') },
);
const condition: fc.Arbitrary<string> = fc.letrec<{ c: string }>((tie) => ({
  c: fc.oneof(
    { depthSize: 'small' },
    comparison,
    fc.tuple(tie('c'), fc.constantFrom('and', 'or', '&&', '||'), tie('c')).map(([a, op, b]) => `( ${a} ) ${op} ( ${b} )`),
    tie('c').map((a) => `not ( ${a} )`),
  ),
})).c;

function document(conditions: string[], types: string[]): RulesDocument {
  return {
    filters: conditions.map((c, i) => ({ topic: 't', subtopic: `f${i}`, statements: [{ condition: c, new_payload: '' }] })),
    rules: [
      {
        statements: conditions.map((c, i) => ({ id: i + 1, topic: 't', payload_type: types[i] as 'int', condition: c })),
        logic: conditions.map((_, i) => ({ operations: `$${i + 1}`, new_topic: `r${i + 1}`, new_payload: '' })),
      },
    ],
  };
}

function agree(program: RulesProgram, reference: ReferenceEngine, topic: string, p: Buffer): void {
  const wasm = program.process(topic, p).map((o) => `${o.topic} ${o.payload.toString('hex')}`);
  const ref = reference.process(topic, p).map((o) => `${o.topic} ${o.payload.toString('hex')}`);
  expect(wasm).toEqual(ref);
}

describe('Wasm engine vs reference interpreter', () => {
  for (let batch = 0; batch < 4; batch++) {
    test(`conditions batch ${batch}`, async () => {
      const conditions = fc.sample(condition, { numRuns: 120, seed: 1000 + batch });
      const types = fc.sample(fc.constantFrom('int', 'float', 'str', 'bool'), { numRuns: 120, seed: 2000 + batch });
      const doc = checkDocument(document(conditions, types));
      const { program } = await compiler.compileDocument(doc);
      const reference = new ReferenceEngine(doc);
      fc.assert(
        fc.property(payload, (p) => {
          agree(program, reference, 't', p);
        }),
        { numRuns: 400, seed: 3000 + batch },
      );
      expect(program.counters()).toEqual(reference.counters);
      // the run did exercise both outcomes and both causes of unknown
      expect(reference.counters.fires).toBeGreaterThan(100);
      expect(reference.counters.missingVariable).toBeGreaterThan(0);
      expect(reference.counters.kindMismatch).toBeGreaterThan(0);
    }, 120_000);
  }

  test('topic matching: the decision tree agrees with MQTT matching (wide levels are hashed)', async () => {
    const level = fc.oneof({ weight: 6, arbitrary: fc.constantFrom('a', 'b', 'c', 'dev', '', '$x', 'é') }, { weight: 3, arbitrary: fc.integer({ min: 0, max: 60 }).map(String) }, { weight: 1, arbitrary: fc.constant('+') });
    const filterArb = fc.tuple(fc.array(level, { minLength: 1, maxLength: 4 }), fc.boolean()).map(([ls, hash]) => (hash ? [...ls, '#'] : ls).join('/'));
    const filters = [...fc.sample(filterArb, { numRuns: 250, seed: 5 }).filter((f) => f.length > 0), '#', '+', '+/+', '$x/#', ...Array.from({ length: 40 }, (_, i) => `site/${i}/s`)];
    const doc = checkDocument({ filters: filters.map((topic, i) => ({ topic, subtopic: `f${i}`, statements: [{ condition: 'true', new_payload: 'x' }] })) });
    const { program } = await compiler.compileDocument(doc);
    const reference = new ReferenceEngine(doc);
    const topicArb = fc.array(fc.oneof(fc.constantFrom('a', 'b', 'c', 'dev', '', '$x', 'é', 'site', 's'), fc.integer({ min: 0, max: 60 }).map(String)), { minLength: 1, maxLength: 5 }).map((ls) => ls.join('/'));
    const topics = fc.sample(topicArb, { numRuns: 2000, seed: 6 }).filter((t) => t.length > 0);
    let matched = 0;
    for (const t of topics) {
      agree(program, reference, t, Buffer.from('{}'));
      matched += reference.process(t, Buffer.from('{}')).length;
    }
    expect(matched).toBeGreaterThan(1000);
    expect(program.counters().topicMatches).toBe(matched);
  }, 120_000);

  test('rule buffer over several topics', async () => {
    const topics = ['a/1', 'a/2', 'b', 'a', 'c/x/y'];
    const filters = ['a/1', 'a/+', 'b', '#', 'a/#', 'c/+/y', '+/1'];
    const stmt = fc.record({ topic: fc.constantFrom(...filters), k: fc.integer({ min: 0, max: 9 }), op: fc.constantFrom('>', '<', '==', '!=') });
    const logicExpr = (n: number): fc.Arbitrary<string> =>
      fc.letrec<{ l: string }>((tie) => ({
        l: fc.oneof({ depthSize: 'small' }, fc.integer({ min: 1, max: n }).map((i) => `$${i}`), fc.tuple(tie('l'), fc.constantFrom('and', 'or'), tie('l')).map(([a, o, b]) => `( ${a} ${o} ${b} )`), tie('l').map((a) => `not ${a}`)),
      })).l;
    const scenario = fc.record({
      statements: fc.array(stmt, { minLength: 1, maxLength: 6 }),
      logicSeeds: fc.array(fc.tuple(fc.nat(), fc.boolean()), { minLength: 1, maxLength: 4 }),
    });
    const scenarios = fc.sample(scenario, { numRuns: 12, seed: 77 });
    for (const [si, s] of scenarios.entries()) {
      const n = s.statements.length;
      const logic = s.logicSeeds.map(([seed, fixed], i) => ({
        operations: fc.sample(logicExpr(n), { numRuns: 1, seed })[0]!,
        new_topic: `out/${i}`,
        new_payload: fixed ? 'fixed' : '',
      }));
      const doc = checkDocument({
        rules: [{ statements: s.statements.map((st, i) => ({ id: i + 1, topic: st.topic, payload_type: 'int', condition: `$v ${st.op} ${st.k}` })), logic }],
      });
      const { program } = await compiler.compileDocument(doc);
      const reference = new ReferenceEngine(doc);
      const messages = fc.sample(fc.tuple(fc.constantFrom(...topics), fc.oneof(fc.integer({ min: 0, max: 9 }).map((v) => `{"v":${v},"i":"${si}"}`), fc.constantFrom('{}', 'nope'))), { numRuns: 300, seed: si });
      for (const [topic, body] of messages) agree(program, reference, topic, Buffer.from(body));
      expect(program.counters()).toEqual(reference.counters);
    }
  }, 300_000);
});

describe('payload scanner limits (documented differences from JSON.parse)', () => {
  test('nesting: 512 levels is a JSON object, 513 is not JSON, under a key a condition reads or not', async () => {
    const doc = checkDocument({ filters: [{ topic: 't', subtopic: 'f', statements: [{ condition: '$a == 1 and $inside.x == 2', new_payload: 'ok' }] }] });
    const { program } = await compiler.compileDocument(doc);
    // the root object is level 1; `levels - 2` arrays inside a one-level object under the key
    const nested = (key: string, levels: number): Buffer => Buffer.from(`{"a":1,"${key}":{"x":2,"y":${'['.repeat(levels - 2)}${']'.repeat(levels - 2)}}}`);
    for (const key of ['inside', 'other']) {
      const fires = key === 'inside' ? 1 : 0;
      expect(program.process('t', nested(key, 512)).length).toBe(fires);
      const before = program.counters().notJson;
      expect(program.process('t', nested(key, 513)).length).toBe(0);
      expect(program.counters().notJson).toBe(before + 1);
    }
    // a long string with escapes after the eight-byte steps, and a string cut at the payload's end
    expect(program.process('t', Buffer.from('{"a":1,"inside":{"x":2},"s":"abcdefgh\\"ijklmnopq\\u00e9rstuvwxyz\\\\"}')).length).toBe(1);
    expect(program.process('t', Buffer.from('{"a":1,"inside":{"x":2},"s":"abcdefghijklmnop')).length).toBe(0);
  });
});
