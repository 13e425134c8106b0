/**
 * From a schema-valid document to a CheckedDocument: every condition and operation parsed,
 * statement ids unique and resolved, topic filters and output topics valid.
 */
import type {
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
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch (err) {
    throw new RulesError(RulesErrorCode.badJson, '', `not JSON: ${(err as Error).message}`);
  }
  return checkDocument(input);
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
      const st: CheckedFilterStatement = {
        index: filterStatements.length,
        filter: fi,
        condition,
        source: s.condition,
        payload: s.new_payload === '' ? null : s.new_payload,
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
      logic.push({
        index: logic.length,
        rule: ri,
        operations,
        source: l.operations,
        topic: `!${l.new_topic}`,
        payload: l.new_payload === '' ? null : l.new_payload,
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
