/**
 * fr_script condition and operation parser: jsep, configured for the spec's grammar.
 *
 * - `$`-variables: `$` and every character up to white space or one of `( ) = ! < > + * / % ' " & |`
 *   (so `-` and `.` belong to the name: `$heart-rate`, `$inside.temperature`), read by a
 *   `gobble-token` hook;
 * - operators, loosest first: `or`/`||`; `and`/`&&`; `not`/`!`; comparisons (chained as in
 *   Python); `+ -`; `* / %`; unary `-`;
 * - literals: numbers, single/double-quoted strings, true/false/True/False, null/None.
 *
 * jsep binds every unary operator tightly; `not` is looser than the comparisons, so the tree
 * is rotated afterwards (`not $a == 1` is `not ($a == 1)`). Parentheses are kept as Group
 * nodes while converting so that rotation and chaining respect them.
 *
 * jsep's configuration is global to the process; this module owns it (nothing else in the
 * broker uses jsep).
 */
import jsepDefault from 'jsep';
import type { ArithOp, CallExpr, CompareOp, Expr, LogicExpr, Window } from './ast.js';

/** A syntax error with the character offset where it was found. */
export class ParseError extends Error {
  constructor(
    readonly problem: string,
    readonly position: number,
  ) {
    super(`${problem} at ${position}`);
  }
}

const COMPARE_OPS = new Set<string>(['==', '!=', '<', '<=', '>', '>=']);
const ARITH_OPS = new Set<string>(['+', '-', '*', '/', '%']);
/** Characters that end a variable name (besides white space). */
const NAME_END = new Set('()=!<>+*/%\'"&|');
const WORD_LITERALS: Record<string, boolean | null> = { true: true, false: false, True: true, False: false, null: null, None: null };
const WORD_OPERATORS = new Set(['and', 'or', 'not']);
/** Functions of specs/fr-script-state.md: reserved words (a field called avg is still $avg). */
export const FUNCTIONS = new Set(['prev', 'changed', 'delta', 'deadband', 'avg', 'min', 'max', 'sum', 'count', 'abs', 'topic', 'state']);
/** Inside function arguments a comma also ends a variable name (`avg($c, '5m')`). */
let argumentDepth = 0;

interface JsepState {
  index: number;
  gobbleExpression(): jsepDefault.Expression | false;
  gobbleSpaces(): void;
  expr: string;
  code: number;
  char: string;
  gobbleExpressions(untilICode?: number): jsepDefault.Expression[];
  gobbleStringLiteral(): jsepDefault.Expression;
  throwError(message: string): never;
}

const jsep = jsepDefault;
const Jsep = (jsepDefault as unknown as { Jsep: new (expr: string) => unknown }).Jsep;
let configured = false;

function configure(): void {
  if (configured) return;
  configured = true;
  jsep.removeAllBinaryOps();
  jsep.removeAllUnaryOps();
  jsep.removeAllLiterals();
  // `$` is read by the hook below; not an identifier character, so `and$x` splits.
  jsep.removeIdentifierChar('$');
  // No ternary operator in fr_script.
  const after = (jsep.hooks as unknown as Record<string, ((env: unknown) => void)[] | undefined>)['after-expression'];
  if (after) {
    for (let i = after.length - 1; i >= 0; i--) if (after[i]!.name === 'gobbleTernary') after.splice(i, 1);
  }
  jsep.addBinaryOp('or', 1);
  jsep.addBinaryOp('||', 1);
  jsep.addBinaryOp('and', 2);
  jsep.addBinaryOp('&&', 2);
  for (const op of COMPARE_OPS) jsep.addBinaryOp(op, 6);
  jsep.addBinaryOp('+', 9);
  jsep.addBinaryOp('-', 9);
  jsep.addBinaryOp('*', 10);
  jsep.addBinaryOp('/', 10);
  jsep.addBinaryOp('%', 10);
  jsep.addUnaryOp('-');
  jsep.addUnaryOp('not');
  jsep.addUnaryOp('!');

  jsep.hooks.add('gobble-token', function (this: unknown, env: { node?: jsepDefault.Expression }) {
    const p = this as JsepState;
    const ch = p.char;
    const start = p.index;
    if (ch === '$') {
      let end = start + 1;
      while (end < p.expr.length) {
        const c = p.expr[end]!;
        if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || NAME_END.has(c) || (c === ',' && argumentDepth > 0)) break;
        end++;
      }
      if (end === start + 1) p.throwError('expected a variable name after $');
      p.index = end;
      env.node = { type: 'Variable', name: p.expr.slice(start + 1, end), start } as unknown as jsepDefault.Expression;
    } else if (ch === '(') {
      p.index++;
      const nodes = p.gobbleExpressions(41);
      if (p.code !== 41) {
        // reported at the bracket that is left open, not at the end of the text
        p.index = start;
        p.throwError("unclosed '(': no ')' closes it");
      }
      if (nodes.length === 0) p.throwError('empty parentheses');
      if (nodes.length > 1) {
        p.index = start;
        p.throwError('expected one expression inside parentheses');
      }
      p.index++;
      env.node = { type: 'Group', expression: nodes[0], start } as unknown as jsepDefault.Expression;
    } else if (ch === '"' || ch === "'") {
      // read here so that no member access or call can follow a string
      env.node = p.gobbleStringLiteral();
    } else if (ch === '[') {
      p.throwError('arrays are not part of fr_script');
    } else if (/[A-Za-z_]/.test(ch)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(p.expr.slice(start))!;
      const word = m[0];
      if (WORD_OPERATORS.has(word)) return; // jsep reads `not` as a unary operator
      if (FUNCTIONS.has(word)) {
        p.index = start + word.length;
        p.gobbleSpaces();
        if (p.char !== '(') p.throwError(`${word} is a function: ${word}(...)`);
        p.index++;
        const args: { node: jsepDefault.Expression; start: number }[] = [];
        argumentDepth++;
        try {
          p.gobbleSpaces();
          if (p.char === ')') p.index++;
          else {
            for (;;) {
              p.gobbleSpaces();
              const at = p.index;
              const node = p.gobbleExpression();
              if (!node) p.throwError(`expected an argument of ${word}()`);
              args.push({ node: node as jsepDefault.Expression, start: at });
              p.gobbleSpaces();
              if (p.char === ',') {
                p.index++;
                continue;
              }
              if (p.char === ')') {
                p.index++;
                break;
              }
              p.throwError(p.index >= p.expr.length ? `unclosed ( of ${word}()` : `expected , or ) in ${word}()`);
            }
          }
        } finally {
          argumentDepth--;
        }
        env.node = { type: 'Call', fn: word, args, start } as unknown as jsepDefault.Expression;
        return;
      }
      if (Object.prototype.hasOwnProperty.call(WORD_LITERALS, word)) {
        p.index = start + word.length;
        env.node = { type: 'Literal', value: WORD_LITERALS[word]!, raw: word } as jsepDefault.Expression;
        return;
      }
      p.throwError(`unknown name '${word}' (variables start with $)`);
    }
  });
}

interface Parsed {
  node: jsepDefault.Expression;
}

/**
 * How deep an expression may nest (brackets, operators, calls). Deeper ones are refused with a
 * position: recursion over a 20,000-level tree would exhaust the stack of the parser, the checks
 * or the compiler worker, and no real condition comes near it.
 */
export const MAX_EXPRESSION_DEPTH = 128;

/** The first bracket that opens past MAX_EXPRESSION_DEPTH levels (outside string literals), or -1. */
function tooDeepBracket(text: string): number {
  let depth = 0;
  let quote = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '(') {
      if (++depth > MAX_EXPRESSION_DEPTH) return i;
    } else if (c === ')') depth--;
  }
  return -1;
}

/**
 * Depth of a jsep tree, without recursion (a left-deep chain of 20,000 operators is legal jsep);
 * on the way, a number literal that is not a finite 64-bit float (1e400, 400 digits) is refused
 * where it is written.
 */
function treeDepth(root: jsepDefault.Expression, text: string): number {
  let max = 0;
  const stack: [unknown, number][] = [[root, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (depth > max) max = depth;
    if (max > MAX_EXPRESSION_DEPTH) return max;
    const n = node as Record<string, unknown>;
    if (n['type'] === 'Literal' && typeof n['value'] === 'number' && !Number.isFinite(n['value'])) {
      throw new ParseError('number out of range (larger than a 64-bit float holds)', Math.max(0, text.indexOf(String(n['raw']))));
    }
    for (const key of ['left', 'right', 'argument', 'expression']) if (n[key] && typeof n[key] === 'object') stack.push([n[key], depth + 1]);
    const args = n['args'];
    if (Array.isArray(args)) for (const a of args) stack.push([(a as { node?: unknown }).node ?? a, depth + 1]);
  }
  return max;
}

function parseRaw(text: string): Parsed {
  configure();
  if (text.trim() === '') throw new ParseError('empty expression', 0);
  const deep = tooDeepBracket(text);
  if (deep >= 0) throw new ParseError(`brackets nested more than ${MAX_EXPRESSION_DEPTH} levels deep`, deep);
  argumentDepth = 0;
  const parser = new Jsep(text) as unknown as JsepState & { gobbleExpression(): jsepDefault.Expression | false; gobbleSpaces(): void };
  let node: jsepDefault.Expression | false;
  try {
    node = parser.gobbleExpression();
    parser.gobbleSpaces();
  } catch (err) {
    const e = err as Error & { index?: number; description?: string };
    throw new ParseError(e.description ?? e.message, e.index ?? 0);
  }
  if (parser.index < text.length) {
    throw new ParseError(`unexpected '${text[parser.index]}'`, parser.index);
  }
  if (!node) throw new ParseError('expected an expression', parser.index);
  if (treeDepth(node, text) > MAX_EXPRESSION_DEPTH) throw new ParseError(`expression nested more than ${MAX_EXPRESSION_DEPTH} levels deep (split it into statements)`, 0);
  return { node };
}

/** Intermediate form: a typed node plus whether it was written in parentheses. */
type Marked = Expr & { paren?: boolean };

const UNARY_NOT = new Set(['not', '!']);

function convert(node: jsepDefault.Expression): Marked {
  const n = node as unknown as Record<string, unknown>;
  switch (node.type) {
    case 'Variable': {
      const name = n['name'] as string;
      const path = name.split('.');
      const pos = n['start'] as number;
      if (path.some((p) => p === '')) throw new ParseError(`empty field name in $${name}`, pos);
      return { kind: 'var', name, path, pos };
    }
    case 'Call':
      return convertCall(n['fn'] as string, n['args'] as { node: jsepDefault.Expression; start: number }[], n['start'] as number);
    case 'Group': {
      const inner = convert(n['expression'] as jsepDefault.Expression);
      return { ...inner, paren: true };
    }
    case 'Literal': {
      const value = n['value'] as unknown;
      if (typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean' || value === null) return { kind: 'lit', value };
      throw new ParseError(`unsupported literal ${String(n['raw'])}`, 0);
    }
    case 'UnaryExpression': {
      const op = n['operator'] as string;
      const arg = convert(n['argument'] as jsepDefault.Expression);
      if (op === '-') {
        if (arg.kind === 'lit' && typeof arg.value === 'number' && !arg.paren) return { kind: 'lit', value: -arg.value };
        return { kind: 'neg', arg: strip(arg) };
      }
      if (UNARY_NOT.has(op)) return { kind: 'not', arg: strip(arg) };
      throw new ParseError(`unsupported operator ${op}`, 0);
    }
    case 'BinaryExpression': {
      const op = n['operator'] as string;
      const left = convert(n['left'] as jsepDefault.Expression);
      const right = convert(n['right'] as jsepDefault.Expression);
      if (op === 'and' || op === '&&') return { kind: 'and', left: strip(left), right: strip(right) };
      if (op === 'or' || op === '||') return { kind: 'or', left: strip(left), right: strip(right) };
      return rotateNot(op, left, right);
    }
    default:
      throw new ParseError(`unsupported expression (${node.type})`, 0);
  }
}

/** `'30s'`, `'5m'`, `'2h'`, `'1d'`, `'250ms'`: milliseconds; undefined when not a duration. */
export function parseDuration(text: string): number | undefined {
  const m = /^([0-9]+)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms'];
  const ms = Number(m[1]) * unit;
  return ms > 0 && Number.isSafeInteger(ms) ? ms : undefined;
}

const ARITY: Record<string, number> = { prev: 1, changed: 1, delta: 1, deadband: 2, avg: 2, min: 2, max: 2, sum: 2, count: 1, abs: 1, topic: 1, state: 1 };
const USAGE: Record<string, string> = {
  prev: 'prev($field)',
  changed: 'changed($field)',
  delta: 'delta($field)',
  deadband: 'deadband($field, number)',
  avg: "avg($field, window)",
  min: "min($field, window)",
  max: "max($field, window)",
  sum: "sum($field, window)",
  count: "count(window)",
  abs: 'abs(expression)',
  topic: 'topic(level)',
  state: "state('key')",
};

/** Largest count window (messages). */
export const MAX_COUNT_WINDOW = 1_000_000;

function convertCall(fn: string, args: { node: jsepDefault.Expression; start: number }[], pos: number): CallExpr {
  if (args.length !== ARITY[fn]) {
    throw new ParseError(`${fn}() takes ${ARITY[fn]} argument${ARITY[fn] === 1 ? '' : 's'}, found ${args.length}: ${USAGE[fn]}`, pos);
  }
  const literal = (i: number): unknown => {
    const node = args[i]!.node as unknown as Record<string, unknown>;
    if (node['type'] === 'Literal') return node['value'];
    if (node['type'] === 'UnaryExpression' && node['operator'] === '-') {
      const inner = node['argument'] as Record<string, unknown>;
      if (inner['type'] === 'Literal' && typeof inner['value'] === 'number') return -(inner['value'] as number);
    }
    return undefined;
  };
  const variable = (i: number): Extract<Expr, { kind: 'var' }> => {
    const e = strip(convert(args[i]!.node));
    if (e.kind !== 'var') throw new ParseError(`the first argument of ${fn}() is a field ($name): ${USAGE[fn]}`, args[i]!.start);
    return e;
  };
  const window = (i: number): Window => {
    const v = literal(i);
    if (typeof v === 'string') {
      const ms = parseDuration(v);
      if (ms !== undefined) return { type: 'time', ms };
    } else if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_COUNT_WINDOW) return { type: 'count', n: v };
    throw new ParseError(`a window is a positive integer (messages, at most ${MAX_COUNT_WINDOW}) or a duration string such as '30s', '5m', '2h', '1d'`, args[i]!.start);
  };
  switch (fn) {
    case 'prev':
    case 'changed':
    case 'delta':
      return { kind: 'call', fn, arg: variable(0), pos };
    case 'deadband': {
      const arg = variable(0);
      const d = literal(1);
      if (typeof d !== 'number' || !(d >= 0) || !Number.isFinite(d)) throw new ParseError('the band of deadband() is a number >= 0: deadband($field, 0.5)', args[1]!.start);
      return { kind: 'call', fn, arg, d, pos };
    }
    case 'avg':
    case 'min':
    case 'max':
    case 'sum':
      return { kind: 'call', fn, arg: variable(0), window: window(1), pos };
    case 'count':
      return { kind: 'call', fn, window: window(0), pos };
    case 'abs':
      return { kind: 'call', fn, value: strip(convert(args[0]!.node)), pos };
    case 'topic': {
      const n = literal(0);
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) throw new ParseError('topic() takes a level number from 1: topic(2)', args[0]!.start);
      return { kind: 'call', fn, n, pos };
    }
    default: {
      const key = literal(0);
      if (typeof key !== 'string') throw new ParseError("the key of state() is a string literal: state('limits/{2}')", args[0]!.start);
      const problem = keyTemplateProblem(key);
      if (problem) throw new ParseError(problem, args[0]!.start);
      return { kind: 'call', fn: 'state', key, pos };
    }
  }
}

/** Why a state key with placeholders (`{n}`, `{topic}`) is invalid, or undefined. */
export function keyTemplateProblem(key: string): string | undefined {
  if (key === '') return 'a state key is not empty';
  const stripped = key.replace(/\{(?:[1-9][0-9]*|topic)\}/g, '');
  if (stripped.includes('{') || stripped.includes('}')) return 'in a state key, { } hold a topic level number ({2}) or {topic}';
  return undefined;
}

/** `not` is looser than comparisons and arithmetic: `(not a) op b` becomes `not (a op b)`. */
function rotateNot(op: string, left: Marked, right: Marked): Marked {
  if (left.kind === 'not' && !left.paren) {
    return { kind: 'not', arg: strip(rotateNot(op, left.arg, right)) };
  }
  if (COMPARE_OPS.has(op)) {
    // Python chaining: `a < b < c` (left-associative in jsep) becomes one chain.
    if (left.kind === 'cmp' && !left.paren) {
      return { kind: 'cmp', ops: [...left.ops, op as CompareOp], args: [...left.args, strip(right)] };
    }
    return { kind: 'cmp', ops: [op as CompareOp], args: [strip(left), strip(right)] };
  }
  if (ARITH_OPS.has(op)) return { kind: 'arith', op: op as ArithOp, left: strip(left), right: strip(right) };
  throw new ParseError(`unsupported operator ${op}`, 0);
}

function strip(e: Marked): Expr {
  if (!e.paren) return e;
  const { paren: _, ...rest } = e;
  return rest as Expr;
}

/** Parse a condition; throws ParseError with the character position. */
export function parseCondition(text: string): Expr {
  return strip(convert(parseRaw(text).node));
}

/** Parse a rule's `operations`: `$id` references with and/or/not and parentheses. */
export function parseOperations(text: string): LogicExpr {
  const expr = parseCondition(text);
  return toLogic(expr);
}

function toLogic(e: Expr): LogicExpr {
  switch (e.kind) {
    case 'var': {
      if (!/^[1-9][0-9]*$/.test(e.name) || !Number.isSafeInteger(Number(e.name))) {
        throw new ParseError(`expected a statement id like $1, found $${e.name}`, e.pos);
      }
      return { kind: 'ref', id: Number(e.name), pos: e.pos };
    }
    case 'not':
      return { kind: 'not', arg: toLogic(e.arg) };
    case 'and':
    case 'or':
      return { kind: e.kind, left: toLogic(e.left), right: toLogic(e.right) };
    default:
      throw new ParseError('operations may only combine statement ids ($1, $2, ...) with and, or, not', firstPos(e));
  }
}

function firstPos(e: Expr): number {
  switch (e.kind) {
    case 'var':
      return e.pos;
    case 'neg':
    case 'not':
      return firstPos(e.arg);
    case 'arith':
    case 'and':
    case 'or':
      return firstPos(e.left);
    case 'cmp':
      return firstPos(e.args[0]!);
    case 'call':
      return e.pos;
    default:
      return 0;
  }
}

/** Every variable path an expression reads, in order of appearance. */
export function variablesOf(e: Expr, out: string[][] = []): string[][] {
  switch (e.kind) {
    case 'var':
      out.push(e.path);
      break;
    case 'neg':
    case 'not':
      variablesOf(e.arg, out);
      break;
    case 'arith':
    case 'and':
    case 'or':
      variablesOf(e.left, out);
      variablesOf(e.right, out);
      break;
    case 'cmp':
      for (const a of e.args) variablesOf(a, out);
      break;
    case 'call':
      if ('arg' in e) out.push(e.arg.path);
      else if (e.fn === 'abs') variablesOf(e.value, out);
      break;
    case 'lit':
      break;
  }
  return out;
}

/** Canonical text of an expression (fully parenthesised), for comments and tests. */
export function formatExpr(e: Expr): string {
  switch (e.kind) {
    case 'var':
      return `$${e.name}`;
    case 'lit':
      return typeof e.value === 'string' ? JSON.stringify(e.value) : String(e.value);
    case 'neg':
      return `-(${formatExpr(e.arg)})`;
    case 'not':
      return `not (${formatExpr(e.arg)})`;
    case 'arith':
      return `(${formatExpr(e.left)} ${e.op} ${formatExpr(e.right)})`;
    case 'cmp':
      return `(${e.args.map((a, i) => (i === 0 ? '' : `${e.ops[i - 1]} `) + formatExpr(a)).join(' ')})`;
    case 'and':
    case 'or':
      return `(${formatExpr(e.left)} ${e.kind} ${formatExpr(e.right)})`;
    case 'call':
      return `${e.fn}(${callArgs(e).join(', ')})`;
  }
}

function windowText(w: Window): string {
  return w.type === 'time' ? JSON.stringify(`${w.ms}ms`) : String(w.n);
}

function callArgs(e: CallExpr): string[] {
  switch (e.fn) {
    case 'deadband':
      return [`$${e.arg.name}`, String(e.d)];
    case 'avg':
    case 'min':
    case 'max':
    case 'sum':
      return [`$${e.arg.name}`, windowText(e.window)];
    case 'count':
      return [windowText(e.window)];
    case 'abs':
      return [formatExpr(e.value)];
    case 'topic':
      return [String(e.n)];
    case 'state':
      return [JSON.stringify(e.key)];
    default:
      return [`$${e.arg.name}`];
  }
}
