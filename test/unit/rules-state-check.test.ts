// Upload errors of the functions, templates and set_state of fr-script-state.md: each misuse
// names the JSON path and the character position; valid documents keep their meaning.
import { describe, expect, test } from 'vitest';
import { checkDocument } from '../../src/rules/check.js';
import { RulesError } from '../../src/rules/errors.js';
import { formatExpr, parseCondition } from '../../src/rules/parse.js';
import { renderKey, stateValue } from '../../src/rules/template.js';

function filterDoc(statement: Record<string, unknown>): unknown {
  return { filters: [{ topic: 'plant/+/temp', subtopic: 'alert', statements: [statement] }] };
}
function refused(doc: unknown): RulesError {
  try {
    checkDocument(doc);
  } catch (err) {
    if (err instanceof RulesError) return err;
    throw err;
  }
  throw new Error('accepted');
}

describe('conditions with functions', () => {
  test.each([
    ["count('10m') >= 3 and avg($c, '10m') > state('limits/{2}') and deadband($c, 2)", '(((count("600000ms") >= 3) and (avg($c, "600000ms") > state("limits/{2}"))) and deadband($c, 2))'],
    ['prev($a) != $a or changed($b) or delta($x.y) > 1', '(((prev($a) != $a) or changed($b)) or (delta($x.y) > 1))'],
    ['abs($a - 3) < 1 and topic(2) == "x"', '((abs(($a - 3)) < 1) and (topic(2) == "x"))'],
    ["min($a,5) < max($a , '2h') and sum( $a , '1d' ) > 0", '((min($a, 5) < max($a, "7200000ms")) and (sum($a, "86400000ms") > 0))'],
    // outside function arguments a comma is still part of a name, as before
    ['$a,b == 1', '($a,b == 1)'],
    // function names are reserved words only as calls; fields called avg are $avg
    ['$avg > 1 and $count == 2', '(($avg > 1) and ($count == 2))'],
  ])('%s', (text, canonical) => {
    expect(formatExpr(parseCondition(text))).toBe(canonical);
  });

  test.each([
    ['foo($a) > 1', 'unknown name', 0],
    ['avg($a) > 1', 'avg() takes 2 arguments, found 1', 0],
    ['$x > 1 and prev($a, 2)', 'prev() takes 1 argument, found 2', 11],
    ["avg(3, '5m') > 1", 'the first argument of avg() is a field', 4],
    ["avg($a, '5x') > 1", 'a window is a positive integer', 8],
    ['avg($a, 0) > 1', 'a window is a positive integer', 8],
    ['count(1.5) > 1', 'a window is a positive integer', 6],
    ["count(-2) > 1", 'a window is a positive integer', 6],
    ['deadband($a, $b)', 'the band of deadband() is a number', 13],
    ['deadband($a, -1)', 'the band of deadband() is a number', 13],
    ['state($k) == 1', 'the key of state() is a string literal', 6],
    ["state('a/{x}') == 1", 'a state key', 6],
    ['topic(0) == "a"', 'topic() takes a level number', 6],
    ['avg == 1', 'avg is a function', 4],
    ["avg($a, '5m' > 1", 'unclosed ( of avg()', 16],
  ])('%s is refused', (text, problem, position) => {
    const err = refused(filterDoc({ condition: text, new_payload: 'x' }));
    expect(err.code).toBe('EDB_RULES_SYNTAX');
    expect(err.path).toBe('filters/0/statements/0/condition');
    expect(err.problem).toContain(problem);
    expect(err.position).toBe(position);
  });
});

describe('templates and set_state', () => {
  test('a string template and an object template parse; expressions are checked', () => {
    const doc = checkDocument(filterDoc({ condition: 'true', new_payload: { line: '{{ topic(2) }}', nested: { a: ['{{ $c }}', 'x {{ $c + 1 }}'] } }, set_state: { key: 'alarm/{2}', value: '{{ $c }}', px: 1000 } }));
    const st = doc.filterStatements[0]!;
    expect(st.templates?.exprs.length).toBe(4);
    expect(st.templates?.setState?.px).toBe(1000);
    expect(doc.variables).toEqual([['c']]);
  });

  test.each([
    [{ condition: 'true', new_payload: 'hot {{ $c C' }, 'filters/0/statements/0/new_payload', 'unclosed {{', 4],
    [{ condition: 'true', new_payload: 'hot {{ $c > }}' }, 'filters/0/statements/0/new_payload', 'in {{ }}', 12],
    [{ condition: 'true', new_payload: { a: { b: '{{ avg($c) }}' } } }, 'filters/0/statements/0/new_payload/a/b', 'avg() takes 2 arguments', 3],
    [{ condition: 'true', set_state: { key: 'a/{x}', value: '1' } }, 'filters/0/statements/0/set_state/key', 'a state key', 0],
    [{ condition: 'true', set_state: { key: 'a', value: '{{ }}' } }, 'filters/0/statements/0/set_state/value', 'empty {{ }}', 0],
  ])('%j is refused', (statement, path, problem, position) => {
    const err = refused(filterDoc(statement));
    expect(err.path).toBe(path);
    expect(err.problem).toContain(problem);
    expect(err.position).toBe(position);
    expect(err.status).toBe(422);
  });

  test('schema: set_state needs key and value, px is a positive integer, new_payload is a string or an object', () => {
    expect(refused(filterDoc({ condition: 'true', set_state: { key: 'a' } })).path).toBe('filters/0/statements/0/set_state/value');
    expect(refused(filterDoc({ condition: 'true', set_state: { key: 'a', value: 'v', px: 0 } })).path).toBe('filters/0/statements/0/set_state/px');
    expect(refused(filterDoc({ condition: 'true', set_state: { key: 'a', value: 'v', ttl: 3 } })).problem).toContain('unknown key "ttl"');
    expect(refused(filterDoc({ condition: 'true', new_payload: 3 })).problem).toContain('expected a string or an object, got the number 3');
  });

  test('a logic entry has no memory: prev() in its template is refused at its position', () => {
    const err = refused({
      rules: [{ statements: [{ id: 1, topic: 'a', payload_type: 'float', condition: '$x > 1' }], logic: [{ operations: '$1', new_topic: 'o', new_payload: 'v={{ $x }} p={{ prev($x) }}' }] }],
    });
    expect(err.path).toBe('rules/0/logic/0/new_payload');
    expect(err.problem).toContain('prev() keeps memory');
    expect(err.position).toBe(16);
  });

  test('new_payload may be left out with set_state (the statement only writes); otherwise it defaults to ""', () => {
    const doc = checkDocument(filterDoc({ condition: 'true', set_state: { key: 'k', value: 'v' } }));
    expect(doc.document.filters[0]!.statements[0]!.new_payload).toBeUndefined();
    expect(doc.filterStatements[0]!.templates?.publish).toBe(false);
    expect(checkDocument(filterDoc({ condition: 'true' })).document.filters[0]!.statements[0]!.new_payload).toBe('');
  });
});

describe('state keys and values', () => {
  test('placeholders', () => {
    expect(renderKey('limits/{2}/max', 'plant/3/temp')).toBe('limits/3/max');
    expect(renderKey('last/{topic}', 'plant/3/temp')).toBe('last/plant/3/temp');
    expect(renderKey('x/{4}', 'plant/3/temp')).toBeUndefined();
  });
  test('stored bytes: JSON scalars are typed, anything else is the text', () => {
    expect(stateValue(Buffer.from('30'))).toBe(30);
    expect(stateValue(Buffer.from('"a"'))).toBe('a');
    expect(stateValue(Buffer.from('true'))).toBe(true);
    expect(stateValue(Buffer.from('null'))).toBe(null);
    expect(stateValue(Buffer.from('{"a":1}'))).toBe('{"a":1}');
    expect(stateValue(Buffer.from('hot'))).toBe('hot');
    expect(stateValue(undefined)).toBeUndefined();
  });
});
