/**
 * The rules service: the active fr_script document, compiled to WebAssembly, run on every
 * PUBLISH through the broker's onPublish hook; outputs are published back with origin
 * "rules" and never fed into the engine again. Writes are serialised, validated and compiled
 * completely before they replace the active program (between two messages), persisted
 * atomically under dataDir and reloaded at start.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { BrokerApi } from '../broker/api.js';
import type { Message } from '../broker/message.js';
import type { Config } from '../config/schema.js';
import type { CheckedDocument, RulesDocument } from './ast.js';
import { checkDocument, parseDocumentText, patchDocument } from './check.js';
import { RulesCompiler } from './compiler.js';
import { RulesError, RulesErrorCode } from './errors.js';
import type { EngineCounters, RulesProgram } from './runtime.js';
import { DocumentStore } from './store.js';

export const RULES_ORIGIN = 'rules';

export interface RulesMetrics extends EngineCounters {
  /** Engine traps (a bug); the message is routed normally. */
  engineErrors: number;
  compiles: number;
  compileErrors: number;
  /** Writes refused with a 4xx (bad document, stale If-Match). */
  rejectedWrites: number;
  lastCompileMillis: number;
  lastAscMillis: number;
  wasmBytes: number;
  sourceBytes: number;
  filters: number;
  filterStatements: number;
  ruleStatements: number;
  logicEntries: number;
}

export interface WriteResult {
  etag: string;
  filters: number;
  rules: number;
  statements: number;
  compileMillis: number;
}

export interface RulesService {
  /** Settles when the document from EDB_RULES_FILE or the data folder is active; rejects when EDB_RULES_FILE is invalid. */
  readonly ready: Promise<void>;
  current(): { document: RulesDocument; etag: string };
  /** POST: replace the whole document. */
  replace(body: string, ifMatch?: string): Promise<WriteResult>;
  /** PATCH: add filters and rules (a rule sharing a statement id replaces the old one). */
  patch(body: string, ifMatch?: string): Promise<WriteResult>;
  /** DELETE: the empty document. */
  clear(ifMatch?: string): Promise<WriteResult>;
  metrics(): RulesMetrics;
  /** Generated AssemblyScript of the active document (for review and the status page). */
  source(): string;
  close(): Promise<void>;
}

const EMPTY: RulesDocument = { filters: [], rules: [] };

export function etagOf(document: RulesDocument): string {
  return `"${createHash('sha256').update(JSON.stringify(document)).digest('base64url').slice(0, 27)}"`;
}

/** `If-Match` semantics (RFC 9110 13.1.1): `*` or a list of entity tags, one of which is current. */
export function ifMatchHolds(header: string | undefined, etag: string): boolean {
  if (header === undefined) return true;
  const h = header.trim();
  if (h === '*') return true;
  return h.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

interface Options {
  compiler?: RulesCompiler;
}

export function createRulesService(broker: BrokerApi, config: Config, log: Logger, options: Options = {}): RulesService {
  const rlog = log.child({ part: 'rules' });
  const compiler = options.compiler ?? new RulesCompiler();
  const ownCompiler = options.compiler === undefined;
  const store = new DocumentStore(config.dataDir);

  let program: RulesProgram | undefined;
  let active: CheckedDocument = checkDocument(EMPTY);
  let etag = etagOf(active.document);
  let source = '';
  let closed = false;
  const retired: EngineCounters = { messages: 0, topicMatches: 0, evaluations: 0, fires: 0, missingVariable: 0, kindMismatch: 0, notJson: 0, bufferFull: 0 };
  const stats = { engineErrors: 0, compiles: 0, compileErrors: 0, rejectedWrites: 0, lastCompileMillis: 0, lastAscMillis: 0, wasmBytes: 0, sourceBytes: 0 };
  let lastEngineErrorLog = 0;

  // The hot path: synchronous, one Wasm call per message, outputs published with origin "rules".
  broker.addHooks({
    onPublish(message: Message): void {
      if (message.origin === RULES_ORIGIN) return; // no loops: never feed our own output back
      const p = program;
      if (p === undefined) return;
      let outputs;
      try {
        outputs = p.process(message.topic, message.payload);
      } catch (err) {
        stats.engineErrors++;
        const now = Date.now();
        if (now - lastEngineErrorLog > 10_000) {
          lastEngineErrorLog = now;
          rlog.error({ err, topic: message.topic }, 'rules engine failed on a message; the message is routed normally');
        }
        return;
      }
      for (let i = 0; i < outputs.length; i++) {
        const o = outputs[i]!;
        broker.publish({ topic: o.topic, payload: o.payload, qos: message.qos, retain: message.retain, origin: RULES_ORIGIN });
      }
    },
  });

  const retire = (old: RulesProgram | undefined): void => {
    if (!old) return;
    const c = old.counters();
    for (const k of Object.keys(retired) as (keyof EngineCounters)[]) retired[k] += c[k];
  };

  /** Compiles and activates; `keepBufferOf` carries buffered messages of statements kept by a PATCH. */
  async function activate(doc: CheckedDocument, persist: boolean, keepIds?: ReadonlySet<number>): Promise<WriteResult> {
    let compiled;
    try {
      compiled = await compiler.compileDocument(doc);
    } catch (err) {
      stats.compileErrors++;
      rlog.error({ err }, 'rules compiler failed on a valid document');
      throw new RulesError(RulesErrorCode.compile, '', `the compiler failed: ${(err as Error).message.split('\n')[0]}`);
    }
    stats.compiles++;
    const text = JSON.stringify(doc.document, null, 2) + '\n';
    if (persist) await store.write(text);
    if (closed) throw new RulesError(RulesErrorCode.compile, '', 'the rules service is closed');
    // swap between two messages: nothing below awaits
    const old = program;
    if (old && keepIds && keepIds.size > 0) compiled.program.restoreBuffer(old.bufferSnapshot(), keepIds);
    program = compiled.program;
    retire(old);
    active = doc;
    etag = etagOf(doc.document);
    source = compiled.source;
    stats.lastCompileMillis = compiled.millis;
    stats.lastAscMillis = compiled.ascMillis;
    stats.wasmBytes = compiled.wasmBytes;
    stats.sourceBytes = Buffer.byteLength(compiled.source);
    rlog.info(
      { etag, filters: doc.filters.length, statements: doc.filterStatements.length + doc.ruleStatements.length, compileMs: Math.round(compiled.millis), wasmBytes: compiled.wasmBytes },
      'rules document active',
    );
    return {
      etag,
      filters: doc.filters.length,
      rules: doc.document.rules.length,
      statements: doc.filterStatements.length + doc.ruleStatements.length,
      compileMillis: Math.round(compiled.millis),
    };
  }

  // One write at a time, in arrival order.
  let queue: Promise<unknown> = Promise.resolve();
  function serial<T>(op: () => Promise<T>): Promise<T> {
    const run = queue.then(op, op);
    queue = run.catch(() => undefined);
    return run;
  }
  const guarded = <T>(ifMatch: string | undefined, op: () => Promise<T>): Promise<T> =>
    serial(async () => {
      try {
        if (!ifMatchHolds(ifMatch, etag)) throw new RulesError(RulesErrorCode.stale, '', `If-Match ${ifMatch} does not name the active document (${etag})`);
        return await op();
      } catch (err) {
        if (err instanceof RulesError && err.status < 500) stats.rejectedWrites++;
        throw err;
      }
    });

  async function load(): Promise<void> {
    if (config.rulesFile) {
      let text: string;
      try {
        text = await readFile(config.rulesFile, 'utf8');
      } catch (err) {
        throw new Error(`EDB_RULES_FILE=${config.rulesFile}: cannot read it: ${(err as Error).message}`);
      }
      let doc: CheckedDocument;
      try {
        doc = parseDocumentText(text);
      } catch (err) {
        throw new Error(`EDB_RULES_FILE=${config.rulesFile}: ${(err as Error).message}`);
      }
      await activate(doc, true);
      return;
    }
    const text = await store.read();
    if (text === undefined) {
      await activate(active, false);
      return;
    }
    try {
      await activate(parseDocumentText(text), false);
    } catch (err) {
      rlog.error({ err, file: store.path }, 'the stored rules document is invalid; starting with an empty document');
      await activate(checkDocument(EMPTY), false);
    }
  }
  const ready = serial(load);
  ready.catch(() => undefined);

  return {
    ready,
    current: () => ({ document: active.document, etag }),
    replace: (body, ifMatch) => guarded(ifMatch, () => activate(parseDocumentText(body), true)),
    patch: (body, ifMatch) =>
      guarded(ifMatch, async () => {
        const incoming = parseDocumentText(body); // the patch must be valid on its own (e.g. no duplicate ids)
        const merged = checkDocument(patchDocument(active.document, incoming.document));
        const replaced = new Set(incoming.ruleStatements.map((s) => s.id));
        const keep = new Set(active.ruleStatements.map((s) => s.id).filter((id) => !replaced.has(id) && merged.ruleStatements.some((m) => m.id === id)));
        return activate(merged, true, keep);
      }),
    clear: (ifMatch) => guarded(ifMatch, () => activate(checkDocument(EMPTY), true)),
    metrics(): RulesMetrics {
      const c = program?.counters();
      const sum = { ...retired };
      if (c) for (const k of Object.keys(sum) as (keyof EngineCounters)[]) sum[k] += c[k];
      return {
        ...sum,
        ...stats,
        filters: active.filters.length,
        filterStatements: active.filterStatements.length,
        ruleStatements: active.ruleStatements.length,
        logicEntries: active.logic.length,
      };
    },
    source: () => source,
    async close(): Promise<void> {
      closed = true;
      await queue.catch(() => undefined);
      program = undefined;
      if (ownCompiler) await compiler.close();
    },
  };
}
