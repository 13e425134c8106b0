/**
 * The one place that defines the rules engine's error codes. Every upload error names the
 * JSON path of the offending field, the problem, and for conditions the character position:
 * "rules/0/statements/1/condition: unexpected ')' at 14".
 */

export const RulesErrorCode = {
  /** The body is not JSON. */
  badJson: 'EDB_RULES_BAD_JSON',
  /** Valid JSON, but not an fr_script document (unknown key, wrong type, missing field). */
  schema: 'EDB_RULES_SCHEMA',
  /** A condition or operation that does not parse. */
  syntax: 'EDB_RULES_SYNTAX',
  /** Statement ids: unknown in operations, or used twice. */
  statementId: 'EDB_RULES_STATEMENT_ID',
  /** An invalid topic filter or output topic. */
  topic: 'EDB_RULES_TOPIC',
  /** `If-Match` does not name the active document. */
  stale: 'EDB_RULES_STALE',
  /** The compiler failed on a valid document (a bug: please report). */
  compile: 'EDB_RULES_COMPILE',
  /** The document reads or publishes outside its author's ACL. */
  forbidden: 'EDB_RULES_FORBIDDEN',
  /** The body is larger than the API accepts. */
  tooLarge: 'EDB_RULES_TOO_LARGE',
} as const;

export type RulesErrorCodeValue = (typeof RulesErrorCode)[keyof typeof RulesErrorCode];

export class RulesError extends Error {
  constructor(
    readonly code: RulesErrorCodeValue,
    /** JSON path of the field, e.g. "rules/0/statements/1/condition" ("" for the whole document). */
    readonly path: string,
    readonly problem: string,
    /** Character offset in the condition or operation, when the problem is there. */
    readonly position?: number,
  ) {
    super(`${path || '(document)'}: ${problem}${position === undefined ? '' : ` at ${position}`}`);
  }

  /** HTTP status of the error. */
  get status(): number {
    switch (this.code) {
      case RulesErrorCode.badJson:
        return 400;
      case RulesErrorCode.stale:
        return 412;
      case RulesErrorCode.forbidden:
        return 403;
      case RulesErrorCode.tooLarge:
        return 413;
      case RulesErrorCode.compile:
        return 500;
      default:
        return 422;
    }
  }

  toJSON(): { error: { code: string; path: string; problem: string; position?: number; message: string } } {
    return {
      error: {
        code: this.code,
        path: this.path,
        problem: this.problem,
        ...(this.position === undefined ? {} : { position: this.position }),
        message: this.message,
      },
    };
  }
}
