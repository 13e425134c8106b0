/**
 * A rules document acts for the user who uploaded it: with the ACL on, the topics its
 * filters and statements read must be readable by that user, and the topics it publishes
 * (filter outputs, rule `new_topic`s) writable. Checked at upload for every pattern (the
 * whole pattern must be within the user's grants: 403 naming the JSON path and topic), and
 * at run time for each concrete output topic (denied outputs are dropped and counted), so a
 * rule cannot republish what its author may read to where they could not publish.
 */
import { RulesError, RulesErrorCode } from './errors.js';

/** What the ACL allows one user, as the rules engine needs it. */
export interface AuthorAccess {
  /** May the user receive every topic matching `filter`? */
  canReadAll(filter: string): boolean;
  /** May the user publish to every topic matching `filter` (a concrete topic included)? */
  canWriteAll(filter: string): boolean;
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

/**
 * Throws a 403 RulesError for the first topic of `doc` (parsed JSON, possibly malformed:
 * the compiler reports shape errors) outside the author's ACL.
 */
export function checkAuthorAccess(doc: unknown, access: AuthorAccess, user: string): void {
  const deny = (path: string, topic: string, need: 'read' | 'write'): never => {
    throw new RulesError(RulesErrorCode.forbidden, path, `${user} may not ${need === 'read' ? 'read' : 'publish to'} "${topic}" (ACL)`);
  };
  if (typeof doc !== 'object' || doc === null) return;
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
