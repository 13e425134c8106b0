/**
 * POST /test (specs/fr-script-state.md, "Trying a document without activating it"): what a
 * document would publish and write for a list of messages, starting from empty memory, with
 * the timestamps of the request. It runs the reference interpreter (src/rules/reference.ts),
 * which the WebAssembly engine is held to output for output by the differential tests, so
 * nothing is compiled and nothing of the live broker is touched: not its routing, not its
 * memory, not the state store (state() reads the live store unless the request gives
 * `state`; set_state writes go to this run's own copy, which later messages of the run read).
 */
import type { CheckedDocument } from './ast.js';
import { checkDocument, parseDocumentText, parseJsonText } from './check.js';
import { RulesError, RulesErrorCode } from './errors.js';
import { ReferenceEngine, type MemoryLimits } from './reference.js';
import { topicNameProblem } from './topic.js';

export interface DryRunMessage {
  topic: string;
  /** A string, or a JSON value sent as its JSON text. */
  payload: unknown;
  /** Milliseconds (for time windows); absent: the previous message's (0 for the first). */
  t?: number;
}

export type DryRunOutput =
  | { after: number; topic: string; payload: string }
  | { after: number; set_state: { key: string; value: string; px?: number } };

/** Most messages one request may carry. */
export const MAX_TEST_MESSAGES = 100_000;

function bad(path: string, problem: string): RulesError {
  return new RulesError(RulesErrorCode.schema, path, problem);
}

/**
 * Runs a /test request body. `active` is the active document's text (used when the request has
 * no `document`); `liveState` reads the live state store (used when it has no `state`).
 */
export function dryRun(body: string, active: string, liveState: (key: string) => Buffer | undefined, limits?: MemoryLimits): { outputs: DryRunOutput[] } {
  const input = parseJsonText(body);
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw bad('', 'a test is a JSON object: {"document": {...}, "messages": [...], "state": {...}}');
  const req = input as Record<string, unknown>;
  for (const k of Object.keys(req)) if (k !== 'document' && k !== 'messages' && k !== 'state') throw bad(k, `unknown key "${k}"`);
  let doc: CheckedDocument;
  if (req['document'] === undefined) doc = parseDocumentText(active);
  else {
    try {
      doc = checkDocument(req['document']);
    } catch (err) {
      // the same errors as an upload, with the path inside "document"
      if (err instanceof RulesError) throw new RulesError(err.code, err.path === '' ? 'document' : `document/${err.path}`, err.problem, err.position);
      throw err;
    }
  }
  const messages = req['messages'];
  if (!Array.isArray(messages)) throw bad('messages', messages === undefined ? 'missing' : 'must be array');
  if (messages.length > MAX_TEST_MESSAGES) throw bad('messages', `at most ${MAX_TEST_MESSAGES} messages`);
  let overlay: Map<string, Buffer>;
  let fallback: (key: string) => Buffer | undefined;
  const state = req['state'];
  if (state === undefined) {
    overlay = new Map();
    fallback = liveState;
  } else {
    if (state === null || typeof state !== 'object' || Array.isArray(state)) throw bad('state', 'must be object (key: value)');
    overlay = new Map(Object.entries(state as Record<string, unknown>).map(([k, v]) => [k, Buffer.from(typeof v === 'string' ? v : JSON.stringify(v), 'utf8')]));
    fallback = () => undefined;
  }
  const engine = new ReferenceEngine(doc, { ...(limits ? { limits } : {}), state: (key) => (overlay.has(key) ? overlay.get(key) : fallback(key)) });
  const outputs: DryRunOutput[] = [];
  let t = 0;
  messages.forEach((m: unknown, i) => {
    const path = `messages/${i}`;
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw bad(path, 'a message is {"topic": "...", "payload": "...", "t": 1000}');
    const msg = m as Record<string, unknown>;
    for (const k of Object.keys(msg)) if (k !== 'topic' && k !== 'payload' && k !== 't') throw bad(`${path}/${k}`, `unknown key "${k}"`);
    const topic = msg['topic'];
    if (typeof topic !== 'string' || topic === '') throw bad(`${path}/topic`, topic === undefined ? 'missing' : 'must be a non-empty string');
    const problem = topicNameProblem(topic);
    if (problem) throw new RulesError(RulesErrorCode.topic, `${path}/topic`, problem);
    if (msg['t'] !== undefined) {
      if (typeof msg['t'] !== 'number' || !Number.isFinite(msg['t'])) throw bad(`${path}/t`, 'must be number (milliseconds)');
      t = msg['t'];
    }
    const p = msg['payload'];
    const payload = Buffer.from(p === undefined ? '' : typeof p === 'string' ? p : JSON.stringify(p), 'utf8');
    for (const o of engine.process(topic, payload, t)) {
      if (o.state) {
        overlay.set(o.state.key, o.payload);
        outputs.push({ after: i, set_state: { key: o.state.key, value: o.payload.toString('utf8'), ...(o.state.px === undefined ? {} : { px: o.state.px }) } });
      } else outputs.push({ after: i, topic: o.topic, payload: o.payload.toString('utf8') });
    }
  });
  return { outputs };
}
