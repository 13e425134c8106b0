/** The state store's monotonic counts (metrics and status page) and the error answers they count. */
import type { Hlc } from './hlc.js';
import { encodeError } from './resp.js';

/** The answer to one request. */
export interface Answer {
  payload: Buffer;
  version?: Hlc;
  /** The request changed the table and the change was handed to durable storage. */
  stored?: boolean;
}

export class StateCounters {
  /** Requests by command ("GET", ..., "invalid" for requests that name none). */
  readonly ops: Record<string, number> = {};
  /** `-ERR` answers by message, and requests dropped unanswered by why. */
  readonly errors: Record<string, number> = {};
  notifications = 0;
  expired = 0;

  op(name: string): void {
    this.ops[name] = (this.ops[name] ?? 0) + 1;
  }

  /** A request dropped or refused for `why`. */
  count(why: string): void {
    this.errors[why] = (this.errors[why] ?? 0) + 1;
  }

  /** An `-ERR message` answer, counted. */
  error(message: string): Answer {
    this.count(message);
    return { payload: encodeError(message) };
  }
}
