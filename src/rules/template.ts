/**
 * Payload templates (specs/fr-script-state.md): `new_payload` and `set_state.value` as a string
 * with `{{ expression }}` parts, or a JSON object (any depth) whose strings hold them, plus the
 * state key placeholders `{n}` and `{topic}`. Parsing (with the JSON path and character position
 * of each error) and rendering, shared by the Wasm engine's host side and the reference
 * interpreter: both compute the expression values themselves, this only turns values into text.
 */
import type { Expr, Template } from './ast.js';
import { RulesError, RulesErrorCode } from './errors.js';
import { ParseError, parseCondition } from './parse.js';

/** A template expression's value: what a condition value can be; undefined is unknown. */
export type TemplateValue = null | boolean | number | string | undefined;

const OPEN = '{{';
const CLOSE = '}}';

/** Whether a string holds `{{` (only then is it a template; other strings are published as they are). */
export function isTemplateText(s: string): boolean {
  return s.includes(OPEN);
}

/** Logic entries have no per-topic memory: set while parsing their templates. */
let memoryless = false;

/** Parses templates where memory functions are an error (a rule's logic entry). */
export function withoutMemory<T>(parse: () => T): T {
  memoryless = true;
  try {
    return parse();
  } finally {
    memoryless = false;
  }
}

function parseExpression(text: string, offset: number, path: string): Expr {
  let e: Expr;
  try {
    e = parseCondition(text);
  } catch (err) {
    if (err instanceof ParseError) throw new RulesError(RulesErrorCode.syntax, path, `in {{ }}: ${err.problem}`, offset + err.position);
    throw err;
  }
  if (memoryless) {
    const found = findMemoryCall(e);
    if (found) throw new RulesError(RulesErrorCode.syntax, path, `${found.fn}() keeps memory per statement and topic; a logic entry has none (use it in a statement's condition)`, offset + found.pos);
  }
  return e;
}

function findMemoryCall(e: Expr): { fn: string; pos: number } | undefined {
  switch (e.kind) {
    case 'call':
      if (e.fn === 'abs') return findMemoryCall(e.value);
      return e.fn === 'topic' || e.fn === 'state' ? undefined : { fn: e.fn, pos: e.pos };
    case 'neg':
    case 'not':
      return findMemoryCall(e.arg);
    case 'arith':
    case 'and':
    case 'or':
      return findMemoryCall(e.left) ?? findMemoryCall(e.right);
    case 'cmp':
      for (const a of e.args) {
        const f = findMemoryCall(a);
        if (f) return f;
      }
      return undefined;
    default:
      return undefined;
  }
}

function textParts(s: string, path: string, exprs: Expr[]): (string | number)[] {
  const parts: (string | number)[] = [];
  let at = 0;
  while (at < s.length) {
    const open = s.indexOf(OPEN, at);
    if (open < 0) {
      parts.push(s.slice(at));
      break;
    }
    if (open > at) parts.push(s.slice(at, open));
    const close = s.indexOf(CLOSE, open + 2);
    if (close < 0) throw new RulesError(RulesErrorCode.syntax, path, 'unclosed {{ (a template part ends with }})', open);
    const inner = s.slice(open + 2, close);
    if (inner.trim() === '') throw new RulesError(RulesErrorCode.syntax, path, 'empty {{ }}', open);
    exprs.push(parseExpression(inner, open + 2, path));
    parts.push(exprs.length - 1);
    at = close + 2;
  }
  return parts;
}

/** A string template (a string holding no `{{` is one text part). */
export function parseTextTemplate(s: string, path: string, exprs: Expr[]): Template {
  return { kind: 'text', parts: textParts(s, path, exprs) };
}

/** A JSON value template: strings that are exactly one `{{ e }}` become typed values. */
export function parseValueTemplate(v: unknown, path: string, exprs: Expr[]): Template {
  if (typeof v === 'string') {
    const m = /^\{\{([\s\S]*)\}\}$/.exec(v);
    if (m && !m[1]!.includes(CLOSE) && !m[1]!.includes(OPEN)) {
      if (m[1]!.trim() === '') throw new RulesError(RulesErrorCode.syntax, path, 'empty {{ }}', 0);
      exprs.push(parseExpression(m[1]!, 2, path));
      return { kind: 'typed', expr: exprs.length - 1 };
    }
    return parseTextTemplate(v, path, exprs);
  }
  if (Array.isArray(v)) return { kind: 'array', items: v.map((x, i) => parseValueTemplate(x, `${path}/${i}`, exprs)) };
  if (v !== null && typeof v === 'object') {
    return { kind: 'object', entries: Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, parseValueTemplate(x, `${path}/${k}`, exprs)] as [string, Template]) };
  }
  if (v === null || typeof v === 'boolean' || typeof v === 'number') return { kind: 'json', value: v };
  throw new RulesError(RulesErrorCode.schema, path, 'a template holds JSON values');
}

/** Numbers in shortest round-trip form; numbers JSON cannot hold (infinities) as null. */
export function formatValue(v: TemplateValue): string {
  if (v === undefined || v === null) return 'null';
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null';
  return String(v);
}

function jsonValue(v: TemplateValue): string {
  if (typeof v === 'string') return JSON.stringify(v);
  return formatValue(v);
}

/** Renders a template with the values of its expressions (index = expression number). */
export function renderTemplate(t: Template, values: readonly TemplateValue[]): string {
  switch (t.kind) {
    case 'text': {
      let out = '';
      for (const p of t.parts) out += typeof p === 'string' ? p : formatValue(values[p]);
      return out;
    }
    case 'typed':
      return jsonValue(values[t.expr]);
    case 'json':
      return JSON.stringify(t.value);
    case 'array':
      return `[${t.items.map((i) => renderJson(i, values)).join(',')}]`;
    case 'object':
      return `{${t.entries.map(([k, x]) => `${JSON.stringify(k)}:${renderJson(x, values)}`).join(',')}}`;
  }
}

function renderJson(t: Template, values: readonly TemplateValue[]): string {
  return t.kind === 'text' ? JSON.stringify(renderTemplate(t, values)) : renderTemplate(t, values);
}

/** The state key for a concrete topic: `{n}` is level n (from 1), `{topic}` the whole topic; undefined when a level is past the end. */
export function renderKey(key: string, topic: string): string | undefined {
  if (!key.includes('{')) return key;
  const levels = topic.split('/');
  let missing = false;
  const out = key.replace(/\{([1-9][0-9]*|topic)\}/g, (_, p: string) => {
    if (p === 'topic') return topic;
    const level = levels[Number(p) - 1];
    if (level === undefined) {
      missing = true;
      return '';
    }
    return level;
  });
  return missing ? undefined : out;
}

/** A stored state value as state() reads it: a JSON scalar if the bytes parse as one, else the text. */
export function stateValue(bytes: Buffer | undefined): TemplateValue {
  if (bytes === undefined) return undefined;
  const text = bytes.toString('utf8');
  try {
    const v: unknown = JSON.parse(text);
    if (v === null || typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') return v;
  } catch {
    // not JSON: the text itself
  }
  return text;
}
