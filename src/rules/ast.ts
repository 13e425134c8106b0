/**
 * Typed syntax trees of fr_script (docs/rules.md, specs/fr-script.md), produced by parse.ts
 * from jsep's generic tree and consumed by the reference interpreter and the code generator.
 */

export type CompareOp = '==' | '!=' | '<' | '<=' | '>' | '>=';
export type ArithOp = '+' | '-' | '*' | '/' | '%';
export type PayloadType = 'int' | 'float' | 'str' | 'bool';

/** A condition over the fields of a JSON payload. */
export type Expr =
  /** `$a.b.0`: `path` is the name split on `.`; `pos` is the character offset of the `$`. */
  | { kind: 'var'; name: string; path: string[]; pos: number }
  | { kind: 'lit'; value: number | string | boolean | null }
  | { kind: 'neg'; arg: Expr }
  | { kind: 'not'; arg: Expr }
  | { kind: 'arith'; op: ArithOp; left: Expr; right: Expr }
  /** `a < b <= c` reads as `a < b and b <= c` (Python chaining); `args.length === ops.length + 1`. */
  | { kind: 'cmp'; ops: CompareOp[]; args: Expr[] }
  | { kind: 'and' | 'or'; left: Expr; right: Expr }
  /** A function (specs/fr-script-state.md), arguments checked by the parser; `pos` is its name's offset. */
  | CallExpr;

export type MemoryFn = 'prev' | 'changed' | 'delta';
export type AggregateFn = 'avg' | 'min' | 'max' | 'sum';
/** `'30s'` (time: milliseconds) or `5` (the last 5 messages). */
export type Window = { type: 'time'; ms: number } | { type: 'count'; n: number };
export type VarExpr = Extract<Expr, { kind: 'var' }>;
export type CallExpr =
  | { kind: 'call'; fn: MemoryFn; arg: VarExpr; pos: number }
  | { kind: 'call'; fn: 'deadband'; arg: VarExpr; d: number; pos: number }
  | { kind: 'call'; fn: AggregateFn; arg: VarExpr; window: Window; pos: number }
  | { kind: 'call'; fn: 'count'; window: Window; pos: number }
  | { kind: 'call'; fn: 'abs'; value: Expr; pos: number }
  | { kind: 'call'; fn: 'topic'; n: number; pos: number }
  /** `key` is the literal with its `{n}` / `{topic}` placeholders. */
  | { kind: 'call'; fn: 'state'; key: string; pos: number };

/** A payload template: a string with `{{ expression }}` parts, or a JSON value with them inside strings. */
export type Template =
  | { kind: 'text'; parts: (string | number)[] }
  | { kind: 'typed'; expr: number }
  | { kind: 'object'; entries: [string, Template][] }
  | { kind: 'array'; items: Template[] }
  | { kind: 'json'; value: null | boolean | number };

/** Where a statement's template expressions go (`exprs` indexes are the numbers in Template parts). */
export interface Templates {
  exprs: Expr[];
  /** null: no new payload (the original one, or the rule's JSON object); omitted publish: `publish` false. */
  payload: Template | null;
  /** Whether the statement publishes (false: only writes state). */
  publish: boolean;
  setState?: { key: string; value: Template; px?: number };
}

/** A rule's `operations`: logic over statement ids. */
export type LogicExpr =
  | { kind: 'ref'; id: number; pos: number }
  | { kind: 'not'; arg: LogicExpr }
  | { kind: 'and' | 'or'; left: LogicExpr; right: LogicExpr };

/** The document as stored and served (every key present). */
export type PayloadTemplate = string | { [key: string]: unknown };
export interface SetState {
  key: string;
  value: PayloadTemplate;
  px?: number;
}
export interface FilterStatement {
  condition: string;
  /** Absent (read back as such) only when `set_state` is given: the statement only writes. */
  new_payload?: PayloadTemplate;
  set_state?: SetState;
}
export interface Filter {
  topic: string;
  subtopic: string;
  statements: FilterStatement[];
}
export interface RuleStatement {
  id: number;
  topic: string;
  payload_type: PayloadType;
  condition: string;
}
export interface RuleLogic {
  operations: string;
  new_topic: string;
  new_payload?: PayloadTemplate;
  set_state?: SetState;
}
export interface Rule {
  statements: RuleStatement[];
  logic: RuleLogic[];
}
export interface RulesDocument {
  filters: Filter[];
  rules: Rule[];
}

/** A document after parsing and checking, flattened for the engines. */
export interface CheckedDocument {
  document: RulesDocument;
  filters: CheckedFilter[];
  /** Every filter statement in document order; `index` is its position here. */
  filterStatements: CheckedFilterStatement[];
  /** Every rule statement in document order; `index` is its position here. */
  ruleStatements: CheckedRuleStatement[];
  /** Every logic entry in document order. */
  logic: CheckedLogic[];
  /** Distinct variable paths used by any condition, sorted; a slot number is the index here. */
  variables: string[][];
}
export interface CheckedFilter {
  index: number;
  topic: string;
  /** Appended to the incoming topic: "/" + subtopic without a leading slash. */
  suffix: string;
  statements: CheckedFilterStatement[];
}
export interface CheckedFilterStatement {
  index: number;
  filter: number;
  condition: Expr;
  source: string;
  /** null: republish the incoming payload. */
  payload: string | null;
  /** Templates (payload with {{ }}, object payload, set_state); undefined: none. */
  templates?: Templates;
  /** The memory cells this statement keeps per topic (prev values, deadbands, windows). */
  cells: MemoryCell[];
}
/** One piece of per-topic memory of a statement; `id` is its descriptor (stable across documents). */
export type MemoryCell =
  | { kind: 'value'; path: string[]; id: string }
  | { kind: 'deadband'; path: string[]; id: string }
  | { kind: 'window'; path: string[] | null; window: Window; id: string };
export interface CheckedRuleStatement {
  index: number;
  id: number;
  topic: string;
  payloadType: PayloadType;
  condition: Expr;
  source: string;
  cells: MemoryCell[];
}
export interface CheckedLogic {
  index: number;
  rule: number;
  operations: LogicExpr;
  source: string;
  /** With the `!` prefix. */
  topic: string;
  /** null: the JSON object of the buffered messages. */
  payload: string | null;
  templates?: Templates;
  /** Indexes (into ruleStatements) of the statements `operations` refers to, sorted. */
  refs: number[];
}
