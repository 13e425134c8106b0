// The fr_script grammar: jsep configured for variables with . and -, Python literals,
// and/or/not with `not` looser than comparisons, chained comparisons; errors with positions.
import { describe, expect, test } from 'vitest';
import { ParseError, formatExpr, parseCondition, parseOperations } from '../../src/rules/parse.js';

const ok: [string, string][] = [
  ['( $inside.temperature < 20 and $inside.humidity >= 60 ) or $temperature < 5', '((($inside.temperature < 20) and ($inside.humidity >= 60)) or ($temperature < 5))'],
  ['($inside.temperature<20 and $inside.humidity>=60)or $temperature<5', '((($inside.temperature < 20) and ($inside.humidity >= 60)) or ($temperature < 5))'],
  ['$heart-rate >= 100 and $heart-rate <= 120', '(($heart-rate >= 100) and ($heart-rate <= 120))'],
  ['$n!=3', '($n != 3)'],
  ['$a-1 > 0', '($a-1 > 0)'],
  ['$a -1 > 0', '(($a - 1) > 0)'],
  ['$list.0 == 1', '($list.0 == 1)'],
  ['not $a == 1 and $b', '(not (($a == 1)) and $b)'],
  ['!($a == 1) || $b && $c', '(not (($a == 1)) or ($b and $c))'],
  ['1 < $a < 3', '(1 < $a < 3)'],
  ['(1 < $a) < 3', '((1 < $a) < 3)'],
  ['$a + 2 * 3 % 2 == -$b', '(($a + ((2 * 3) % 2)) == -($b))'],
  ["$s == 'x' or $t == \"y\"", '(($s == "x") or ($t == "y"))'],
  ['True == $x or $y == None or $z != null or $w == false', '((((true == $x) or ($y == null)) or ($z != null)) or ($w == false))'],
  ['-3.5 < $x and $y < 1e3', '((-3.5 < $x) and ($y < 1000))'],
];
const bad: [string, number][] = [
  ['$a > 1 and (', 11], // an unclosed bracket is reported where it opens
  ['$a ? 1 : 2', 3],
  ['temp > 1', 0],
  ['$a == [1]', 6],
  ['$a $b', 3],
  ['', 0],
  ['$ > 1', 0],
  ['$a.length()', 9],
  ['$a..b > 1', 0],
  ['$a == 1)', 7],
];

describe('conditions', () => {
  for (const [text, expected] of ok) test(text, () => expect(formatExpr(parseCondition(text))).toBe(expected));
  for (const [text, position] of bad) {
    test(`error: ${JSON.stringify(text)}`, () => {
      let error: unknown;
      try {
        parseCondition(text);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ParseError);
      expect((error as ParseError).position).toBe(position);
    });
  }
});

describe('operations', () => {
  test('ids with and/or/not and parentheses', () => {
    expect(parseOperations('( $1 ) and not ( $2 or $30 )')).toEqual({
      kind: 'and',
      left: { kind: 'ref', id: 1, pos: 2 },
      right: { kind: 'not', arg: { kind: 'or', left: { kind: 'ref', id: 2, pos: 17 }, right: { kind: 'ref', id: 30, pos: 23 } } },
    });
  });
  for (const [text, position] of [['$1 and $x', 7], ['$1 > 2', 0], ['$0', 0]] as const) {
    test(`error: ${text}`, () => expect(() => parseOperations(text)).toThrow(expect.objectContaining({ position }) as Error));
  }
});
