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
  | { kind: 'and' | 'or'; left: Expr; right: Expr };

/** A rule's `operations`: logic over statement ids. */
export type LogicExpr =
  | { kind: 'ref'; id: number; pos: number }
  | { kind: 'not'; arg: LogicExpr }
  | { kind: 'and' | 'or'; left: LogicExpr; right: LogicExpr };

/** The document as stored and served (every key present). */
export interface FilterStatement {
  condition: string;
  new_payload: string;
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
  new_payload: string;
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
}
export interface CheckedRuleStatement {
  index: number;
  id: number;
  topic: string;
  payloadType: PayloadType;
  condition: Expr;
  source: string;
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
  /** Indexes (into ruleStatements) of the statements `operations` refers to, sorted. */
  refs: number[];
}
