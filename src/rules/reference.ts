/**
 * The reference interpreter of fr_script: JSON.parse and a walk over the syntax tree, written
 * to be obviously right rather than fast. The differential tests hold the WebAssembly engine
 * to it; the benchmark compares against it.
 */
import type { CheckedDocument, CompareOp, Expr, PayloadType } from './ast.js';
import type { EngineCounters, RuleOutput } from './runtime.js';
import { topicMatches } from './topic.js';

/** A value; UNKNOWN stands for missing fields, objects, arrays and failed conversions. */
export const UNKNOWN: unique symbol = Symbol('unknown');
export type Value = null | boolean | number | string | typeof UNKNOWN;
/** Three-valued logic: undefined is unknown. */
export type Tri = boolean | undefined;

const NUMERIC = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
const INDEX = /^(?:0|[1-9][0-9]*)$/;

/** Looks a path up; `found` is false when a level is missing. */
export function lookup(payload: unknown, path: readonly string[]): { found: boolean; value: unknown } {
  let v: unknown = payload;
  for (const key of path) {
    if (Array.isArray(v)) {
      if (!INDEX.test(key) || Number(key) >= v.length) return { found: false, value: undefined };
      v = v[Number(key)];
    } else if (v !== null && typeof v === 'object') {
      if (!Object.prototype.hasOwnProperty.call(v, key)) return { found: false, value: undefined };
      v = (v as Record<string, unknown>)[key];
    } else return { found: false, value: undefined };
  }
  return { found: true, value: v };
}

function trimAscii(s: string): string {
  return s.replace(/^[ \t\n\r]+|[ \t\n\r]+$/g, '');
}

/** payload_type conversion of a field value. */
export function convert(v: unknown, type: PayloadType | undefined): Value {
  if (v === null) return type === undefined ? null : UNKNOWN;
  if (typeof v === 'object' || v === undefined) return UNKNOWN;
  if (type === undefined) return v as Value;
  switch (type) {
    case 'int':
    case 'float': {
      let n: number;
      if (typeof v === 'number') n = v;
      else if (typeof v === 'boolean') n = v ? 1 : 0;
      else {
        const t = trimAscii(v as string);
        if (!NUMERIC.test(t)) return UNKNOWN;
        n = Number(t);
      }
      return type === 'int' ? Math.trunc(n) : n;
    }
    case 'str':
      return typeof v === 'string' ? v : String(v);
    case 'bool':
      if (typeof v === 'boolean') return v;
      if (typeof v === 'number') return v !== 0;
      if (v === 'true' || v === 'True') return true;
      if (v === 'false' || v === 'False') return false;
      return UNKNOWN;
  }
}

/** Code point order (JavaScript's < compares UTF-16 code units). */
export function compareCodePoints(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(j)!;
    if (x !== y) return x < y ? -1 : 1;
    i += x > 0xffff ? 2 : 1;
    j += y > 0xffff ? 2 : 1;
  }
  return i < a.length ? 1 : j < b.length ? -1 : 0;
}

function kindOf(v: Exclude<Value, typeof UNKNOWN>): string {
  return v === null ? 'null' : typeof v;
}

export function compareValues(op: CompareOp, a: Value, b: Value): Tri {
  if (a === UNKNOWN || b === UNKNOWN) return undefined;
  if (op === '==' || op === '!=') {
    const equal = kindOf(a) === kindOf(b) && a === b;
    return op === '==' ? equal : !equal;
  }
  let c: number;
  if (typeof a === 'number' && typeof b === 'number') {
    switch (op) {
      case '<':
        return a < b;
      case '<=':
        return a <= b;
      case '>':
        return a > b;
      case '>=':
        return a >= b;
    }
  }
  if (typeof a === 'string' && typeof b === 'string') c = compareCodePoints(a, b);
  else return undefined;
  switch (op) {
    case '<':
      return c < 0;
    case '<=':
      return c <= 0;
    case '>':
      return c > 0;
    default:
      return c >= 0;
  }
}

export class Evaluator {
  constructor(
    private readonly payload: unknown,
    private readonly type: PayloadType | undefined,
  ) {}

  value(e: Expr): Value {
    switch (e.kind) {
      case 'var': {
        const { found, value } = lookup(this.payload, e.path);
        return found ? convert(value, this.type) : UNKNOWN;
      }
      case 'lit':
        return e.value;
      case 'neg': {
        const v = this.value(e.arg);
        return typeof v === 'number' ? -v : UNKNOWN;
      }
      case 'arith': {
        const a = this.value(e.left);
        const b = this.value(e.right);
        if (typeof a !== 'number' || typeof b !== 'number') return UNKNOWN;
        switch (e.op) {
          case '+':
            return a + b;
          case '-':
            return a - b;
          case '*':
            return a * b;
          case '/':
            return b === 0 ? UNKNOWN : a / b;
          case '%':
            return b === 0 ? UNKNOWN : a % b;
        }
      }
      // falls through (unreachable)
      default: {
        const t = this.truth(e);
        return t === undefined ? UNKNOWN : t;
      }
    }
  }

  truth(e: Expr): Tri {
    switch (e.kind) {
      case 'and': {
        const l = this.truth(e.left);
        if (l === false) return false;
        const r = this.truth(e.right);
        if (r === false) return false;
        return l === true ? r : undefined;
      }
      case 'or': {
        const l = this.truth(e.left);
        if (l === true) return true;
        const r = this.truth(e.right);
        if (r === true) return true;
        return l === false ? r : undefined;
      }
      case 'not': {
        const t = this.truth(e.arg);
        return t === undefined ? undefined : !t;
      }
      case 'cmp': {
        const values = e.args.map((a) => this.value(a));
        let result: Tri = true;
        for (let i = 0; i < e.ops.length; i++) {
          const c = compareValues(e.ops[i]!, values[i]!, values[i + 1]!);
          if (c === false) return false;
          if (c === undefined) result = undefined;
        }
        return result;
      }
      default: {
        const v = this.value(e);
        return typeof v === 'boolean' ? v : undefined;
      }
    }
  }
}

/** Parses a payload; undefined when it is not a JSON object. */
export function parsePayload(payload: Buffer): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(payload.toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function variablesOf(e: Expr, out: string[][] = []): string[][] {
  if (e.kind === 'var') out.push(e.path);
  else if (e.kind === 'neg' || e.kind === 'not') variablesOf(e.arg, out);
  else if (e.kind === 'arith' || e.kind === 'and' || e.kind === 'or') {
    variablesOf(e.left, out);
    variablesOf(e.right, out);
  } else if (e.kind === 'cmp') e.args.forEach((a) => variablesOf(a, out));
  return out;
}

/** The whole engine: filters, rules and the buffer, by the spec's words. */
export class ReferenceEngine {
  readonly counters: EngineCounters = { messages: 0, topicMatches: 0, evaluations: 0, fires: 0, missingVariable: 0, kindMismatch: 0, notJson: 0, bufferFull: 0 };
  /** Concrete topic -> latest satisfying payload and the rule statements (indexes) it satisfies; in insertion order. */
  private readonly buffer = new Map<string, { payload: Buffer; statements: Set<number> }>();
  private readonly count: number[];

  constructor(readonly document: CheckedDocument) {
    this.count = document.ruleStatements.map(() => 0);
  }

  private statement(e: Expr, payload: Record<string, unknown>, type: PayloadType | undefined): boolean {
    this.counters.evaluations++;
    const t = new Evaluator(payload, type).truth(e);
    if (t === undefined) {
      const missing = variablesOf(e).some((p) => !lookup(payload, p).found);
      if (missing) this.counters.missingVariable++;
      else this.counters.kindMismatch++;
    }
    return t === true;
  }

  process(topic: string, payload: Buffer): RuleOutput[] {
    const out = this.run(topic, payload);
    this.counters.fires += out.length;
    return out;
  }

  private run(topic: string, payload: Buffer): RuleOutput[] {
    const doc = this.document;
    const out: RuleOutput[] = [];
    this.counters.messages++;
    const filters = doc.filters.filter((f) => topicMatches(f.topic, topic));
    const statements = doc.ruleStatements.filter((s) => topicMatches(s.topic, topic));
    this.counters.topicMatches += filters.length + statements.length;
    if (filters.length + statements.length === 0) return out;
    const parsed = parsePayload(payload);
    if (parsed === undefined) this.counters.notJson++;
    for (const f of filters) {
      if (!parsed) continue;
      for (const st of f.statements) {
        if (this.statement(st.condition, parsed, undefined)) {
          out.push({ topic: `${topic}/${f.suffix}`, payload: st.payload === null ? payload : Buffer.from(st.payload, 'utf8') });
        }
      }
    }
    if (statements.length === 0) return out;
    let entry = this.buffer.get(topic);
    for (const st of statements) {
      const ok = parsed !== undefined && this.statement(st.condition, parsed, st.payloadType);
      if (ok && !entry && this.buffer.size < 65536) {
        entry = { payload, statements: new Set() };
        this.buffer.set(topic, entry);
      }
      if (!entry) continue;
      const had = entry.statements.has(st.index);
      if (ok && !had) {
        entry.statements.add(st.index);
        this.count[st.index]!++;
      } else if (!ok && had) {
        entry.statements.delete(st.index);
        this.count[st.index]!--;
      }
    }
    if (entry) {
      if (entry.statements.size === 0) this.buffer.delete(topic);
      else entry.payload = payload;
    }
    let fired = false;
    for (const l of doc.logic) {
      if (!this.logic(l.operations)) continue;
      fired = true;
      let body: Buffer;
      if (l.payload !== null) body = Buffer.from(l.payload, 'utf8');
      else {
        const refs = new Set(l.refs);
        const parts: Buffer[] = [];
        for (const [t, e] of this.buffer) {
          if (![...e.statements].some((s) => refs.has(s))) continue;
          parts.push(Buffer.from(`${parts.length === 0 ? '{' : ','}${JSON.stringify(t)}:`, 'utf8'), e.payload);
        }
        parts.push(Buffer.from(parts.length === 0 ? '{}' : '}'));
        body = Buffer.concat(parts);
      }
      out.push({ topic: l.topic, payload: body });
    }
    if (fired) this.clear();
    return out;
  }

  clear(): void {
    this.buffer.clear();
    this.count.fill(0);
  }

  private logic(e: import('./ast.js').LogicExpr): boolean {
    switch (e.kind) {
      case 'ref': {
        const st = this.document.ruleStatements.find((s) => s.id === e.id)!;
        return this.count[st.index]! > 0;
      }
      case 'not':
        return !this.logic(e.arg);
      case 'and':
        return this.logic(e.left) && this.logic(e.right);
      case 'or':
        return this.logic(e.left) || this.logic(e.right);
    }
  }
}
