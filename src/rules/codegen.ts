/**
 * The fr_script compiler's back end: from a CheckedDocument to
 *  - AssemblyScript source for the whole document (conditions, per-topic dispatch, rule
 *    logic over the statement results), deterministic and commented for review, and
 *  - the tables blob (topic decision tree, key trie of the variables, string pool) that the
 *    runtime copies into the module's memory; its sizes and offsets come from
 *    assembly/rules/layout.ts (shared with the module), its fields are described in
 *    assembly/rules/engine.ts and assembly/rules/json.ts.
 *
 * Targets are numbered filters first (target = filter index), then rule statements
 * (target = filters + statement index), so ascending target order is document order.
 */
import type { CheckedDocument, CompareOp, Expr, LogicExpr, MemoryCell, PayloadType, Templates } from './ast.js';
import { cellIndex } from './check.js';
import * as layout from '../../assembly/rules/layout.js';

export interface GeneratedProgram {
  /** AssemblyScript source of the entry file (imports ./rules/*). */
  source: string;
  /** The tables blob (little-endian). */
  tables: Uint8Array;
  /** Registers the program needs (also in the source). */
  registers: number;
  targets: number;
  /** state() key templates, by the number the module passes to env.stateRead. */
  stateKeys: string[];
}

// the blob's layout, shared with the module that reads it
const { TABLES_MAGIC, HEADER_WORDS, TOPIC_NODE_SIZE, TOPIC_NODE_TABLE_WORD, EDGE_SIZE, STATEMENT_SIZE, LOGIC_SIZE, PARAM_SIZE } = layout;
const NODE_WORDS = TOPIC_NODE_SIZE / 4;
const EDGE_WORDS = EDGE_SIZE / 4;

// ------------------------------------------------------------------------------------------
// Condition shapes
//
// Statements that differ only in their field paths and number constants share one compiled
// function (a "shape"); the paths (as slots) and the constants are its parameters, stored in
// the tables blob as 8-byte cells (i32 slot or f64 number). A 1,000-filter document written
// from a template compiles to a handful of functions, which keeps asc's time per document low.

const CMP_CODE: Record<CompareOp, string> = { '==': 'EQ', '!=': 'NE', '<': 'LT', '<=': 'LE', '>': 'GT', '>=': 'GE' };
const CMP_MIRROR: Record<CompareOp, CompareOp> = { '==': '==', '!=': '!=', '<': '>', '<=': '>=', '>': '<', '>=': '<=' };
const ARITH_CODE = { '+': 'ADD', '-': 'SUB', '*': 'MUL', '/': 'DIV', '%': 'MOD' } as const;
const TYPE_CODE: Record<PayloadType | 'none', string> = { none: 'T_NONE', int: 'T_INT', float: 'T_FLOAT', str: 'T_STR', bool: 'T_BOOL' };

/** An AssemblyScript f64 literal that reads back as exactly `n`. */
function f64Literal(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return 'Infinity';
  if (n === -Infinity) return '-Infinity';
  if (Object.is(n, -0)) return '-0.0';
  const s = String(n);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** A comment-safe one-line rendering of document text. */
function commentText(s: string): string {
  return JSON.stringify(s).slice(1, -1).replace(/\*\//g, '*\\/');
}

type Param = { slot: number } | { num: number };

class LiteralPool {
  private readonly byText = new Map<string, { name: string; length: number }>();
  readonly declarations: string[] = [];
  add(text: string): { name: string; length: number } {
    let lit = this.byText.get(text);
    if (!lit) {
      const bytes = Buffer.from(text, 'utf8');
      const name = `STR_${this.byText.size}`;
      lit = { name, length: bytes.length };
      this.byText.set(text, lit);
      const data = bytes.length === 0 ? '0' : [...bytes].join(', ');
      this.declarations.push(`const ${name} = memory.data<u8>([${data}]); // ${commentText(JSON.stringify(text))}`);
    }
    return lit;
  }
}

/** Writes one condition as the body of a shape function over a parameter pointer `p`. */
class ShapeWriter {
  readonly lines: string[] = [];
  readonly params: Param[] = [];
  readonly slotParams: string[] = [];
  private locals = 0;
  registers = 0;
  constructor(
    private readonly slots: Map<string, number>,
    private readonly literals: LiteralPool,
    private readonly type: string,
    /** The statement's memory cells (none for a logic entry's templates). */
    private readonly cells: readonly MemoryCell[] = [],
    /** Document-wide state key templates (index = the host's key number). */
    private readonly stateKeys: Map<string, number> = new Map(),
  ) {}

  private intParam(n: number): string {
    const code = `load<i32>(p, ${this.params.length * 8})`;
    this.params.push({ slot: n });
    return code;
  }
  /** A slot parameter that is not loaded (the call keeps memory): counted for the unknown cause. */
  private noteSlot(path: string[]): string {
    return this.slotParam(path);
  }
  private cell(c: Extract<Expr, { kind: 'call' }>): number {
    const i = cellIndex(this.cells, c);
    if (i < 0) throw new Error(`no memory cell for ${c.fn}()`);
    return i;
  }

  /** Statement memory before the condition: the record, and each window takes the current sample. */
  memoryPrologue(indent: string): string[] {
    if (this.cells.length === 0) return [];
    const out = [`${indent}const m = memRecord(${this.cells.length});`];
    this.cells.forEach((c, i) => {
      if (c.kind !== 'window') return;
      const param = this.numParam(c.window.type === 'time' ? c.window.ms : c.window.n);
      if (c.path === null) out.push(`${indent}windowPush(m, ${i}, ${c.window.type === 'time'}, ${param}, -1);`);
      else {
        const r = this.reg();
        out.push(`${indent}loadVar(${r}, ${this.slotParam(c.path)}, ${this.type});`);
        out.push(`${indent}windowPush(m, ${i}, ${c.window.type === 'time'}, ${param}, ${r});`);
      }
    });
    return out;
  }

  /** Statement memory after the condition: previous values always, deadband references when it fired. */
  memoryEpilogue(result: string, indent: string): string[] {
    const out: string[] = [];
    const fired: string[] = [];
    this.cells.forEach((c, i) => {
      if (c.kind === 'window') return;
      const r = this.reg();
      const lines = [`loadVar(${r}, ${this.slotParam(c.path)}, ${this.type});`, c.kind === 'value' ? `memStoreValue(m, ${i}, ${r});` : `memStoreRef(m, ${i}, ${r});`];
      if (c.kind === 'value') out.push(...lines.map((l) => indent + l));
      else fired.push(...lines.map((l) => `${indent}  ${l}`));
    });
    if (fired.length > 0) out.push(`${indent}if (${result} == TRUE) {`, ...fired, `${indent}}`);
    return out;
  }

  /** The template expressions' values, in order, for the output record. */
  templateValues(exprs: readonly Expr[], indent: string): void {
    this.lines.push(`${indent}tplBegin();`);
    for (const e of exprs) {
      const r = this.reg();
      this.value(e, r, indent);
      this.lines.push(`${indent}valuePush(${r});`);
    }
  }

  private callValue(e: Extract<Expr, { kind: 'call' }>, reg: number, indent: string): void {
    const out = this.lines;
    switch (e.fn) {
      case 'abs': {
        const a = this.reg();
        this.value(e.value, a, indent);
        out.push(`${indent}absValue(${reg}, ${a});`);
        return;
      }
      case 'topic':
        out.push(`${indent}topicLevel(${reg}, ${this.intParam(e.n)});`);
        return;
      case 'state': {
        let k = this.stateKeys.get(e.key);
        if (k === undefined) this.stateKeys.set(e.key, (k = this.stateKeys.size));
        out.push(`${indent}loadState(${reg}, ${this.intParam(k)});`);
        return;
      }
      case 'prev':
        this.noteSlot(e.arg.path);
        out.push(`${indent}memPrev(${reg}, m, ${this.cell(e)});`);
        return;
      case 'changed':
      case 'delta':
      case 'deadband': {
        const a = this.reg();
        out.push(`${indent}loadVar(${a}, ${this.slotParam(e.arg.path)}, ${this.type});`);
        if (e.fn === 'deadband') out.push(`${indent}memDeadband(${reg}, m, ${this.cell(e)}, ${a}, ${this.numParam(e.d)});`);
        else out.push(`${indent}${e.fn === 'changed' ? 'memChanged' : 'memDelta'}(${reg}, m, ${this.cell(e)}, ${a});`);
        return;
      }
      case 'count':
        out.push(`${indent}windowAggregate(${reg}, m, ${this.cell(e)}, AGG_COUNT);`);
        return;
      default:
        this.noteSlot(e.arg.path);
        out.push(`${indent}windowAggregate(${reg}, m, ${this.cell(e)}, AGG_${e.fn.toUpperCase()});`);
    }
  }

  private local(): string {
    return `b${this.locals++}`;
  }
  private reg(): number {
    return this.registers++;
  }
  private slotParam(path: string[]): string {
    const slot = this.slots.get(JSON.stringify(path));
    if (slot === undefined) throw new Error(`no slot for ${path.join('.')}`);
    const code = `load<i32>(p, ${this.params.length * 8})`;
    this.params.push({ slot });
    this.slotParams.push(code);
    return code;
  }
  private numParam(n: number): string {
    const code = `load<f64>(p, ${this.params.length * 8})`;
    this.params.push({ num: n });
    return code;
  }
  localDeclarations(): string {
    return this.locals === 0 ? '' : `  let ${Array.from({ length: this.locals }, (_, i) => `b${i}: i32 = 0`).join(', ')};`;
  }

  /** Emits code computing e's logic value; returns the local holding it. */
  bool(e: Expr, indent: string): string {
    const out = this.lines;
    switch (e.kind) {
      case 'and':
      case 'or': {
        const r = this.local();
        const l = this.bool(e.left, indent);
        out.push(`${indent}${r} = ${l};`);
        out.push(`${indent}if (${r} != ${e.kind === 'and' ? 'FALSE' : 'TRUE'}) {`);
        const rr = this.bool(e.right, indent + '  ');
        out.push(`${indent}  ${r} = ${e.kind === 'and' ? 'and3' : 'or3'}(${r}, ${rr});`);
        out.push(`${indent}}`);
        return r;
      }
      case 'not': {
        const a = this.bool(e.arg, indent);
        const r = this.local();
        out.push(`${indent}${r} = not3(${a});`);
        return r;
      }
      case 'cmp':
        return this.compare(e, indent);
      case 'lit': {
        const r = this.local();
        out.push(`${indent}${r} = ${e.value === true ? 'TRUE' : e.value === false ? 'FALSE' : 'UNKNOWN'};`);
        return r;
      }
      default: {
        // a value used as a condition: only booleans have a truth value
        const reg = this.reg();
        this.value(e, reg, indent);
        const r = this.local();
        out.push(`${indent}${r} = truth(${reg});`);
        return r;
      }
    }
  }

  private compare(e: Extract<Expr, { kind: 'cmp' }>, indent: string): string {
    const out = this.lines;
    const r = this.local();
    if (e.ops.length === 1) {
      const [a, b] = e.args as [Expr, Expr];
      let op = e.ops[0]!;
      let v: Extract<Expr, { kind: 'var' }> | undefined;
      let lit: number | undefined;
      if (a.kind === 'var' && b.kind === 'lit' && typeof b.value === 'number') {
        v = a;
        lit = b.value;
      } else if (b.kind === 'var' && a.kind === 'lit' && typeof a.value === 'number') {
        v = b;
        lit = a.value;
        op = CMP_MIRROR[op];
      }
      if (v && lit !== undefined) {
        const scratch = this.reg();
        this.reg();
        const slot = this.slotParam(v.path);
        out.push(`${indent}${r} = compareSlotNumber(${slot}, ${this.type}, ${CMP_CODE[op]}, ${this.numParam(lit)}, ${scratch});`);
        return r;
      }
    }
    // Python chaining: a < b < c is a < b and b < c, each operand computed once
    const regs = e.args.map(() => this.reg());
    this.value(e.args[0]!, regs[0]!, indent);
    this.value(e.args[1]!, regs[1]!, indent);
    out.push(`${indent}${r} = compare(${CMP_CODE[e.ops[0]!]}, ${regs[0]}, ${regs[1]});`);
    let depth = indent;
    for (let i = 1; i < e.ops.length; i++) {
      out.push(`${depth}if (${r} != FALSE) {`);
      depth += '  ';
      this.value(e.args[i + 1]!, regs[i + 1]!, depth);
      out.push(`${depth}${r} = and3(${r}, compare(${CMP_CODE[e.ops[i]!]}, ${regs[i]}, ${regs[i + 1]}));`);
    }
    for (let i = 1; i < e.ops.length; i++) {
      depth = depth.slice(2);
      out.push(`${depth}}`);
    }
    return r;
  }

  /** Emits code storing e's value in register `reg`. */
  value(e: Expr, reg: number, indent: string): void {
    const out = this.lines;
    switch (e.kind) {
      case 'var':
        out.push(`${indent}loadVar(${reg}, ${this.slotParam(e.path)}, ${this.type});`);
        return;
      case 'lit':
        if (typeof e.value === 'number') out.push(`${indent}setNumber(${reg}, ${this.numParam(e.value)});`);
        else if (typeof e.value === 'string') {
          const lit = this.literals.add(e.value);
          out.push(`${indent}setString(${reg}, ${lit.name}, ${lit.length});`);
        } else if (typeof e.value === 'boolean') out.push(`${indent}setBool(${reg}, ${e.value});`);
        else out.push(`${indent}setNull(${reg});`);
        return;
      case 'neg': {
        const a = this.reg();
        this.value(e.arg, a, indent);
        out.push(`${indent}negate(${reg}, ${a});`);
        return;
      }
      case 'arith': {
        const a = this.reg();
        const b = this.reg();
        this.value(e.left, a, indent);
        this.value(e.right, b, indent);
        out.push(`${indent}arith(${reg}, ${ARITH_CODE[e.op]}, ${a}, ${b});`);
        return;
      }
      case 'call':
        this.callValue(e, reg, indent);
        return;
      default: {
        const t = this.bool(e, indent);
        out.push(`${indent}setTri(${reg}, ${t});`);
      }
    }
  }
}

interface Shape {
  id: number;
  template: string;
  /** The function body (the dedupe key, with the payload type). */
  body: string;
  registers: number;
  /** Where it is used first, and how often. */
  example: string;
  uses: number;
}

/** A condition's template for comments: field paths as $_ and numbers as K. */
function template(e: Expr): string {
  switch (e.kind) {
    case 'var':
      return '$_';
    case 'lit':
      return typeof e.value === 'number' ? 'K' : typeof e.value === 'string' ? JSON.stringify(e.value) : String(e.value);
    case 'neg':
      return `-${template(e.arg)}`;
    case 'not':
      return `not ${template(e.arg)}`;
    case 'arith':
      return `(${template(e.left)} ${e.op} ${template(e.right)})`;
    case 'cmp':
      return e.args.map((a, i) => (i === 0 ? '' : `${e.ops[i - 1]} `) + template(a)).join(' ');
    case 'and':
    case 'or':
      return `(${template(e.left)} ${e.kind} ${template(e.right)})`;
    case 'call':
      if (e.fn === 'abs') return `abs(${template(e.value)})`;
      if (e.fn === 'topic') return 'topic(K)';
      if (e.fn === 'state') return "state('_')";
      if (e.fn === 'count') return `count(${e.window.type === 'time' ? "'W'" : 'N'})`;
      return `${e.fn}($_${e.fn === 'deadband' ? ', K' : 'window' in e ? (e.window.type === 'time' ? ", 'W'" : ', N') : ''})`;
  }
}

function logicBody(e: LogicExpr, params: number[], indexById: Map<number, number>): string {
  switch (e.kind) {
    case 'ref':
      params.push(indexById.get(e.id)!);
      return `statementTrue(load<i32>(p, ${(params.length - 1) * 8}))`;
    case 'not':
      return `!${logicBody(e.arg, params, indexById)}`;
    case 'and':
    case 'or':
      return `(${logicBody(e.left, params, indexById)} ${e.kind === 'and' ? '&&' : '||'} ${logicBody(e.right, params, indexById)})`;
  }
}

// ------------------------------------------------------------------------------------------
// Tables

interface TopicNode {
  children: Map<string, TopicNode>;
  plus?: TopicNode;
  hash?: TopicNode;
  targets: number[];
  id: number;
}

interface KeyNode {
  children: Map<string, KeyNode>;
  variable: boolean;
  id: number;
  slot: number;
  lo: number;
  hi: number;
}

function byLengthThenBytes(a: Buffer, b: Buffer): number {
  return a.length - b.length || Buffer.compare(a, b);
}

class StringPool {
  private readonly offsets = new Map<string, number>();
  private readonly parts: Buffer[] = [];
  private size = 0;
  add(s: string): { offset: number; length: number } {
    const bytes = Buffer.from(s, 'utf8');
    const key = bytes.toString('latin1');
    let offset = this.offsets.get(key);
    if (offset === undefined) {
      offset = this.size;
      this.offsets.set(key, offset);
      this.parts.push(bytes);
      this.size += bytes.length;
    }
    return { offset, length: bytes.length };
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

function sortedChildren<T>(children: Map<string, T>): [string, T][] {
  return [...children.entries()].map(([k, v]) => [k, Buffer.from(k, 'utf8'), v] as [string, Buffer, T]).sort((a, b) => byLengthThenBytes(a[1], b[1])).map(([k, , v]) => [k, v]);
}

function buildTopicTree(filters: string[]): TopicNode[] {
  const newNode = (): TopicNode => ({ children: new Map(), targets: [], id: -1 });
  const root = newNode();
  filters.forEach((filter, t) => {
    let node = root;
    for (const level of filter.split('/')) {
      if (level === '+') node = node.plus ??= newNode();
      else if (level === '#') node = node.hash ??= newNode();
      else {
        let next = node.children.get(level);
        if (!next) node.children.set(level, (next = newNode()));
        node = next;
      }
    }
    node.targets.push(t);
  });
  // depth-first numbering: literal children in sorted order, then +, then #
  const order: TopicNode[] = [];
  const stack: TopicNode[] = [root];
  while (stack.length > 0) {
    const n = stack.pop()!;
    n.id = order.length;
    order.push(n);
    const next = [...sortedChildren(n.children).map(([, c]) => c), ...(n.plus ? [n.plus] : []), ...(n.hash ? [n.hash] : [])];
    for (let i = next.length - 1; i >= 0; i--) stack.push(next[i]!);
  }
  return order;
}

function buildKeyTrie(variables: string[][]): { order: KeyNode[]; slots: Map<string, number> } {
  const newNode = (): KeyNode => ({ children: new Map(), variable: false, id: -1, slot: -1, lo: 0, hi: 0 });
  const root = newNode();
  for (const path of variables) {
    let node = root;
    for (const key of path) {
      let next = node.children.get(key);
      if (!next) node.children.set(key, (next = newNode()));
      node = next;
    }
    node.variable = true;
  }
  const order: KeyNode[] = [];
  const slots = new Map<string, number>();
  let slotCount = 0;
  const visit = (n: KeyNode, path: string[]): void => {
    n.id = order.length;
    order.push(n);
    n.lo = slotCount;
    if (n.variable) {
      n.slot = slotCount++;
      slots.set(JSON.stringify(path), n.slot);
    }
    for (const [k, c] of sortedChildren(n.children)) visit(c, [...path, k]);
    n.hi = slotCount;
  };
  visit(root, []);
  return { order, slots };
}

/** Nodes with at least this many literal levels get a hash table (fewer: binary search). */
const HASHED_LEVELS = 8;

/** FNV-1a, 32 bits (as assembly/rules/engine.ts computes it). */
function fnv1a(bytes: Buffer): number {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

class Words {
  readonly values: number[] = [];
  push(...v: number[]): void {
    for (const x of v) this.values.push(x);
  }
  get length(): number {
    return this.values.length;
  }
}

// ------------------------------------------------------------------------------------------

/** Comments list at most this many statements (the tables hold all of them). */
const LISTED = 200;

/** A statement's compiled condition, shared by statements that differ only in slots and constants. */
interface StatementShapes {
  shapes: Map<string, Shape>;
  /** Per statement (filter statements, then rule statements): its shape and parameters. */
  statementShape: { shape: Shape; params: Param[] }[];
  /** Per statement: where it is in the document (comments). */
  where: string[];
}

interface TemplateShape {
  id: number;
  body: string;
  registers: number;
  example: string;
  uses: number;
}

interface LogicShape {
  id: number;
  body: string;
  example: string;
  uses: number;
}

/** What the generated source and the tables blob are made from (the parts below). */
interface ProgramParts {
  doc: CheckedDocument;
  topicOrder: TopicNode[];
  keyOrder: KeyNode[];
  slots: Map<string, number>;
  literals: LiteralPool;
  stateKeys: Map<string, number>;
  statements: StatementShapes;
  templateShapes: Map<string, TemplateShape>;
  logicTemplates: ({ shape: number; params: Param[] } | undefined)[];
  logicShapes: Map<string, LogicShape>;
  logicEntries: { shape: number; params: number[] }[];
  registers: number;
}

/** Generates the program for a checked document. Deterministic: same document, same output. */
export function generateProgram(doc: CheckedDocument): GeneratedProgram {
  const topicOrder = buildTopicTree([...doc.filters.map((f) => f.topic), ...doc.ruleStatements.map((s) => s.topic)]);
  const { order: keyOrder, slots } = buildKeyTrie(doc.variables);
  // one literal pool and one state key numbering, statements first: the source lists them in that order
  const literals = new LiteralPool();
  const stateKeys = new Map<string, number>();
  const statements = statementShapes(doc, slots, literals, stateKeys);
  const { templateShapes, logicTemplates } = logicTemplateShapes(doc, slots, literals, stateKeys);
  const registers = Math.max(0, ...[...statements.shapes.values()].map((s) => s.registers), ...[...templateShapes.values()].map((s) => s.registers));
  const { logicShapes, logicEntries } = logicShapesOf(doc);
  const parts: ProgramParts = { doc, topicOrder, keyOrder, slots, literals, stateKeys, statements, templateShapes, logicTemplates, logicShapes, logicEntries, registers };
  const blob = tablesBlob(parts);
  const source = programSource(parts, blob.length);
  return { source, tables: new Uint8Array(blob.buffer, blob.byteOffset, blob.length), registers, targets: doc.filters.length + doc.ruleStatements.length, stateKeys: [...stateKeys.keys()] };
}

/** Conditions as shapes: one function per distinct body, the slots and constants as parameters. */
function statementShapes(doc: CheckedDocument, slots: Map<string, number>, literals: LiteralPool, stateKeys: Map<string, number>): StatementShapes {
  const shapes = new Map<string, Shape>();
  const statementShape: { shape: Shape; params: Param[] }[] = [];
  const where: string[] = [];
  const ruleOf = new Map<number, string>();
  doc.document.rules.forEach((r, ri) => r.statements.forEach((s, si) => ruleOf.set(s.id, `rules/${ri}/statements/${si}`)));
  const addStatement = (condition: Expr, type: string, title: string, source: string, cells: readonly MemoryCell[] = [], templates?: Templates): void => {
    const w = new ShapeWriter(slots, literals, type, cells, stateKeys);
    const prologue = w.memoryPrologue('  ');
    const firstConditionParam = w.slotParams.length;
    const result = w.bool(condition, '  ');
    const conditionSlots = w.slotParams.slice(firstConditionParam);
    const missing = conditionSlots.length === 0 ? 'false' : conditionSlots.map((s) => `isMissing(${s})`).join(' || ');
    const conditionLines = w.lines.splice(0);
    const tail: string[] = [];
    if (templates) {
      w.lines.push(`  if (${result} == TRUE) {`);
      w.templateValues(templates.exprs, '    ');
      w.lines.push('  }');
      tail.push(...w.lines.splice(0));
    }
    tail.push(...w.memoryEpilogue(result, '  '));
    const body = [
      w.localDeclarations(),
      '  evaluated();',
      ...prologue,
      ...conditionLines,
      `  if (${result} == UNKNOWN) noteUnknown(${missing});`,
      '  statementResult(' + result + ');',
      ...tail,
      `  return ${result};`,
    ]
      .filter((l) => l !== '')
      .join('\n');

    let shape = shapes.get(body);
    if (!shape) {
      shape = { id: shapes.size, template: `[${type}] ${template(condition)}`, body, registers: w.registers, example: `${title}: ${source}`, uses: 0 };
      shapes.set(body, shape);
    }
    shape.uses++;
    statementShape.push({ shape, params: w.params });
    where.push(title);
  };
  doc.filters.forEach((f) => f.statements.forEach((st, si) => addStatement(st.condition, TYPE_CODE.none, `filters/${f.index}/statements/${si}`, st.source, st.cells, st.templates)));
  for (const st of doc.ruleStatements) addStatement(st.condition, TYPE_CODE[st.payloadType], `${ruleOf.get(st.id)} ($${st.id}, ${st.payloadType})`, st.source, st.cells);

  return { shapes, statementShape, where };
}

/** Logic entries' templates: evaluated against the message that triggered the logic, no memory. */
function logicTemplateShapes(doc: CheckedDocument, slots: Map<string, number>, literals: LiteralPool, stateKeys: Map<string, number>): { templateShapes: Map<string, TemplateShape>; logicTemplates: ({ shape: number; params: Param[] } | undefined)[] } {
  const templateShapes = new Map<string, TemplateShape>();
  const logicTemplates: ({ shape: number; params: Param[] } | undefined)[] = doc.logic.map((l) => {
    if (!l.templates) return undefined;
    const w = new ShapeWriter(slots, literals, TYPE_CODE.none, [], stateKeys);
    w.templateValues(l.templates.exprs, '  ');
    const body = [w.localDeclarations(), '  payloadIsObject(); // scans the payload (a payload that is not an object leaves every field missing)', ...w.lines].filter((x) => x !== '').join('\n');
    let shape = templateShapes.get(body);
    if (!shape) {
      shape = { id: templateShapes.size, body, registers: w.registers, example: `rules/${l.rule} ${l.topic}`, uses: 0 };
      templateShapes.set(body, shape);
    }
    shape.uses++;
    return { shape: shape.id, params: w.params };
  });
  return { templateShapes, logicTemplates };
}

/** Rule logic entries as shapes over statement indices. */
function logicShapesOf(doc: CheckedDocument): { logicShapes: Map<string, LogicShape>; logicEntries: { shape: number; params: number[] }[] } {
  const indexById = new Map(doc.ruleStatements.map((s) => [s.id, s.index]));
  const logicShapes = new Map<string, LogicShape>();
  const logicEntries: { shape: number; params: number[] }[] = [];
  for (const l of doc.logic) {
    const params: number[] = [];
    const body = logicBody(l.operations, params, indexById);
    let shape = logicShapes.get(body);
    if (!shape) {
      shape = { id: logicShapes.size, body, example: `${l.source} -> ${l.topic}`, uses: 0 };
      logicShapes.set(body, shape);
    }
    shape.uses++;
    logicEntries.push({ shape: shape.id, params });
  }

  return { logicShapes, logicEntries };
}

/** The tables blob (layout: assembly/rules/layout.ts, fields described in assembly/rules/engine.ts). */
/** The topic decision tree as word sections: nodes, edges, target lists, level hash tables. */
function topicTreeWords(topicOrder: TopicNode[], pool: StringPool): { topicNodes: Words; topicEdges: Words; targetList: Words; levelTables: Words } {
  const levelTables = new Words();
  const topicNodes = new Words();
  const topicEdges = new Words();
  const targetList = new Words();
  for (const n of topicOrder) {
    const children = sortedChildren(n.children);
    const firstEdge = topicEdges.length / EDGE_WORDS;
    let table = -1;
    let mask = 0;
    if (children.length >= HASHED_LEVELS) {
      let size = 1;
      while (size < children.length * 2) size *= 2;
      mask = size - 1;
      const buckets = new Array<number>(size).fill(0);
      children.forEach(([k], i) => {
        let h = fnv1a(Buffer.from(k, 'utf8'));
        while (buckets[h & mask] !== 0) h = (h + 1) >>> 0;
        buckets[h & mask] = firstEdge + i + 1;
      });
      table = levelTables.length;
      levelTables.push(...buckets);
    }
    topicNodes.push(firstEdge, children.length, n.plus ? n.plus.id : -1, n.hash ? n.hash.id : -1, targetList.length, n.targets.length, table, mask);
    for (const [k, c] of children) {
      const s = pool.add(k);
      topicEdges.push(s.offset, s.length, c.id);
    }
    targetList.push(...n.targets);
  }
  return { topicNodes, topicEdges, targetList, levelTables };
}

/** The key trie of the variables as word sections: nodes and edges. */
function keyTrieWords(keyOrder: KeyNode[], pool: StringPool): { keyNodes: Words; keyEdges: Words } {
  const keyNodes = new Words();
  const keyEdges = new Words();
  for (const n of keyOrder) {
    const children = sortedChildren(n.children);
    // +20: which key lengths the edges have (bit min(length, 31)), so most keys skip the search
    let lengths = 0;
    for (const [k] of children) lengths |= 1 << Math.min(Buffer.byteLength(k, 'utf8'), 31);
    keyNodes.push(keyEdges.length / EDGE_WORDS, children.length, n.slot, n.lo, n.hi, lengths >>> 0);
    for (const [k, c] of children) {
      const s = pool.add(k);
      keyEdges.push(s.offset, s.length, c.id);
    }
  }
  return { keyNodes, keyEdges };
}

function tablesBlob(parts: ProgramParts): Buffer {
  const { doc, topicOrder, keyOrder, slots, logicTemplates, logicEntries } = parts;
  const statementShape = parts.statements.statementShape;
  const F = doc.filters.length;
  const FS = doc.filterStatements.length;
  const pool = new StringPool();
  const { topicNodes, topicEdges, targetList, levelTables } = topicTreeWords(topicOrder, pool);
  const { keyNodes, keyEdges } = keyTrieWords(keyOrder, pool);
  const targetTable = new Words();
  let first = 0;
  for (const f of doc.filters) {
    targetTable.push(1, first, f.statements.length);
    first += f.statements.length;
  }
  for (const st of doc.ruleStatements) targetTable.push(0, FS + st.index, 1);

  // params: 8-byte cells, placed after the word tables (offsets fixed below)
  const cells: Param[] = [];
  const statementParamCell: number[] = statementShape.map((s) => {
    const at = cells.length;
    cells.push(...s.params);
    return at;
  });
  const logicParamCell: number[] = logicEntries.map((l) => {
    const at = cells.length;
    cells.push(...l.params.map((slot) => ({ slot })));
    return at;
  });
  const templateParamCell: number[] = logicTemplates.map((t) => {
    const at = cells.length;
    if (t) cells.push(...t.params);
    return at;
  });
  const words = Math.max(1, Math.ceil(doc.ruleStatements.length / 32));
  const masks = new Words();
  const maskAt: number[] = doc.logic.map((l) => {
    if (l.payload !== null) return -1;
    const m = new Array<number>(words).fill(0);
    for (const s of l.refs) m[s >> 5] = (m[s >> 5]! | (1 << (s & 31))) >>> 0;
    const at = masks.length;
    masks.push(...m);
    return at;
  });

  const sections = [topicNodes, topicEdges, targetList, keyNodes, keyEdges, targetTable, levelTables];
  const offsets: number[] = [];
  let offset = HEADER_WORDS * 4;
  for (const w of sections) {
    offsets.push(offset);
    offset += w.length * 4;
  }
  const statementTableAt = offset;
  offset += statementShape.length * STATEMENT_SIZE;
  const logicTableAt = offset;
  offset += logicEntries.length * LOGIC_SIZE;
  const masksAt = offset;
  offset += masks.length * 4;
  offset = (offset + 7) & ~7;
  const cellsAt = offset;
  offset += cells.length * PARAM_SIZE;
  const stringsAt = offset;
  const strings = pool.bytes();
  const blob = Buffer.alloc(stringsAt + strings.length);
  const header = new Array<number>(HEADER_WORDS).fill(0);
  header[layout.H_MAGIC] = TABLES_MAGIC;
  header[layout.H_TARGETS] = F + doc.ruleStatements.length;
  header[layout.H_FILTER_TARGETS] = F;
  header[layout.H_TOPIC_NODES] = topicOrder.length;
  header[layout.H_TOPIC_NODE_AT] = offsets[0]!;
  header[layout.H_TOPIC_EDGE_AT] = offsets[1]!;
  header[layout.H_TARGET_LIST_AT] = offsets[2]!;
  header[layout.H_KEY_NODES] = keyOrder.length;
  header[layout.H_KEY_NODE_AT] = offsets[3]!;
  header[layout.H_KEY_EDGE_AT] = offsets[4]!;
  header[layout.H_STRINGS_AT] = stringsAt;
  header[layout.H_SLOTS] = slots.size;
  header[layout.H_TARGET_TABLE_AT] = offsets[5]!;
  header[layout.H_STATEMENTS] = statementShape.length;
  header[layout.H_STATEMENT_TABLE_AT] = statementTableAt;
  header[layout.H_FILTER_STATEMENTS] = FS;
  header[layout.H_LOGIC_ENTRIES] = logicEntries.length;
  header[layout.H_LOGIC_TABLE_AT] = logicTableAt;
  header[layout.H_MASK_WORDS] = words;
  header.forEach((v, i) => blob.writeUInt32LE(v >>> 0, i * 4));
  // a node's level hash table: word index in levelTables -> byte offset in the blob
  for (let i = 0; i < topicOrder.length; i++) {
    const at = i * NODE_WORDS + TOPIC_NODE_TABLE_WORD;
    topicNodes.values[at] = topicNodes.values[at]! < 0 ? 0 : offsets[6]! + topicNodes.values[at]! * 4;
  }
  sections.forEach((w, i) => w.values.forEach((v, j) => blob.writeInt32LE(v | 0, offsets[i]! + j * 4)));
  statementShape.forEach((s, i) => {
    const at = statementTableAt + i * STATEMENT_SIZE;
    blob.writeUInt32LE(s.shape.id, at);
    blob.writeUInt32LE(cellsAt + statementParamCell[i]! * PARAM_SIZE, at + 4);
  });
  logicEntries.forEach((l, i) => {
    const at = logicTableAt + i * LOGIC_SIZE;
    blob.writeUInt32LE(l.shape, at);
    blob.writeUInt32LE(cellsAt + logicParamCell[i]! * PARAM_SIZE, at + 4);
    blob.writeInt32LE(maskAt[i]! < 0 ? -1 : masksAt + maskAt[i]! * 4, at + 8);
    blob.writeInt32LE(logicTemplates[i] ? logicTemplates[i]!.shape : -1, at + 12);
    blob.writeUInt32LE(cellsAt + templateParamCell[i]! * PARAM_SIZE, at + 16);
  });
  masks.values.forEach((v, j) => blob.writeUInt32LE(v >>> 0, masksAt + j * 4));
  cells.forEach((c, j) => {
    if ('slot' in c) blob.writeInt32LE(c.slot, cellsAt + j * PARAM_SIZE);
    else blob.writeDoubleLE(c.num, cellsAt + j * PARAM_SIZE);
  });
  strings.copy(blob, stringsAt);

  return blob;
}

/** The AssemblyScript entry file: commented tables summary, imports, dispatch, one function per shape. */
function programSource(parts: ProgramParts, blobBytes: number): string {
  const { doc, topicOrder, keyOrder, slots, literals, stateKeys, templateShapes, logicShapes, registers } = parts;
  const { shapes, statementShape, where } = parts.statements;
  const F = doc.filters.length;
  const FS = doc.filterStatements.length;
  // AssemblyScript (documents without the functions of fr-script-state.md import nothing new)
  const usesMemory = doc.filterStatements.some((st) => st.cells.length > 0 || st.templates) || doc.ruleStatements.some((st) => st.cells.length > 0) || templateShapes.size > 0 || stateKeys.size > 0;
  const shapeList = [...shapes.values()];
  const logicList = [...logicShapes.values()];
  const targetComments = [
    ...doc.filters.map((f) => `//   ${String(f.index).padStart(5)}  filters/${f.index} (${f.statements.length} statements)  ${commentText(f.topic)}`),
    ...doc.ruleStatements.map((s) => `//   ${String(F + s.index).padStart(5)}  $${s.id}  ${commentText(s.topic)}`),
  ];
  const statementComments = statementShape.map(
    (s, i) =>
      `//   ${String(i).padStart(5)}  shape ${s.shape.id}  (${s.params.map((p) => ('slot' in p ? `slot ${p.slot}` : f64Literal(p.num))).join(', ')})  ${where[i]}`,
  );
  const slotComments = [...slots.entries()].sort((a, b) => a[1] - b[1]).map(([path, slot]) => `//   ${String(slot).padStart(5)}  $${commentText((JSON.parse(path) as string[]).join('.'))}`);
  const listed = (lines: string[]): string[] => (lines.length <= LISTED ? lines : [...lines.slice(0, LISTED), `//   ... ${lines.length - LISTED} more (in the tables)`]);

  return [
    '// GENERATED by src/rules/codegen.ts from an fr_script document. Do not edit: change the',
    '// document and let the broker compile it. Alongside it, the tables blob (' + blobBytes + ' bytes) holds the',
    `// topic tree (${topicOrder.length} nodes), the key trie of the variables (${keyOrder.length} nodes), each`,
    '// statement\'s shape and parameters, and the logic entries (layout: assembly/rules/engine.ts).',
    '//',
    `// Targets (${F + doc.ruleStatements.length}): target, what runs, topic filter`,
    ...listed(targetComments),
    `// Statements (${statementShape.length}): index, shape, parameters, where`,
    ...listed(statementComments),
    `// Variables (${slots.size}): slot, path`,
    ...listed(slotComments),
    '',
    'import {',
    '  configure, beginMessage, matchedTarget, payloadIsObject, emitFilter, emitRule, ruleStatement,',
    '  ruleLogicDue, finishMessage, evaluated, targetIsFilter, targetFirst, targetCount, targetRuns,',
    '  statementShape, statementParams, logicCount, logicShape, logicParams, logicMask,',
    '  statementResult, setStatement,',
    ...(usesMemory ? ['  tplBegin, valuePush, topicLevel, loadState, logicTemplate, logicTemplateParams,'] : []),
    '} from "./rules/engine";',
    'import {',
    '  FALSE, TRUE, UNKNOWN, EQ, NE, LT, LE, GT, GE, ADD, SUB, MUL, DIV, MOD,',
    '  T_NONE, T_INT, T_FLOAT, T_STR, T_BOOL, and3, or3, not3, truth, isMissing, noteUnknown,',
    '  loadVar, setNumber, setString, setBool, setNull, setTri, negate, arith, compare, compareSlotNumber,',
    '} from "./rules/values";',
    ...(usesMemory
      ? [
          'import { absValue } from "./rules/values";',
          'import {',
          '  memRecord, memPrev, memChanged, memDelta, memStoreValue, memDeadband, memStoreRef, windowPush, windowAggregate,',
          '  AGG_AVG, AGG_MIN, AGG_MAX, AGG_SUM, AGG_COUNT,',
          '} from "./rules/memory";',
        ]
      : []),
    'import { statementTrue } from "./rules/buffer";',
    'export {',
    '  countersPtr, tablesPtr, loadTables, topicCache, learnTopic, inputPtr, outputPtr, outputJsonPtr, restoreEntry,',
    '  bufferEntries, bufferEntry, bufferWords, clearRuleBuffer,',
    '  statementCountersPtr, memoryOldest, memoryAlloc, memoryRestore, memoryClear, ringReserve, setMemoryLimits,',
    '} from "./rules/engine";',
    '',
    `const FILTER_STATEMENTS: i32 = ${FS};`,
    `configure(${registers});`,
    ...(literals.declarations.length > 0 ? ['', ...literals.declarations] : []),
    '',
    '/**',
    ' * One message at `now` (ms): its topic was learnt as `topicSlot`, the payload is in the input region.',
    ' * `mode`: what runs (RUN_* of layout.ts: 3 everything; cluster nodes run filters and rules apart). Returns the output record count.',
    ' */',
    'export function process(topicSlot: i32, payloadLen: i32, now: f64, mode: i32): i32 {',
    '  const n = beginMessage(topicSlot, payloadLen, now);',
    '  if (mode == 3) for (let i = 0; i < n; i++) runTarget(matchedTarget(i));',
    '  else for (let i = 0; i < n; i++) { const t = matchedTarget(i); if (targetRuns(t, mode)) runTarget(t); }',
    '  let fired = false;',
    '  if (ruleLogicDue()) fired = runLogic();',
    '  return finishMessage(fired);',
    '}',
    '',
    '/** A filter: every statement whose condition holds publishes. A rule statement: its result goes to the buffer. */',
    'function runTarget(t: i32): void {',
    '  const first = targetFirst(t);',
    '  if (targetIsFilter(t)) {',
    '    if (!payloadIsObject()) return;',
    '    const end = first + targetCount(t);',
    '    for (let s = first; s < end; s++) if (evalStatement(s) == TRUE) emitFilter(s);',
    '  } else {',
    '    ruleStatement(first - FILTER_STATEMENTS, payloadIsObject() && evalStatement(first) == TRUE);',
    '  }',
    '}',
    '',
    'function evalStatement(s: i32): i32 {',
    '  setStatement(s);',
    '  const p = statementParams(s);',
    '  switch (statementShape(s)) {',
    ...shapeList.map((s) => `    case ${s.id}: return shape${s.id}(p);`),
    '  }',
    '  return UNKNOWN;',
    '}',
    '',
    '/** Rule logic over the statement results; any output empties the buffer (for all rules). */',
    'function runLogic(): bool {',
    '  let fired = false;',
    '  const n = logicCount();',
    '  for (let j = 0; j < n; j++) {',
    '    if (evalLogic(j)) {',
    ...(templateShapes.size > 0 ? ['      const t = logicTemplate(j);', '      if (t >= 0) runTemplate(t, logicTemplateParams(j));'] : []),
    '      emitRule(j, logicMask(j));',
    '      fired = true;',
    '    }',
    '  }',
    '  return fired;',
    '}',
    '',
    'function evalLogic(j: i32): bool {',
    '  const p = logicParams(j);',
    '  switch (logicShape(j)) {',
    ...logicList.map((l) => `    case ${l.id}: return logic${l.id}(p);`),
    '  }',
    '  return false;',
    '}',
    '',
    ...shapeList.flatMap((s) => [
      `// shape ${s.id}: ${commentText(s.template)}`,
      `//   used by ${s.uses} statement${s.uses === 1 ? '' : 's'}; first: ${commentText(s.example)}`,
      `function shape${s.id}(p: usize): i32 {`,
      s.body,
      '}',
      '',
    ]),
    ...(templateShapes.size > 0
      ? [
          '/** A logic entry fired: the values of its templates. */',
          'function runTemplate(t: i32, p: usize): void {',
          '  switch (t) {',
          ...[...templateShapes.values()].map((t) => `    case ${t.id}: template${t.id}(p); return;`),
          '  }',
          '}',
          '',
          ...[...templateShapes.values()].flatMap((t) => [`// template ${t.id}, used by ${t.uses}; first: ${commentText(t.example)}`, `function template${t.id}(p: usize): void {`, t.body, '}', '']),
        ]
      : []),
    ...logicList.flatMap((l) => [`// logic ${l.id}, used by ${l.uses} entr${l.uses === 1 ? 'y' : 'ies'}; first: ${commentText(l.example)}`, `function logic${l.id}(p: usize): bool {`, `  return ${l.body};`, '}', '']),
  ].join('\n');
}
