/**
 * The reference interpreter of fr_script: JSON.parse and a walk over the syntax tree, written
 * to be obviously right rather than fast. The differential tests hold the WebAssembly engine
 * to it; the benchmark compares against it.
 */
import type { CheckedDocument, CompareOp, Expr, MemoryCell, PayloadType, Templates, Window } from './ast.js';
import { cellIndex } from './check.js';
import type { EngineCounters, RuleOutput } from './runtime.js';
import { renderKey, renderTemplate, stateValue, type TemplateValue } from './template.js';
import { topicMatches } from './topic.js';

import { DEFAULT_MEMORY_LIMITS, type MemoryLimits } from './limits.js';
export { DEFAULT_MEMORY_LIMITS, type MemoryLimits };
/** Buckets a window merges its older samples into (one more may hold the boundary). */
export const WINDOW_BUCKETS = 64;
const BUCKET_CAP = WINDOW_BUCKETS + 1;

/** A window's samples on one topic: exact ones (t, value; NaN: not a number) and merged buckets, oldest first. */
export interface WindowState {
  exact: { t: number; v: number }[];
  buckets: Bucket[];
}
export interface Bucket {
  /** Time windows: floor(t / (W/64)); count windows: 0. */
  key: number;
  /** Messages, numbers among them, their sum, min and max, and the newest message time. */
  n: number;
  c: number;
  sum: number;
  min: number;
  max: number;
  last: number;
}

/** The memory of one statement on one topic, a state per cell (statement.cells). */
export type CellState = { kind: 'value'; has: boolean; value: Value } | { kind: 'deadband'; has: boolean; ref: number } | { kind: 'window'; w: WindowState };

function newCell(c: MemoryCell): CellState {
  if (c.kind === 'value') return { kind: 'value', has: false, value: UNKNOWN };
  if (c.kind === 'deadband') return { kind: 'deadband', has: false, ref: 0 };
  return { kind: 'window', w: { exact: [], buckets: [] } };
}

function bucketSpan(w: Window): number {
  return w.type === 'time' ? Math.max(1, Math.ceil(w.ms / WINDOW_BUCKETS)) : Math.max(1, Math.ceil(w.n / WINDOW_BUCKETS));
}

/** Merges the oldest exact sample into the newest bucket (or a new one). */
function mergeSample(w: Window, st: WindowState, t: number, v: number): void {
  const span = bucketSpan(w);
  const key = w.type === 'time' ? Math.floor(t / span) : 0;
  const b = st.buckets[st.buckets.length - 1];
  const join = b !== undefined && (st.buckets.length >= BUCKET_CAP || (w.type === 'time' ? b.key === key : b.n < span));
  const isNum = !Number.isNaN(v);
  if (join) {
    b.n++;
    if (isNum) {
      if (b.c === 0) {
        b.min = v;
        b.max = v;
        b.sum = v;
      } else {
        if (v < b.min) b.min = v;
        if (v > b.max) b.max = v;
        b.sum += v;
      }
      b.c++;
    }
    b.last = t;
  } else st.buckets.push({ key, n: 1, c: isNum ? 1 : 0, sum: isNum ? v : 0, min: v, max: v, last: t });
}

/** Adds the current message's sample, merges past the exact bound, drops what left the window. Returns samples merged. */
export function windowPush(w: Window, st: WindowState, now: number, v: number, samples: number): number {
  st.exact.push({ t: now, v });
  let merged = 0;
  while (st.exact.length > samples) {
    const s = st.exact.shift()!;
    mergeSample(w, st, s.t, s.v);
    merged++;
  }
  if (w.type === 'time') {
    while (st.buckets.length > 0 && now - st.buckets[0]!.last >= w.ms) st.buckets.shift();
    while (st.exact.length > 0 && now - st.exact[0]!.t >= w.ms) st.exact.shift();
  } else {
    let total = st.exact.length;
    for (const b of st.buckets) total += b.n;
    while (st.buckets.length > 0 && total - st.buckets[0]!.n >= w.n) total -= st.buckets.shift()!.n;
    if (st.buckets.length === 0) while (st.exact.length > w.n) st.exact.shift();
  }
  return merged;
}

/** avg/min/max/sum/count over a window state; undefined is unknown. Buckets first, then exact samples, oldest first. */
export function windowAggregate(fn: 'avg' | 'min' | 'max' | 'sum' | 'count', st: WindowState): number | undefined {
  let n = 0;
  let c = 0;
  let sum = 0;
  let min = 0;
  let max = 0;
  const add = (k: number, ks: number, kmin: number, kmax: number, kn: number): void => {
    n += kn;
    if (k === 0) return;
    if (c === 0) {
      min = kmin;
      max = kmax;
    } else {
      if (kmin < min) min = kmin;
      if (kmax > max) max = kmax;
    }
    sum += ks;
    c += k;
  };
  for (const b of st.buckets) add(b.c, b.sum, b.min, b.max, b.n);
  for (const e of st.exact) {
    if (Number.isNaN(e.v)) n++;
    else add(1, e.v, e.v, e.v, 1);
  }
  switch (fn) {
    case 'count':
      return n;
    case 'sum':
      return sum;
    case 'avg':
      return c === 0 ? undefined : sum / c;
    case 'min':
      return c === 0 ? undefined : min;
    default:
      return c === 0 ? undefined : max;
  }
}

/** What a statement's functions see while it is evaluated on one message. */
export interface StatementContext {
  topic: string;
  cells: readonly MemoryCell[];
  /** This statement's memory on this topic (undefined: the statement keeps none). */
  memory: CellState[] | undefined;
  state: (key: string) => Buffer | undefined;
}

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

function sameValue(a: Value, b: Value): boolean {
  if (a === UNKNOWN || b === UNKNOWN) return a === b;
  return kindOf(a) === kindOf(b) && a === b;
}

export class Evaluator {
  constructor(
    private readonly payload: unknown,
    private readonly type: PayloadType | undefined,
    private readonly context?: StatementContext,
  ) {}

  /** The value of a field (converted to the payload type). */
  field(path: readonly string[]): Value {
    if (this.payload === undefined) return UNKNOWN;
    const { found, value } = lookup(this.payload, path);
    return found ? convert(value, this.type) : UNKNOWN;
  }

  private call(e: Extract<Expr, { kind: 'call' }>): Value {
    const ctx = this.context;
    switch (e.fn) {
      case 'abs': {
        const v = this.value(e.value);
        return typeof v === 'number' ? Math.abs(v) : UNKNOWN;
      }
      case 'topic': {
        if (!ctx) return UNKNOWN;
        return ctx.topic.split('/')[e.n - 1] ?? UNKNOWN;
      }
      case 'state': {
        if (!ctx) return UNKNOWN;
        const key = renderKey(e.key, ctx.topic);
        if (key === undefined) return UNKNOWN;
        const v = stateValue(ctx.state(key));
        return v === undefined ? UNKNOWN : v;
      }
      default:
        break;
    }
    const cell = ctx?.memory?.[cellIndex(ctx.cells, e)];
    if (!cell) return UNKNOWN;
    switch (e.fn) {
      case 'prev':
        return cell.kind === 'value' && cell.has ? cell.value : UNKNOWN;
      case 'changed': {
        const cur = this.field(e.arg.path);
        if (cur === UNKNOWN || cell.kind !== 'value') return UNKNOWN;
        return !cell.has || !sameValue(cur, cell.value);
      }
      case 'delta': {
        const cur = this.field(e.arg.path);
        if (cell.kind !== 'value' || !cell.has || typeof cur !== 'number' || typeof cell.value !== 'number') return UNKNOWN;
        return cur - cell.value;
      }
      case 'deadband': {
        const cur = this.field(e.arg.path);
        if (typeof cur !== 'number' || cell.kind !== 'deadband') return UNKNOWN;
        return !cell.has || Math.abs(cur - cell.ref) >= e.d;
      }
      default: {
        if (cell.kind !== 'window') return UNKNOWN;
        const v = windowAggregate(e.fn, cell.w);
        return v === undefined ? UNKNOWN : v;
      }
    }
  }

  value(e: Expr): Value {
    switch (e.kind) {
      case 'var':
        return this.field(e.path);
      case 'call':
        return this.call(e);
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
  else if (e.kind === 'call') {
    if ('arg' in e) out.push(e.arg.path);
    else if (e.fn === 'abs') variablesOf(e.value, out);
  }
  return out;
}

function templateValue(v: Value): TemplateValue {
  return v === UNKNOWN ? undefined : v;
}

/** The outputs of a fired statement or logic entry: its publish (unless it only writes), then its state write. */
export function templateOutputs(t: Templates, values: readonly TemplateValue[], topic: string, outTopic: string, original: Buffer | (() => Buffer), out: RuleOutput[]): void {
  if (t.publish) {
    const body = t.payload === null ? (typeof original === 'function' ? original() : original) : Buffer.from(renderTemplate(t.payload, values), 'utf8');
    out.push({ topic: outTopic, payload: body });
  }
  if (t.setState) {
    const key = renderKey(t.setState.key, topic);
    if (key !== undefined) out.push({ topic: '', payload: Buffer.from(renderTemplate(t.setState.value, values), 'utf8'), state: { key, ...(t.setState.px === undefined ? {} : { px: t.setState.px }) } });
  }
}

/** The whole engine: filters, rules and the buffer, by the spec's words. */
export class ReferenceEngine {
  readonly counters: EngineCounters = { messages: 0, topicMatches: 0, evaluations: 0, fires: 0, missingVariable: 0, kindMismatch: 0, notJson: 0, bufferFull: 0, memoryTopics: 0, memoryEvicted: 0, samplesMerged: 0 };
  /** Concrete topic -> latest satisfying payload and the rule statements (indexes) it satisfies; in insertion order. */
  private readonly buffer = new Map<string, { payload: Buffer; statements: Set<number> }>();
  private readonly count: number[];
  /** Per statement (filter statements, then rule statements): topic -> memory, least recently seen first. */
  readonly memory: Map<string, CellState[]>[];
  private readonly limits: MemoryLimits;
  /** Reads the state store (state()); none: every key is absent. */
  state: (key: string) => Buffer | undefined;

  constructor(
    readonly document: CheckedDocument,
    options: { limits?: MemoryLimits; state?: (key: string) => Buffer | undefined } = {},
  ) {
    this.count = document.ruleStatements.map(() => 0);
    this.memory = [...document.filterStatements, ...document.ruleStatements].map(() => new Map());
    this.limits = options.limits ?? DEFAULT_MEMORY_LIMITS;
    this.state = options.state ?? (() => undefined);
  }

  /**
   * One statement on one message: its memory on the topic (windows take the current sample
   * first), the condition, the template values when it fires, then the memory update (previous
   * values always, deadband references when it fired). Returns the template values, or undefined.
   */
  private statement(
    memoryIndex: number,
    cells: readonly MemoryCell[],
    e: Expr,
    templates: Templates | undefined,
    topic: string,
    payload: Record<string, unknown>,
    type: PayloadType | undefined,
    now: number,
  ): { fired: boolean; values: TemplateValue[] } {
    this.counters.evaluations++;
    let memory: CellState[] | undefined;
    if (cells.length > 0) {
      const map = this.memory[memoryIndex]!;
      memory = map.get(topic);
      if (memory) map.delete(topic);
      else {
        if (map.size >= this.limits.topics) {
          const oldest = map.keys().next().value as string;
          map.delete(oldest);
          this.counters.memoryEvicted++;
          this.counters.memoryTopics--;
        }
        memory = cells.map(newCell);
        this.counters.memoryTopics++;
      }
      map.set(topic, memory);
    }
    const ev = new Evaluator(payload, type, { topic, cells, memory, state: this.state });
    if (memory) {
      cells.forEach((c, i) => {
        if (c.kind !== 'window') return;
        const v = c.path === null ? UNKNOWN : ev.field(c.path);
        this.counters.samplesMerged += windowPush(c.window, (memory![i] as { w: WindowState }).w, now, typeof v === 'number' ? v : NaN, this.limits.samples);
      });
    }
    const t = ev.truth(e);
    if (t === undefined) {
      const missing = variablesOf(e).some((p) => !lookup(payload, p).found);
      if (missing) this.counters.missingVariable++;
      else this.counters.kindMismatch++;
    }
    const fired = t === true;
    const values = fired && templates ? templates.exprs.map((x) => templateValue(ev.value(x))) : [];
    if (memory) {
      cells.forEach((c, i) => {
        const m = memory![i]!;
        if (m.kind === 'value' && c.kind === 'value') {
          m.has = true;
          m.value = ev.field(c.path);
        } else if (m.kind === 'deadband' && c.kind === 'deadband' && fired) {
          const v = ev.field(c.path);
          if (typeof v === 'number') {
            m.has = true;
            m.ref = v;
          }
        }
      });
    }
    return { fired, values };
  }

  /** One message at `now` (ms). */
  process(topic: string, payload: Buffer, now: number = Date.now()): RuleOutput[] {
    return this.run(topic, payload, now);
  }

  private run(topic: string, payload: Buffer, now: number): RuleOutput[] {
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
        const r = this.statement(st.index, st.cells, st.condition, st.templates, topic, parsed, undefined, now);
        if (!r.fired) continue;
        this.counters.fires++;
        if (st.templates) templateOutputs(st.templates, r.values, topic, `${topic}/${f.suffix}`, payload, out);
        else out.push({ topic: `${topic}/${f.suffix}`, payload: st.payload === null ? payload : Buffer.from(st.payload, 'utf8') });
      }
    }
    if (statements.length === 0) return out;
    let entry = this.buffer.get(topic);
    const FS = doc.filterStatements.length;
    for (const st of statements) {
      const ok = parsed !== undefined && this.statement(FS + st.index, st.cells, st.condition, undefined, topic, parsed, st.payloadType, now).fired;
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
      this.counters.fires++;
      const json = (): Buffer => {
        const refs = new Set(l.refs);
        const parts: Buffer[] = [];
        for (const [t, e] of this.buffer) {
          if (![...e.statements].some((s) => refs.has(s))) continue;
          parts.push(Buffer.from(`${parts.length === 0 ? '{' : ','}${JSON.stringify(t)}:`, 'utf8'), e.payload);
        }
        parts.push(Buffer.from(parts.length === 0 ? '{}' : '}'));
        return Buffer.concat(parts);
      };
      if (l.templates) {
        const ev = new Evaluator(parsed, undefined, { topic, cells: [], memory: undefined, state: this.state });
        templateOutputs(l.templates, l.templates.exprs.map((x) => templateValue(ev.value(x))), topic, l.topic, json, out);
        continue;
      }
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
