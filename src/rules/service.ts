/**
 * The rules service: the active fr_script document, compiled to WebAssembly, run on every
 * PUBLISH through the broker's onPublish hook; outputs are published back with origin
 * "rules" and never fed into the engine again. Writes are serialised, validated and compiled
 * completely before they replace the active program (between two messages), persisted
 * atomically under dataDir and reloaded at start.
 *
 * The parts, each in its file: the active document and its program (below, ActiveDocument),
 * what fired on its way out (outputs.ts), the document's author and their rights
 * (author.ts), the backup section (backup-section.ts), metrics per part (part-metrics.ts).
 * createRulesService wires them: the hook, the serialised writes, start-up.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RulesAuthor } from './author-check.js';
import type { Logger } from 'pino';
import type { BrokerApi } from '../broker/api.js';
import type { Message } from '../mqtt/message.js';
import type { Config } from '../config/schema.js';
import type { RulesDocument } from './ast.js';
import { RulesCompiler, type CompiledDocument } from './compiler.js';
import { documentText, etagOf, type CompileRequest, type DocumentStats } from './pipeline.js';
import { RulesError, RulesErrorCode } from './errors.js';
import { TIME_BUCKETS, type EngineCounters, type RulesProgram } from './runtime.js';
import { dryRun, type DryRunOutput } from './dry-run.js';
import type { SnapshotSection } from '../persistence/snapshot.js';
import { DocumentStore } from './store.js';
import { RULES_ORIGIN, RuleOutputs, type RulesStateAccess } from './outputs.js';
import { DocumentAuthor, type AuthorKeyRights, type AuthorTopicRights } from './author.js';
import { RulesBackup } from './backup-section.js';
import { enablePartTiming, messageSeconds, partMetrics, TIMING_EVERY, type PartMetrics } from './part-metrics.js';
import { RUN_ALL, RUN_FILTERS, RUN_RULES } from '../../assembly/rules/layout.js';

export { etagOf, RULES_ORIGIN, TIMING_EVERY, TIME_BUCKETS };
export type { PartMetrics, RulesStateAccess };

export interface RulesMetrics extends EngineCounters {
  /** Engine traps (a bug); the message is routed normally. */
  engineErrors: number;
  compiles: number;
  compileErrors: number;
  /** Writes refused with a 4xx (bad document, stale If-Match, outside the author's ACL). */
  rejectedWrites: number;
  /** Outputs dropped because the document's author may not publish to their topic (ACL). */
  deniedOutputs: number;
  /** set_state writes dropped because the author may not write their key (state store authorization). */
  deniedStateWrites: number;
  /** state() reads answered "absent" because the author may not read their key (state store authorization). */
  deniedStateReads: number;
  /** set_state writes done, and refused by the state store (quota, fencing). */
  stateWrites: number;
  stateWriteErrors: number;
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

/**
 * Cluster mode: where the one rule buffer of the cluster is (src/cluster/rule-buffer.ts). On
 * the node that holds it every message runs filters and rules; on the others only filters,
 * and a message that rule statements match goes to the holder.
 */
export interface RuleBufferPlacement {
  /** Whether this node holds the cluster's rule buffer now. */
  holds(): boolean;
  /** A message that arrived here and that rule statements match, for the holder (called on the other nodes). */
  toHolder(message: Message): void;
}

export interface RulesService {
  /** Settles when the document from EDB_RULES_FILE or the data folder is active; rejects when EDB_RULES_FILE is invalid. */
  readonly ready: Promise<void>;
  current(): { document: RulesDocument; etag: string };
  /** The active document as stored (indented JSON), without parsing it. */
  currentText(): { text: string; etag: string };
  /** POST: replace the whole document. `author`: who uploads it (checked against the ACL). */
  replace(body: string, ifMatch?: string, author?: RulesAuthor): Promise<WriteResult>;
  /** PATCH: add filters and rules (a rule sharing a statement id replaces the old one). */
  patch(body: string, ifMatch?: string, author?: RulesAuthor): Promise<WriteResult>;
  /** DELETE: the empty document. */
  clear(ifMatch?: string, author?: RulesAuthor): Promise<WriteResult>;
  /** Who uploaded the active document, when known. */
  author(): (RulesAuthor & { at: string }) | undefined;
  metrics(): RulesMetrics;
  /** POST /test: what a document (default: the active one) would do with the messages; touches nothing live. */
  /** POST /test; `author`: the caller, whose state-key read rights apply to the live store's values. */
  test(body: string, author?: RulesAuthor): { outputs: DryRunOutput[] };
  /** Evaluations, fires and condition errors per filter and per rule of the active document. */
  partMetrics(): PartMetrics[];
  /** Time the engine spends per message (all of it: matching, payload scan, every part), like PartMetrics.seconds. */
  messageSeconds(): { counts: number[]; sum: number };
  /** Generated AssemblyScript of the active document (for review and the status page). */
  source(): string;
  /**
   * The rule buffer as a backup section: saved with the document's ETag, and put back once
   * the same document is active again (a different document starts with an empty buffer).
   */
  /** The rules' backup section; a restored buffer waits (pending) until a program is active, applyBuffer() then. */
  snapshotSection(): SnapshotSection & { applyBuffer(): void; applyMemory(): void; readonly pending: boolean };
  /** Cluster mode: where the rule buffer is; undefined (a single node): here. */
  placeRuleBuffer(placement: RuleBufferPlacement | undefined): void;
  /** On the holder: a message that arrived on another node, through the rule statements only. */
  runRules(message: Message): void;
  /** Empty the rule buffer (a node that takes the cluster's buffer over starts from an empty one). */
  clearRuleBuffer(): void;
  close(): Promise<void>;
}

const EMPTY: RulesDocument = { filters: [], rules: [] };
const EMPTY_TEXT = documentText(EMPTY);
const EMPTY_STATS: DocumentStats = { filters: 0, filterStatements: 0, ruleStatements: 0, logicEntries: 0 };
const AUTHOR_FILE = 'rules-author.json';

/** `If-Match` semantics (RFC 9110 13.1.1): `*` or a list of entity tags, one of which is current. */
export function ifMatchHolds(header: string | undefined, etag: string): boolean {
  if (header === undefined) return true;
  const h = header.trim();
  if (h === '*') return true;
  return h.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

interface Options {
  compiler?: RulesCompiler;
  /** state() reads and set_state writes; without it every key is absent and writes are dropped. */
  stateStore?: RulesStateAccess;
  /**
   * The ACL as it applies to a document's author (see author-check.ts); `enabled` false
   * when no ACL is configured. Without it, documents are not checked.
   */
  authorAccess?: AuthorTopicRights;
  /**
   * The state store's per-key authorization as it applies to a document's author; `enabled`
   * false when the state store has none. Without it, set_state keys are not checked.
   */
  stateAccess?: AuthorKeyRights;
}

function zeroCounters(): EngineCounters {
  return { messages: 0, topicMatches: 0, evaluations: 0, fires: 0, missingVariable: 0, kindMismatch: 0, notJson: 0, bufferFull: 0, memoryTopics: 0, memoryEvicted: 0, samplesMerged: 0 };
}

/**
 * The active document: its text (as stored and served), its program (none for the empty
 * document), and the counters of the programs it replaced (metrics are cumulative).
 */
class ActiveDocument {
  program: RulesProgram | undefined;
  text = EMPTY_TEXT;
  /** Parsed on demand (GET answers with the text). */
  private parsed: RulesDocument | undefined = EMPTY;
  stats = EMPTY_STATS;
  /** Ids of the rule statements. */
  statementIds: number[] = [];
  etag = etagOf(EMPTY);
  source = '';
  private readonly retired = zeroCounters();

  document(): RulesDocument {
    return (this.parsed ??= JSON.parse(this.text) as RulesDocument);
  }

  /** Swaps in a compiled document (between two messages: nothing here awaits). */
  replace(compiled: CompiledDocument | undefined): void {
    const old = this.program;
    if (old) {
      const c = old.counters();
      for (const k of Object.keys(this.retired) as (keyof EngineCounters)[]) this.retired[k] += c[k];
    }
    if (!compiled) {
      this.program = undefined;
      this.text = EMPTY_TEXT;
      this.parsed = EMPTY;
      this.stats = EMPTY_STATS;
      this.statementIds = [];
      this.etag = etagOf(EMPTY);
      this.source = '';
      return;
    }
    this.program = compiled.program;
    this.text = compiled.documentText;
    this.parsed = undefined;
    this.stats = compiled.stats;
    this.statementIds = compiled.statementIds;
    this.etag = compiled.etag;
    this.source = compiled.source;
  }

  /** The engine counters since start, over every program (memoryTopics: the active one's). */
  counters(): EngineCounters {
    const c = this.program?.counters();
    const sum = { ...this.retired };
    if (c) for (const k of Object.keys(sum) as (keyof EngineCounters)[]) sum[k] += c[k];
    sum.memoryTopics = c?.memoryTopics ?? 0; // a gauge of the active program
    return sum;
  }
}

export function createRulesService(broker: BrokerApi, config: Config, log: Logger, options: Options = {}): RulesService {
  const rlog = log.child({ part: 'rules' });
  const compiler = options.compiler ?? new RulesCompiler({ idleMillis: config.rulesCompilerIdleMs });
  const ownCompiler = options.compiler === undefined;
  const store = new DocumentStore(config.dataDir);
  const limits = { topics: config.rulesMemoryTopics, samples: config.rulesWindowSamples };
  const active = new ActiveDocument();
  const outputs = new RuleOutputs(broker, options.stateStore, rlog);
  const author = new DocumentAuthor(join(config.dataDir, AUTHOR_FILE), outputs, rlog, options.authorAccess, options.stateAccess);
  const backup = new RulesBackup(() => active, rlog);
  const stats = { engineErrors: 0, compiles: 0, compileErrors: 0, rejectedWrites: 0, deniedStateReads: 0, lastCompileMillis: 0, lastAscMillis: 0, wasmBytes: 0, sourceBytes: 0 };
  let closed = false;
  let lastEngineErrorLog = 0;

  let placement: RuleBufferPlacement | undefined;

  /** One message through the program in `mode` (RUN_*); outputs queued. */
  function run(p: RulesProgram, message: Message, mode: number): void {
    let fired;
    try {
      fired = p.process(message.topic, message.payload, undefined, mode); // the program reads the clock if it keeps windows
    } catch (err) {
      stats.engineErrors++;
      const now = Date.now();
      if (now - lastEngineErrorLog > 10_000) {
        lastEngineErrorLog = now;
        rlog.error({ err, topic: message.topic }, 'rules engine failed on a message; the message is routed normally');
      }
      return;
    }
    if (fired.length > 0) outputs.queue(fired, message.qos, message.retain);
    if (mode === RUN_FILTERS && p.rulesSkipped()) placement?.toHolder(message);
  }

  // The hot path: synchronous, one Wasm call per message.
  broker.addHooks({
    onPublish(message: Message): void {
      if (message.origin === RULES_ORIGIN || outputs.writing) return; // no loops: never feed our own output (or writes) back
      if (message.fromNode !== undefined) return; // cluster: filters ran on the node where the message arrived
      const p = active.program;
      if (p === undefined) return;
      run(p, message, placement === undefined || placement.holds() ? RUN_ALL : RUN_FILTERS);
    },
  });

  async function compile(request: CompileRequest, atStart: boolean): Promise<CompiledDocument> {
    try {
      // the module of the active document is kept in the data folder: a restart loads it (atStart)
      return await compiler.compile({ ...request, cacheDir: config.dataDir, limits }, atStart);
    } catch (err) {
      if (err instanceof RulesError) throw err;
      stats.compileErrors++;
      rlog.error({ err }, 'rules compiler failed on a valid document');
      throw new RulesError(RulesErrorCode.compile, '', `the compiler failed: ${(err as Error).message.split('\n')[0]}`);
    }
  }

  /**
   * Compiles (in the worker) and activates. `keepBuffer`: a PATCH carries the buffered
   * messages of the statements it does not define over to the new program.
   */
  async function activate(request: CompileRequest, persist: boolean, keepBuffer = false, atStart = false): Promise<WriteResult> {
    if (request.document === EMPTY) {
      // nothing to run: no module at all (and no asc at start-up for a broker without rules)
      if (persist) await store.write(EMPTY_TEXT);
      active.replace(undefined);
      return { etag: active.etag, filters: 0, rules: 0, statements: 0, compileMillis: 0 };
    }
    const compiled = await compile(request, atStart);
    stats.compiles++;
    if (compiled.cacheProblem) rlog.warn({ problem: compiled.cacheProblem }, 'compiled-module cache: the module was compiled again');
    if (persist) await store.write(compiled.documentText);
    if (closed) throw new RulesError(RulesErrorCode.compile, '', 'the rules service is closed');
    // swap between two messages: nothing below awaits
    const old = active.program;
    const states = options.stateStore;
    compiled.program.stateReader = states
      ? (key) => {
          const allowed = author.stateReadAllowed;
          if (allowed !== undefined && !allowed(key)) {
            stats.deniedStateReads++;
            return undefined;
          }
          return states.read(Buffer.from(key, 'utf8'));
        }
      : () => undefined;
    if (old && keepBuffer) {
      const patched = new Set(compiled.patchedIds);
      const keep = new Set(compiled.statementIds.filter((id) => !patched.has(id)));
      compiled.program.restoreBuffer(old.bufferSnapshot(), keep);
      // statements whose topic and condition are unchanged keep their memory
      compiled.program.restoreMemory(old.memorySnapshot());
    }
    enablePartTiming(compiled.program, JSON.parse(compiled.documentText) as RulesDocument);
    active.replace(compiled);
    stats.lastCompileMillis = compiled.millis;
    stats.lastAscMillis = compiled.ascMillis;
    stats.wasmBytes = compiled.wasmBytes;
    stats.sourceBytes = Buffer.byteLength(compiled.source);
    rlog.info({ etag: active.etag, ...compiled.counts, compileMs: Math.round(compiled.millis), wasmBytes: compiled.wasmBytes, fromCache: compiled.fromCache }, 'rules document active');
    return { etag: active.etag, ...compiled.counts, compileMillis: Math.round(compiled.millis) };
  }

  // One write at a time, in arrival order.
  let queue: Promise<unknown> = Promise.resolve();
  function serial<T>(op: () => Promise<T>): Promise<T> {
    const run = queue.then(op, op);
    queue = run.catch(() => undefined);
    return run;
  }
  /** A write: If-Match, the author's rights, the operation, then the author recorded. */
  const guarded = <T>(ifMatch: string | undefined, op: () => Promise<T>, by?: RulesAuthor, texts: string[] = []): Promise<T> =>
    serial(async () => {
      try {
        if (!ifMatchHolds(ifMatch, active.etag)) throw new RulesError(RulesErrorCode.stale, '', `If-Match ${ifMatch} does not name the active document (${active.etag})`);
        author.check(by, ...texts);
        const result = await op();
        author.set(by);
        await author.save(active.etag);
        if (by) rlog.info({ etag: active.etag, author: by.user ?? by.via }, 'rules document uploaded');
        return result;
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
      try {
        await activate({ text }, true, false, true);
      } catch (err) {
        throw new Error(`EDB_RULES_FILE=${config.rulesFile}: ${(err as Error).message}`);
      }
      backup.applyMemory();
      return;
    }
    const text = await store.read();
    // The empty document needs no module: nothing is compiled until a document arrives,
    // so a broker without rules starts at once (asc takes seconds on a small board).
    if (text === undefined) return;
    try {
      await activate({ text }, false, false, true);
      backup.applyBuffer();
      backup.applyMemory();
      await author.restore(active.etag);
    } catch (err) {
      rlog.error({ err, file: store.path }, 'the stored rules document is invalid; starting with an empty document');
    }
  }
  const ready = serial(load);
  ready.catch(() => undefined);

  return {
    ready,
    current: () => ({ document: active.document(), etag: active.etag }),
    currentText: () => ({ text: active.text, etag: active.etag }),
    replace: (body, ifMatch, by) => guarded(ifMatch, () => activate({ text: body }, true), by, [body]),
    // the patched document acts for the new author as a whole: check what is kept too
    patch: (body, ifMatch, by) => guarded(ifMatch, () => activate({ text: body, patchOnto: active.text }, true, true), by, [body, active.text]),
    clear: (ifMatch, by) => guarded(ifMatch, () => activate({ document: EMPTY }, true), by),
    author: () => author.current,
    metrics(): RulesMetrics {
      return {
        ...active.counters(),
        ...stats,
        stateWrites: outputs.stateWrites,
        stateWriteErrors: outputs.stateWriteErrors,
        deniedOutputs: outputs.deniedOutputs,
        deniedStateWrites: outputs.deniedStateWrites,
        ...active.stats,
      };
    },
    test(body: string, by?: RulesAuthor) {
      const states = options.stateStore;
      // keys the caller may not read are absent to a trial too, as they are to a document of theirs
      const keys = by?.user !== undefined && options.stateAccess?.enabled() ? options.stateAccess.forUser(by.user) : undefined;
      // the live store is only read: a copy of each value, nothing written
      return dryRun(body, active.text, (key) => (keys && !keys.canReadKey(key) ? undefined : states?.read(Buffer.from(key, 'utf8'))), limits);
    },
    partMetrics: () => (active.program ? partMetrics(active.program, active.document()) : []),
    messageSeconds: () => messageSeconds(active.program),
    source: () => active.source,
    snapshotSection: () => backup,
    placeRuleBuffer(p) {
      placement = p;
    },
    runRules(message) {
      const p = active.program;
      if (p !== undefined && message.origin !== RULES_ORIGIN) run(p, message, RUN_RULES);
    },
    clearRuleBuffer() {
      active.program?.clearBuffer();
    },
    async close(): Promise<void> {
      closed = true;
      await queue.catch(() => undefined);
      active.program = undefined;
      if (ownCompiler) await compiler.close();
    },
  };
}
