/**
 * The fr_script compiler's back end: from a CheckedDocument to
 *  - AssemblyScript source for the whole document (conditions, per-topic dispatch, rule
 *    logic over the statement results), deterministic and commented for review, and
 *  - the tables blob (topic decision tree, key trie of the variables, string pool) that the
 *    runtime copies into the module's memory; its layout is documented in
 *    assembly/rules/engine.ts and assembly/rules/json.ts.
 *
 * Targets are numbered filters first (target = filter index), then rule statements
 * (target = filters + statement index), so ascending target order is document order.
 */
import type { CheckedDocument, CompareOp, Expr, PayloadType } from './ast.js';
import { formatExpr } from './parse.js';

export interface GeneratedProgram {
  /** AssemblyScript source of the entry file (imports ./rules/*). */
  source: string;
  /** The tables blob (little-endian). */
  tables: Uint8Array;
  /** Registers the program needs (also in the source). */
  registers: number;
  targets: number;
}

const TABLES_MAGIC = 0x31545246;
const HEADER_WORDS = 12;

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

function sortedChildren<T>(children: Map<string, T>): [string, Buffer, T][] {
  return [...children.entries()].map(([k, v]) => [k, Buffer.from(k, 'utf8'), v] as [string, Buffer, T]).sort((a, b) => byLengthThenBytes(a[1], b[1]));
}

/** Builds the topic tree and key trie; returns the blob and each variable path's slot. */
export function buildTables(doc: CheckedDocument): { tables: Uint8Array; slots: Map<string, number>; topicNodes: number; keyNodes: number } {
  const filterTargets = doc.filters.length;
  const targets: string[] = [...doc.filters.map((f) => f.topic), ...doc.ruleStatements.map((s) => s.topic)];

  const newTopicNode = (): TopicNode => ({ children: new Map(), targets: [], id: -1 });
  const root = newTopicNode();
  targets.forEach((filter, t) => {
    let node = root;
    for (const level of filter.split('/')) {
      if (level === '+') node = node.plus ??= newTopicNode();
      else if (level === '#') node = node.hash ??= newTopicNode();
      else {
        let next = node.children.get(level);
        if (!next) node.children.set(level, (next = newTopicNode()));
        node = next;
      }
    }
    node.targets.push(t);
  });
  // number nodes depth-first, children in sorted order, then +, then #
  const topicOrder: TopicNode[] = [];
  const visitTopic = (n: TopicNode): void => {
    n.id = topicOrder.length;
    topicOrder.push(n);
    for (const [, , c] of sortedChildren(n.children)) visitTopic(c);
    if (n.plus) visitTopic(n.plus);
    if (n.hash) visitTopic(n.hash);
  };
  visitTopic(root);

  const keyRoot: KeyNode = { children: new Map(), variable: false, id: -1, slot: -1, lo: 0, hi: 0 };
  for (const path of doc.variables) {
    let node = keyRoot;
    for (const key of path) {
      let next = node.children.get(key);
      if (!next) node.children.set(key, (next = { children: new Map(), variable: false, id: -1, slot: -1, lo: 0, hi: 0 }));
      node = next;
    }
    node.variable = true;
  }
  const keyOrder: KeyNode[] = [];
  let slotCount = 0;
  const slots = new Map<string, number>();
  const visitKey = (n: KeyNode, path: string[]): void => {
    n.id = keyOrder.length;
    keyOrder.push(n);
    n.lo = slotCount;
    if (n.variable) {
      n.slot = slotCount++;
      slots.set(JSON.stringify(path), n.slot);
    }
    for (const [k, , c] of sortedChildren(n.children)) visitKey(c, [...path, k]);
    n.hi = slotCount;
  };
  visitKey(keyRoot, []);

  const pool = new StringPool();
  const topicNodeWords: number[] = [];
  const topicEdgeWords: number[] = [];
  const targetList: number[] = [];
  for (const n of topicOrder) {
    const children = sortedChildren(n.children);
    topicNodeWords.push(topicEdgeWords.length / 3, children.length, n.plus ? n.plus.id : -1, n.hash ? n.hash.id : -1, targetList.length, n.targets.length);
    for (const [k, , c] of children) {
      const s = pool.add(k);
      topicEdgeWords.push(s.offset, s.length, c.id);
    }
    targetList.push(...n.targets);
  }
  const keyNodeWords: number[] = [];
  const keyEdgeWords: number[] = [];
  for (const n of keyOrder) {
    const children = sortedChildren(n.children);
    keyNodeWords.push(keyEdgeWords.length / 3, children.length, n.slot, n.lo, n.hi, 0);
    for (const [k, , c] of children) {
      const s = pool.add(k);
      keyEdgeWords.push(s.offset, s.length, c.id);
    }
  }
  const strings = pool.bytes();
  const words = [topicNodeWords, topicEdgeWords, targetList, keyNodeWords, keyEdgeWords];
  const offsets: number[] = [];
  let offset = HEADER_WORDS * 4;
  for (const w of words) {
    offsets.push(offset);
    offset += w.length * 4;
  }
  const stringsOffset = offset;
  const blob = Buffer.alloc(stringsOffset + strings.length);
  const header = [
    TABLES_MAGIC,
    targets.length,
    filterTargets,
    topicOrder.length,
    offsets[0]!,
    offsets[1]!,
    offsets[2]!,
    keyOrder.length,
    offsets[3]!,
    offsets[4]!,
    stringsOffset,
    slotCount,
  ];
  header.forEach((v, i) => blob.writeUInt32LE(v >>> 0, i * 4));
  words.forEach((w, i) => w.forEach((v, j) => blob.writeInt32LE(v | 0, offsets[i]! + j * 4)));
  strings.copy(blob, stringsOffset);
  return { tables: new Uint8Array(blob.buffer, blob.byteOffset, blob.length), slots, topicNodes: topicOrder.length, keyNodes: keyOrder.length };
}

// ------------------------------------------------------------------------------------------
// AssemblyScript

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

class StatementWriter {
  readonly lines: string[] = [];
  private locals = 0;
  registers = 0;
  constructor(
    private readonly slots: Map<string, number>,
    private readonly literals: LiteralPool,
    private readonly type: string,
  ) {}

  private local(): string {
    const name = `b${this.locals++}`;
    return name;
  }
  private reg(): number {
    return this.registers++;
  }
  localDeclarations(): string {
    return this.locals === 0 ? '' : `  let ${Array.from({ length: this.locals }, (_, i) => `b${i}: i32 = 0`).join(', ')};`;
  }
  slot(path: string[]): number {
    const s = this.slots.get(JSON.stringify(path));
    if (s === undefined) throw new Error(`no slot for ${path.join('.')}`);
    return s;
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
        out.push(`${indent}${r} = ${e.value === true ? 'TRUE' : e.value === false ? 'FALSE' : 'UNKNOWN'}; // ${commentText(formatExpr(e))}`);
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
      let v: Expr | undefined;
      let lit: number | undefined;
      if (a.kind === 'var' && b.kind === 'lit' && typeof b.value === 'number') {
        v = a;
        lit = b.value;
      } else if (b.kind === 'var' && a.kind === 'lit' && typeof a.value === 'number') {
        v = b;
        lit = a.value;
        op = CMP_MIRROR[op];
      }
      if (v && v.kind === 'var' && lit !== undefined) {
        const scratch = this.reg();
        this.reg();
        out.push(`${indent}${r} = compareSlotNumber(${this.slot(v.path)}, ${this.type}, ${CMP_CODE[op]}, ${f64Literal(lit)}, ${scratch}); // $${commentText(v.name)} ${op} ${f64Literal(lit)}`);
        return r;
      }
    }
    // Python chaining: a < b < c is a < b and b < c, each operand computed once
    const regs = e.args.map(() => this.reg());
    out.push(`${indent}// ${commentText(formatExpr(e))}`);
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
        out.push(`${indent}loadVar(${reg}, ${this.slot(e.path)}, ${this.type}); // $${commentText(e.name)}`);
        return;
      case 'lit':
        if (typeof e.value === 'number') out.push(`${indent}setNumber(${reg}, ${f64Literal(e.value)});`);
        else if (typeof e.value === 'string') {
          const lit = this.literals.add(e.value);
          out.push(`${indent}setString(${reg}, ${lit.name}, ${lit.length}); // ${commentText(JSON.stringify(e.value))}`);
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
      default: {
        const t = this.bool(e, indent);
        out.push(`${indent}setTri(${reg}, ${t});`);
      }
    }
  }
}

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

function statementFunction(
  name: string,
  title: string,
  source: string,
  condition: Expr,
  type: string,
  slots: Map<string, number>,
  literals: LiteralPool,
): { code: string; registers: number } {
  const w = new StatementWriter(slots, literals, type);
  const result = w.bool(condition, '  ');
  const vars = new Set<number>();
  const collect = (e: Expr): void => {
    if (e.kind === 'var') vars.add(w.slot(e.path));
    else if (e.kind === 'neg' || e.kind === 'not') collect(e.arg);
    else if (e.kind === 'arith' || e.kind === 'and' || e.kind === 'or') {
      collect(e.left);
      collect(e.right);
    } else if (e.kind === 'cmp') e.args.forEach(collect);
  };
  collect(condition);
  const missing = vars.size === 0 ? 'false' : [...vars].sort((a, b) => a - b).map((s) => `isMissing(${s})`).join(' || ');
  const code = [
    `// ${title}: ${commentText(source)}`,
    `function ${name}(): i32 {`,
    w.localDeclarations(),
    '  evaluated();',
    ...w.lines,
    `  if (${result} == UNKNOWN) noteUnknown(${missing});`,
    `  return ${result};`,
    '}',
  ]
    .filter((l) => l !== '')
    .join('\n');
  return { code, registers: w.registers };
}

function logicCode(e: import('./ast.js').LogicExpr, indexById: Map<number, number>): string {
  switch (e.kind) {
    case 'ref':
      return `statementTrue(${indexById.get(e.id)})`;
    case 'not':
      return `!${logicCode(e.arg, indexById)}`;
    case 'and':
    case 'or':
      return `(${logicCode(e.left, indexById)} ${e.kind === 'and' ? '&&' : '||'} ${logicCode(e.right, indexById)})`;
  }
}

/** Generates the program for a checked document. Deterministic: same document, same output. */
export function generateProgram(doc: CheckedDocument): GeneratedProgram {
  const { tables, slots, topicNodes, keyNodes } = buildTables(doc);
  const literals = new LiteralPool();
  const functions: string[] = [];
  let registers = 0;
  const F = doc.filters.length;

  for (const st of doc.filterStatements) {
    const fn = statementFunction(`filter${st.index}`, `filters/${st.filter}/statements/${doc.filters[st.filter]!.statements.indexOf(st)}`, st.source, st.condition, TYPE_CODE.none, slots, literals);
    registers = Math.max(registers, fn.registers);
    functions.push(fn.code);
  }
  const ruleOf = new Map<number, { rule: number; position: number }>();
  doc.document.rules.forEach((r, ri) => r.statements.forEach((s, si) => ruleOf.set(s.id, { rule: ri, position: si })));
  for (const st of doc.ruleStatements) {
    const where = ruleOf.get(st.id)!;
    const fn = statementFunction(`rule${st.index}`, `rules/${where.rule}/statements/${where.position} ($${st.id}, ${st.payloadType})`, st.source, st.condition, TYPE_CODE[st.payloadType], slots, literals);
    registers = Math.max(registers, fn.registers);
    functions.push(fn.code);
  }

  const cases: string[] = [];
  for (const f of doc.filters) {
    const body = f.statements.map((st) => `      if (filter${st.index}() == TRUE) emitFilter(${st.index});`);
    cases.push(
      [`    case ${f.index}: { // filters/${f.index}: ${commentText(f.topic)}`, '      if (!payloadIsObject()) return;', ...body, '      return;', '    }'].join('\n'),
    );
  }
  for (const st of doc.ruleStatements) {
    cases.push(
      [`    case ${F + st.index}: { // $${st.id}: ${commentText(st.topic)}`, `      ruleStatement(${st.index}, payloadIsObject() && rule${st.index}() == TRUE);`, '      return;', '    }'].join('\n'),
    );
  }

  const indexById = new Map(doc.ruleStatements.map((s) => [s.id, s.index]));
  const words = Math.max(1, Math.ceil(doc.ruleStatements.length / 32));
  const masks: string[] = [];
  const logicLines: string[] = [];
  for (const l of doc.logic) {
    let mask = '0';
    if (l.payload === null) {
      const m = new Array<number>(words).fill(0);
      for (const s of l.refs) m[s >> 5] = (m[s >> 5]! | (1 << (s & 31))) >>> 0;
      mask = `MASK_${l.index}`;
      masks.push(`const ${mask} = memory.data<u32>([${m.map((x) => `0x${x.toString(16)}`).join(', ')}]); // statements ${l.refs.map((s) => `$${doc.ruleStatements[s]!.id}`).join(', ')}`);
    }
    logicLines.push(
      `  // rules/${l.rule}/logic/${doc.document.rules[l.rule]!.logic.length > 1 ? doc.logic.filter((x) => x.rule === l.rule).indexOf(l) : 0}: ${commentText(l.source)} -> ${commentText(l.topic)}`,
      `  if (${logicCode(l.operations, indexById)}) {`,
      `    emitRule(${l.index}, ${mask});`,
      '    fired = true;',
      '  }',
    );
  }

  const targetComments = [
    ...doc.filters.map((f) => `//   ${String(f.index).padStart(4)}  filters/${f.index} (${f.statements.length} statements)  ${commentText(f.topic)}`),
    ...doc.ruleStatements.map((s) => `//   ${String(F + s.index).padStart(4)}  $${s.id}  ${commentText(s.topic)}`),
  ];
  const slotComments = [...slots.entries()].sort((a, b) => a[1] - b[1]).map(([path, slot]) => `//   ${String(slot).padStart(4)}  $${commentText((JSON.parse(path) as string[]).join('.'))}`);

  const source = [
    '// GENERATED by src/rules/codegen.ts from an fr_script document. Do not edit: change the',
    '// document and let the broker compile it. The tables blob (topic tree and key trie) is',
    `// built alongside: ${tables.length} bytes, ${topicNodes} topic nodes, ${keyNodes} key nodes.`,
    '//',
    `// Targets (${F + doc.ruleStatements.length}): target, what runs, topic filter`,
    ...targetComments,
    `// Variables (${slots.size}): slot, path`,
    ...slotComments,
    '',
    'import {',
    '  configure, beginMessage, matchedTarget, payloadIsObject, evaluated, emitFilter, emitRule,',
    '  ruleStatement, ruleLogicDue, finishMessage,',
    '} from "./rules/engine";',
    'import {',
    '  FALSE, TRUE, UNKNOWN, EQ, NE, LT, LE, GT, GE, ADD, SUB, MUL, DIV, MOD,',
    '  T_NONE, T_INT, T_FLOAT, T_STR, T_BOOL, and3, or3, not3, truth, isMissing, noteUnknown,',
    '  loadVar, setNumber, setString, setBool, setNull, setTri, negate, arith, compare, compareSlotNumber,',
    '} from "./rules/values";',
    'import { statementTrue } from "./rules/buffer";',
    'export {',
    '  countersPtr, tablesPtr, loadTables, inputPtr, outputPtr, outputJsonPtr, restoreEntry,',
    '  bufferEntries, bufferEntry, bufferWords, clearRuleBuffer,',
    '} from "./rules/engine";',
    '',
    `export const RULE_STATEMENTS: i32 = ${doc.ruleStatements.length};`,
    `configure(${registers});`,
    '',
    ...literals.declarations,
    ...masks,
    '',
    '/** One message: the topic, then the payload, are in the input region. Returns the output record count. */',
    'export function process(topicLen: i32, payloadLen: i32): i32 {',
    '  const n = beginMessage(topicLen, payloadLen);',
    '  for (let i = 0; i < n; i++) runTarget(matchedTarget(i));',
    '  let fired = false;',
    '  if (ruleLogicDue()) fired = runLogic();',
    '  return finishMessage(fired);',
    '}',
    '',
    'function runTarget(target: i32): void {',
    '  switch (target) {',
    ...cases,
    '  }',
    '}',
    '',
    '/** Rule logic over the statement results; any output empties the buffer (for all rules). */',
    'function runLogic(): bool {',
    '  let fired = false;',
    ...logicLines,
    '  return fired;',
    '}',
    '',
    ...functions.flatMap((f) => [f, '']),
  ].join('\n');
  return { source, tables, registers, targets: F + doc.ruleStatements.length };
}
