/**
 * From a schema-valid document to a CheckedDocument: every condition and operation parsed,
 * statement ids unique and resolved, topic filters and output topics valid.
 */
import type {
  Expr,
  MemoryCell,
  PayloadTemplate,
  SetState,
  Template,
  Templates,
  CheckedDocument,
  CheckedFilter,
  CheckedFilterStatement,
  CheckedLogic,
  CheckedRuleStatement,
  LogicExpr,
  RulesDocument,
} from './ast.js';
import { RulesError, RulesErrorCode } from './errors.js';
import { ParseError, parseCondition, parseOperations, variablesOf } from './parse.js';
import { validateDocument } from './schema.js';
import { topicFilterProblem, topicNameProblem } from './topic.js';
import { isTemplateText, parseTextTemplate, parseValueTemplate, withoutMemory } from './template.js';
import { keyTemplateProblem } from './parse.js';

/** Every function call in an expression, in order of appearance. */
export function callsOf(e: Expr, out: Extract<Expr, { kind: 'call' }>[] = []): Extract<Expr, { kind: 'call' }>[] {
  switch (e.kind) {
    case 'call':
      out.push(e);
      if (e.fn === 'abs') callsOf(e.value, out);
      break;
    case 'neg':
    case 'not':
      callsOf(e.arg, out);
      break;
    case 'arith':
    case 'and':
    case 'or':
      callsOf(e.left, out);
      callsOf(e.right, out);
      break;
    case 'cmp':
      for (const a of e.args) callsOf(a, out);
      break;
    default:
      break;
  }
  return out;
}

function windowId(w: { type: 'time'; ms: number } | { type: 'count'; n: number }): string {
  return w.type === 'time' ? `t${w.ms}` : `n${w.n}`;
}

/** The memory cells a statement keeps, by descriptor, in first-use order (condition, then templates). */
export function cellsOf(exprs: Expr[]): MemoryCell[] {
  const cells = new Map<string, MemoryCell>();
  for (const e of exprs) {
    for (const c of callsOf(e)) {
      let cell: MemoryCell | undefined;
      if (c.fn === 'prev' || c.fn === 'changed' || c.fn === 'delta') cell = { kind: 'value', path: c.arg.path, id: `value:${JSON.stringify(c.arg.path)}` };
      else if (c.fn === 'deadband') cell = { kind: 'deadband', path: c.arg.path, id: `deadband:${JSON.stringify(c.arg.path)}` };
      else if (c.fn === 'avg' || c.fn === 'min' || c.fn === 'max' || c.fn === 'sum') cell = { kind: 'window', path: c.arg.path, window: c.window, id: `window:${JSON.stringify(c.arg.path)}:${windowId(c.window)}` };
      else if (c.fn === 'count') cell = { kind: 'window', path: null, window: c.window, id: `window:*:${windowId(c.window)}` };
      if (cell && !cells.has(cell.id)) cells.set(cell.id, cell);
    }
  }
  return [...cells.values()];
}

/** The cell index of a memory function call (cells as cellsOf gives them). */
export function cellIndex(cells: readonly MemoryCell[], c: Extract<Expr, { kind: 'call' }>): number {
  let id: string;
  if (c.fn === 'prev' || c.fn === 'changed' || c.fn === 'delta') id = `value:${JSON.stringify(c.arg.path)}`;
  else if (c.fn === 'deadband') id = `deadband:${JSON.stringify(c.arg.path)}`;
  else if (c.fn === 'avg' || c.fn === 'min' || c.fn === 'max' || c.fn === 'sum') id = `window:${JSON.stringify(c.arg.path)}:${windowId(c.window)}`;
  else if (c.fn === 'count') id = `window:*:${windowId(c.window)}`;
  else return -1;
  return cells.findIndex((x) => x.id === id);
}

/** Templates of a statement or logic entry; undefined when it has none (a fixed or empty new_payload, no set_state). */
function templatesOf(base: string, payload: PayloadTemplate | undefined, setState: SetState | undefined): Templates | undefined {
  const needed = setState !== undefined || (payload !== undefined && (typeof payload !== 'string' || isTemplateText(payload)));
  if (!needed) return undefined;
  const exprs: Expr[] = [];
  let tpl: Template | null = null;
  if (payload !== undefined && payload !== '') {
    tpl = typeof payload === 'string' ? parseTextTemplate(payload, `${base}/new_payload`, exprs) : parseValueTemplate(payload, `${base}/new_payload`, exprs);
  }
  const out: Templates = { exprs, payload: tpl, publish: payload !== undefined };
  if (setState) {
    const problem = keyTemplateProblem(setState.key);
    if (problem) throw new RulesError(RulesErrorCode.syntax, `${base}/set_state/key`, problem, 0);
    const value = typeof setState.value === 'string' ? parseTextTemplate(setState.value, `${base}/set_state/value`, exprs) : parseValueTemplate(setState.value, `${base}/set_state/value`, exprs);
    out.setState = { key: setState.key, value, ...(setState.px === undefined ? {} : { px: setState.px }) };
  }
  return out;
}

function parseAt<T>(path: string, text: string, parse: (t: string) => T): T {
  try {
    return parse(text);
  } catch (err) {
    if (err instanceof ParseError) throw new RulesError(RulesErrorCode.syntax, path, err.problem, err.position);
    throw err;
  }
}

function refsOf(e: LogicExpr, out: { id: number; pos: number }[] = []): { id: number; pos: number }[] {
  if (e.kind === 'ref') out.push({ id: e.id, pos: e.pos });
  else if (e.kind === 'not') refsOf(e.arg, out);
  else {
    refsOf(e.left, out);
    refsOf(e.right, out);
  }
  return out;
}

/** Parse a JSON body into a checked document. Throws RulesError. */
export function parseDocumentText(text: string): CheckedDocument {
  return checkDocument(parseJsonText(text));
}

/** How deep a rules document or test request may nest; a real one nests 6 levels or so. */
export const MAX_JSON_DEPTH = 64;

/**
 * JSON.parse, and a refusal of anything nested past MAX_JSON_DEPTH (naming the path where it
 * does): every later step walks the value recursively, and 100,000 levels would exhaust the
 * stack there. Throws RulesError (badJson).
 */
export function parseJsonText(text: string): unknown {
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch (err) {
    throw new RulesError(RulesErrorCode.badJson, '', `not JSON: ${(err as Error).message}`);
  }
  const stack: [unknown, string, number][] = [[input, '', 0]];
  while (stack.length > 0) {
    const [value, path, depth] = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    if (depth >= MAX_JSON_DEPTH) throw new RulesError(RulesErrorCode.badJson, path.split('/').slice(0, 8).join('/'), `nested more than ${MAX_JSON_DEPTH} levels deep`);
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value);
    for (const [k, v] of entries) stack.push([v, path ? `${path}/${k}` : k, depth + 1]);
  }
  return input;
}

/** Validate and check a parsed JSON value. Throws RulesError. */
export function checkDocument(input: unknown): CheckedDocument {
  const document: RulesDocument = validateDocument(input);
  const filters: CheckedFilter[] = [];
  const filterStatements: CheckedFilterStatement[] = [];
  const ruleStatements: CheckedRuleStatement[] = [];
  const logic: CheckedLogic[] = [];
  const variables = new Map<string, string[]>();
  const note = (paths: string[][]): void => {
    for (const p of paths) variables.set(JSON.stringify(p), p);
  };

  document.filters.forEach((f, fi) => {
    const base = `filters/${fi}`;
    const tp = topicFilterProblem(f.topic);
    if (tp) throw new RulesError(RulesErrorCode.topic, `${base}/topic`, tp);
    const suffix = f.subtopic.startsWith('/') ? f.subtopic.slice(1) : f.subtopic;
    const sp = topicNameProblem(suffix);
    if (sp) throw new RulesError(RulesErrorCode.topic, `${base}/subtopic`, sp);
    const checked: CheckedFilter = { index: fi, topic: f.topic, suffix, statements: [] };
    f.statements.forEach((s, si) => {
      const condition = parseAt(`${base}/statements/${si}/condition`, s.condition, parseCondition);
      note(variablesOf(condition));
      const templates = templatesOf(`${base}/statements/${si}`, s.new_payload, s.set_state);
      for (const e of templates?.exprs ?? []) note(variablesOf(e));
      const st: CheckedFilterStatement = {
        index: filterStatements.length,
        filter: fi,
        condition,
        source: s.condition,
        payload: templates || s.new_payload === '' || s.new_payload === undefined ? null : (s.new_payload as string),
        ...(templates ? { templates } : {}),
        cells: cellsOf([condition, ...(templates?.exprs ?? [])]),
      };
      filterStatements.push(st);
      checked.statements.push(st);
    });
    filters.push(checked);
  });

  const byId = new Map<number, CheckedRuleStatement>();
  document.rules.forEach((r, ri) => {
    r.statements.forEach((s, si) => {
      const path = `rules/${ri}/statements/${si}`;
      if (byId.has(s.id)) throw new RulesError(RulesErrorCode.statementId, `${path}/id`, `statement id ${s.id} is used twice`);
      const tp = topicFilterProblem(s.topic);
      if (tp) throw new RulesError(RulesErrorCode.topic, `${path}/topic`, tp);
      const condition = parseAt(`${path}/condition`, s.condition, parseCondition);
      note(variablesOf(condition));
      const st: CheckedRuleStatement = {
        index: ruleStatements.length,
        id: s.id,
        topic: s.topic,
        payloadType: s.payload_type,
        condition,
        source: s.condition,
        cells: cellsOf([condition]),
      };
      byId.set(s.id, st);
      ruleStatements.push(st);
    });
  });
  document.rules.forEach((r, ri) => {
    r.logic.forEach((l, li) => {
      const path = `rules/${ri}/logic/${li}`;
      const operations = parseAt(`${path}/operations`, l.operations, parseOperations);
      const refs = new Set<number>();
      for (const ref of refsOf(operations)) {
        const st = byId.get(ref.id);
        if (!st) throw new RulesError(RulesErrorCode.statementId, `${path}/operations`, `no statement has id ${ref.id}`, ref.pos);
        refs.add(st.index);
      }
      const tp = topicNameProblem(l.new_topic);
      if (tp) throw new RulesError(RulesErrorCode.topic, `${path}/new_topic`, tp);
      const templates = withoutMemory(() => templatesOf(path, l.new_payload, l.set_state));
      for (const e of templates?.exprs ?? []) note(variablesOf(e));
      logic.push({
        index: logic.length,
        rule: ri,
        operations,
        source: l.operations,
        topic: `!${l.new_topic}`,
        payload: templates || l.new_payload === '' || l.new_payload === undefined ? null : (l.new_payload as string),
        ...(templates ? { templates } : {}),
        refs: [...refs].sort((a, b) => a - b),
      });
    });
  });

  const sortedVars = [...variables.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((e) => e[1]);
  return { document, filters, filterStatements, ruleStatements, logic, variables: sortedVars };
}

/** Merge a PATCH into the active document: filters appended; a rule sharing a statement id replaces the old rule(s). */
export function patchDocument(active: RulesDocument, patch: RulesDocument): RulesDocument {
  const rules = active.rules.map((r) => ({ rule: r, ids: new Set(r.statements.map((s) => s.id)) }));
  const result: (typeof rules)[number]['rule'][] = rules.map((r) => r.rule);
  for (const incoming of patch.rules) {
    const ids = new Set(incoming.statements.map((s) => s.id));
    let placed = false;
    for (let i = 0; i < result.length; i++) {
      const old = result[i]!;
      if (old.statements.some((s) => ids.has(s.id))) {
        if (!placed) {
          result[i] = incoming;
          placed = true;
        } else {
          result.splice(i, 1);
          i--;
        }
      }
    }
    if (!placed) result.push(incoming);
  }
  return { filters: [...active.filters, ...patch.filters], rules: result };
}
