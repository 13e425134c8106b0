/**
 * A rules document acts for the user who uploaded it: with the ACL on, the topics its
 * filters and statements read must be readable by that user, and the topics it publishes
 * (filter outputs, rule `new_topic`s) writable. Checked at upload for every pattern (the
 * whole pattern must be within the user's grants: 403 naming the JSON path and topic), and
 * at run time for each concrete output topic (denied outputs are dropped and counted), so a
 * rule cannot republish what its author may read to where they could not publish.
 *
 * `set_state` keys are checked the same way against the state store's per-key authorization
 * (docs/state-store.md#authorization) when that is on: at upload, a key that is concrete
 * once the filter's literal topic levels are put in for its placeholders must be writable,
 * and a key with wildcard parts (`{2}` under `+`, `{topic}` under `#`) must have at least one
 * writable key; at run time each concrete key is checked (denied writes are dropped and
 * counted). Globs cannot always tell whether every key of a template is granted, so the
 * upload refuses what can never be written and the run time refuses the rest.
 *
 * `state('key')` reads (in conditions and payload templates) are checked the same way for
 * read access, so a document cannot republish a key its author may not read: at upload
 * against the key or its glob, at run time per concrete key (a denied read is an absent
 * key, unknown to the condition, and counted).
 */
import type { Expr } from './ast.js';
import { callsOf } from './check.js';
import { RulesError, RulesErrorCode } from './errors.js';
import { parseCondition } from './parse.js';
import { parseTextTemplate, parseValueTemplate } from './template.js';

/** What the ACL allows one user, as the rules engine needs it. */
export interface AuthorAccess {
  /** May the user receive every topic matching `filter`? */
  canReadAll(filter: string): boolean;
  /** May the user publish to every topic matching `filter` (a concrete topic included)? */
  canWriteAll(filter: string): boolean;
}

/** What the state store's per-key authorization allows one user, as the rules engine needs it. */
export interface AuthorKeyAccess {
  /** May the user write this key? */
  canWriteKey(key: string): boolean;
  /** May the user write at least one key matching this glob (`*`, `?`, `[...]`)? */
  canWriteSomeKey(glob: string): boolean;
  /** May the user read this key? */
  canReadKey(key: string): boolean;
  /** May the user read at least one key matching this glob? */
  canReadSomeKey(glob: string): boolean;
}

/** Who uploaded a document; `user` undefined for a trusted address or the rules file (not checked). */
export interface RulesAuthor {
  user: string | undefined;
  via: string;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** The output topic of a filter: the incoming topic, "/", then the subtopic (see docs/rules.md). */
function filterOutput(topic: string, subtopic: string): string {
  return `${topic}/${subtopic.replace(/^\/+/, '')}`;
}

const escapeGlob = (s: string): string => s.replace(/[*?[\]]/g, '[$&]');

/**
 * The keys a `set_state` key template can name for messages on topics matching `filter`:
 * `{ key }` when it is one concrete key, `{ glob }` (wildcards where a placeholder takes a
 * `+` or `#` level) otherwise, undefined when a placeholder is past the end of every topic
 * (the key is never written).
 */
export function stateKeyPattern(template: string, filter: string): { key: string } | { glob: string } | undefined {
  const levels = filter.split('/');
  const hashAt = levels.indexOf('#');
  let key = '';
  let glob = '';
  let wild = false;
  let last = 0;
  let missing = false;
  const literal = (text: string): void => {
    key += text;
    glob += escapeGlob(text);
  };
  for (const m of template.matchAll(/\{([1-9][0-9]*|topic)\}/g)) {
    literal(template.slice(last, m.index));
    last = m.index + m[0].length;
    const p = m[1]!;
    if (p === 'topic') {
      if (!/[+#]/.test(filter)) literal(filter);
      else {
        wild = true;
        // `a/#` also matches `a`: the levels before it, then anything
        const fixed = hashAt >= 0 ? levels.slice(0, hashAt).join('/') : filter;
        glob += fixed.split('/').map((l) => (l === '+' ? '*' : escapeGlob(l))).join('/') + (hashAt >= 0 ? '*' : '');
      }
      continue;
    }
    const n = Number(p) - 1;
    if (hashAt >= 0 && n >= hashAt) {
      wild = true;
      glob += '*';
    } else if (n >= levels.length) missing = true;
    else if (levels[n] === '+') {
      wild = true;
      glob += '*';
    } else literal(levels[n]!);
  }
  if (missing) return undefined;
  literal(template.slice(last));
  return wild ? { glob } : { key };
}

/**
 * Throws a 403 RulesError for the first topic of `doc` (parsed JSON, possibly malformed:
 * the compiler reports shape errors) outside the author's ACL.
 */
export function checkAuthorAccess(doc: unknown, access: AuthorAccess | undefined, user: string, keys?: AuthorKeyAccess): void {
  if (typeof doc !== 'object' || doc === null) return;
  if (access) checkTopics(doc, access, user);
  if (keys) checkStateKeys(doc, keys, user);
}

function checkTopics(doc: object, access: AuthorAccess, user: string): void {
  const deny = (path: string, topic: string, need: 'read' | 'write'): never => {
    throw new RulesError(RulesErrorCode.forbidden, path, `${user} may not ${need === 'read' ? 'read' : 'publish to'} "${topic}" (ACL)`);
  };
  const { filters, rules } = doc as { filters?: unknown; rules?: unknown };
  if (Array.isArray(filters)) {
    filters.forEach((f: { topic?: unknown; subtopic?: unknown }, i) => {
      const topic = str(f?.topic);
      if (topic === undefined) return;
      if (!access.canReadAll(topic)) deny(`filters/${i}/topic`, topic, 'read');
      const sub = str(f.subtopic);
      if (sub !== undefined) {
        const out = filterOutput(topic, sub);
        if (!access.canWriteAll(out)) deny(`filters/${i}/subtopic`, out, 'write');
      }
    });
  }
  if (Array.isArray(rules)) {
    rules.forEach((r: { statements?: unknown; logic?: unknown }, i) => {
      if (Array.isArray(r?.statements)) {
        r.statements.forEach((s: { topic?: unknown }, j) => {
          const topic = str(s?.topic);
          if (topic !== undefined && !access.canReadAll(topic)) deny(`rules/${i}/statements/${j}/topic`, topic, 'read');
        });
      }
      if (Array.isArray(r?.logic)) {
        r.logic.forEach((l: { new_topic?: unknown }, k) => {
          const t = str(l?.new_topic);
          // rule outputs are published with a "!" prefix (docs/rules.md)
          if (t !== undefined && !access.canWriteAll(`!${t}`)) deny(`rules/${i}/logic/${k}/new_topic`, `!${t}`, 'write');
        });
      }
    });
  }
}

/** The keys of the `state('key')` calls in a condition or template (none when it does not parse: the compiler reports that). */
function stateReadsIn(parse: (exprs: Expr[]) => void): string[] {
  const exprs: Expr[] = [];
  try {
    parse(exprs);
  } catch {
    return [];
  }
  const keys: string[] = [];
  for (const e of exprs) for (const c of callsOf(e)) if (c.fn === 'state') keys.push(c.key);
  return keys;
}

function conditionReads(text: unknown): string[] {
  return typeof text === 'string' ? stateReadsIn((exprs) => exprs.push(parseCondition(text))) : [];
}

function templateReads(v: unknown, path: string): string[] {
  if (v === undefined) return [];
  return stateReadsIn((exprs) => (typeof v === 'string' ? parseTextTemplate(v, path, exprs) : parseValueTemplate(v, path, exprs)));
}

type StatementLike = { condition?: unknown; new_payload?: unknown; set_state?: { key?: unknown; value?: unknown } };

/**
 * set_state keys (write) and state() keys (read) of filter statements (placeholders from the
 * filter's topic), rule statements (from the statement's topic) and rule logic entries (any topic).
 */
function checkStateKeys(doc: object, keys: AuthorKeyAccess, user: string): void {
  const check = (path: string, template: unknown, filter: string, need: 'read' | 'write'): void => {
    if (typeof template !== 'string') return;
    const pattern = stateKeyPattern(template, filter);
    if (pattern === undefined) return;
    const verb = need === 'read' ? 'read' : 'write';
    if ('key' in pattern) {
      if (!(need === 'read' ? keys.canReadKey(pattern.key) : keys.canWriteKey(pattern.key))) {
        throw new RulesError(RulesErrorCode.forbidden, path, `${user} may not ${verb} the state key "${pattern.key}" (state store authorization)`);
      }
    } else if (!(need === 'read' ? keys.canReadSomeKey(pattern.glob) : keys.canWriteSomeKey(pattern.glob))) {
      throw new RulesError(RulesErrorCode.forbidden, path, `${user} may ${verb} no state key "${template}" can name (${pattern.glob}; state store authorization)`);
    }
  };
  /** A statement or logic entry: its reads (condition, payload, set_state value), then its set_state key. */
  const checkEntry = (base: string, s: StatementLike | undefined, filter: string): void => {
    if (typeof s !== 'object' || s === null) return;
    for (const key of conditionReads(s.condition)) check(`${base}/condition`, key, filter, 'read');
    for (const key of templateReads(s.new_payload, `${base}/new_payload`)) check(`${base}/new_payload`, key, filter, 'read');
    const set = s.set_state;
    if (typeof set === 'object' && set !== null) {
      for (const key of templateReads(set.value, `${base}/set_state/value`)) check(`${base}/set_state/value`, key, filter, 'read');
      check(`${base}/set_state/key`, set.key, filter, 'write');
    }
  };
  const { filters, rules } = doc as { filters?: unknown; rules?: unknown };
  if (Array.isArray(filters)) {
    filters.forEach((f: { topic?: unknown; statements?: unknown }, i) => {
      const topic = str(f?.topic);
      if (topic === undefined || !Array.isArray(f.statements)) return;
      f.statements.forEach((s: StatementLike, j) => checkEntry(`filters/${i}/statements/${j}`, s, topic));
    });
  }
  if (Array.isArray(rules)) {
    rules.forEach((r: { statements?: unknown; logic?: unknown }, i) => {
      if (Array.isArray(r?.statements)) {
        r.statements.forEach((s: StatementLike & { topic?: unknown }, j) => {
          const topic = str(s?.topic);
          if (topic !== undefined) checkEntry(`rules/${i}/statements/${j}`, s, topic);
        });
      }
      // a logic entry's placeholders take the topic of whichever message triggered it
      if (Array.isArray(r?.logic)) r.logic.forEach((l: StatementLike, k) => checkEntry(`rules/${i}/logic/${k}`, l, '#'));
    });
  }
}
