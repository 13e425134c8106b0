/**
 * The rules service: the active fr_script document, compiled to WebAssembly, run on every
 * PUBLISH through the broker's onPublish hook; outputs are published back with origin
 * "rules" and never fed into the engine again. Writes are serialised, validated and compiled
 * completely before they replace the active program (between two messages), persisted
 * atomically under dataDir and reloaded at start.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkAuthorAccess, type AuthorAccess, type AuthorKeyAccess, type RulesAuthor } from './author-check.js';
import { parseJsonText } from './check.js';
import type { Logger } from 'pino';
import type { BrokerApi } from '../broker/api.js';
import type { Message } from '../mqtt/message.js';
import type { Config } from '../config/schema.js';
import type { RulesDocument } from './ast.js';
import { RulesCompiler, type CompiledDocument } from './compiler.js';
import { documentText, etagOf, type CompileRequest, type DocumentStats } from './pipeline.js';

export { etagOf };
import { RulesError, RulesErrorCode } from './errors.js';
import { TIME_BUCKETS, type BufferedEntry, type EngineCounters, type RulesProgram, type StatementCounters, type StatementMemory } from './runtime.js';
import { decodeMemory, encodeMemory } from './memory-codec.js';
import { dryRun, type DryRunOutput } from './dry-run.js';
import type { SnapshotSection } from '../persistence/snapshot.js';
import { DocumentStore } from './store.js';

export const RULES_ORIGIN = 'rules';
/** A queued set_state write. */
interface StateWrite {
  key: string;
  value: Buffer;
  px: number | undefined;
}

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
  test(body: string): { outputs: DryRunOutput[] };
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
  snapshotSection(): SnapshotSection;
  close(): Promise<void>;
}

const EMPTY: RulesDocument = { filters: [], rules: [] };


/** `If-Match` semantics (RFC 9110 13.1.1): `*` or a list of entity tags, one of which is current. */
export function ifMatchHolds(header: string | undefined, etag: string): boolean {
  if (header === undefined) return true;
  const h = header.trim();
  if (h === '*') return true;
  return h.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

/** The state store as the rules engine uses it, in the same process (src/state/service.ts). */
export interface RulesStateAccess {
  read(key: Buffer): Buffer | undefined;
  write(key: Buffer, value: Buffer, px?: number): string;
}

/** Per filter and per rule, for an operator looking for the rule that costs. */
export interface PartMetrics {
  /** "filters/0" or "rules/1". */
  part: string;
  topic: string;
  evaluations: number;
  fires: number;
  conditionErrors: number;
  /**
   * Time spent on messages by this filter or rule (its statements and logic entries),
   * estimated from one message in TIMING_EVERY: per message it ran on, a histogram over
   * TIME_BUCKETS (counts not cumulative, the last +Inf) and the sum, in seconds.
   */
  seconds: { counts: number[]; sum: number };
}

/** One message in this many is timed (metrics per filter and per rule; docs/rules.md#metrics). */
export const TIMING_EVERY = 32;
export { TIME_BUCKETS };

interface Options {
  compiler?: RulesCompiler;
  /** state() reads and set_state writes; without it every key is absent and writes are dropped. */
  stateStore?: RulesStateAccess;
  /**
   * The ACL as it applies to a document's author (see author-check.ts); `enabled` false
   * when no ACL is configured. Without it, documents are not checked.
   */
  authorAccess?: { enabled(): boolean; forUser(user: string): AuthorAccess & { canWrite(topic: string): boolean } };
  /**
   * The state store's per-key authorization as it applies to a document's author; `enabled`
   * false when the state store has none. Without it, set_state keys are not checked.
   */
  stateAccess?: { enabled(): boolean; forUser(user: string): AuthorKeyAccess };
}

const AUTHOR_FILE = 'rules-author.json';

export function createRulesService(broker: BrokerApi, config: Config, log: Logger, options: Options = {}): RulesService {
  const rlog = log.child({ part: 'rules' });
  const compiler = options.compiler ?? new RulesCompiler({ idleMillis: config.rulesCompilerIdleMs });
  const ownCompiler = options.compiler === undefined;
  const store = new DocumentStore(config.dataDir);

  let program: RulesProgram | undefined;
  const EMPTY_TEXT = documentText(EMPTY);
  const EMPTY_STATS: DocumentStats = { filters: 0, filterStatements: 0, ruleStatements: 0, logicEntries: 0 };
  let activeText = EMPTY_TEXT;
  let activeParsed: RulesDocument | undefined = EMPTY;
  let activeStats = EMPTY_STATS;
  /** Ids of the active document's rule statements. */
  let activeIds: number[] = [];
  let etag = etagOf(EMPTY);
  let source = '';
  let closed = false;
  const retired: EngineCounters = { messages: 0, topicMatches: 0, evaluations: 0, fires: 0, missingVariable: 0, kindMismatch: 0, notJson: 0, bufferFull: 0, memoryTopics: 0, memoryEvicted: 0, samplesMerged: 0 };
  const stats = { engineErrors: 0, compiles: 0, compileErrors: 0, rejectedWrites: 0, lastCompileMillis: 0, lastAscMillis: 0, wasmBytes: 0, sourceBytes: 0 };
  let lastEngineErrorLog = 0;
  let deniedOutputs = 0;
  let deniedStateWrites = 0;
  let activeAuthor: (RulesAuthor & { at: string }) | undefined;
  /** Set while the active document has an author with an ACL: may it publish to this topic? */
  let outputAllowed: ((topic: string) => boolean) | undefined;
  /** Set while the active document has an author and the state store authorizes keys: may it write this key? */
  let stateWriteAllowed: ((key: string) => boolean) | undefined;
  const authorPath = join(config.dataDir, AUTHOR_FILE);

  // Outputs wait until the message that caused them has been routed (subscribers see
  // house/1 before house/1/alert/); one microtask per batch of messages, not per message.
  let pending: (Message | StateWrite)[] = [];
  let flushScheduled = false;
  let stateWrites = 0;
  let stateWriteErrors = 0;
  /** While a set_state write runs: its KEYNOTIFY notifications are not fed back into the engine. */
  let writing = false;
  const flush = (): void => {
    flushScheduled = false;
    const batch = pending;
    pending = [];
    for (let i = 0; i < batch.length; i++) {
      const m = batch[i]!;
      if ('key' in m) writeState(m);
      else broker.publish(m);
    }
  };
  function writeState(m: StateWrite): void {
    const states = options.stateStore;
    const key = m.key;
    let answer = 'no state store';
    if (states) {
      writing = true;
      try {
        answer = states.write(Buffer.from(key, 'utf8'), m.value, m.px);
      } finally {
        writing = false;
      }
    }
    if (answer === 'OK') stateWrites++;
    else {
      stateWriteErrors++;
      const now = Date.now();
      if (now - lastStateErrorLog > 10_000) {
        lastStateErrorLog = now;
        rlog.warn({ key, answer }, 'set_state: the state store refused the write');
      }
    }
  }
  let lastStateErrorLog = 0;

  // The hot path: synchronous, one Wasm call per message.
  broker.addHooks({
    onPublish(message: Message): void {
      if (message.origin === RULES_ORIGIN || writing) return; // no loops: never feed our own output (or writes) back
      if (message.fromNode !== undefined) return; // cluster: filters ran on the node where the message arrived
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
      if (outputs.length === 0) return;
      const queued = pending.length;
      for (let i = 0; i < outputs.length; i++) {
        const o = outputs[i]!;
        if (o.state) {
          if (stateWriteAllowed !== undefined && !stateWriteAllowed(o.state.key)) {
            deniedStateWrites++;
            continue;
          }
          // a state write waits in line with the publishes: the order the document gives
          pending.push({ key: o.state.key, value: o.payload, px: o.state.px });
          continue;
        }
        if (outputAllowed !== undefined && !outputAllowed(o.topic)) {
          deniedOutputs++;
          continue;
        }
        pending.push({ topic: o.topic, payload: o.payload, qos: message.qos, retain: message.retain, origin: RULES_ORIGIN });
      }
      if (pending.length === queued) return; // every output denied
      if (!flushScheduled) {
        flushScheduled = true;
        queueMicrotask(flush);
      }
    },
  });

  const retire = (old: RulesProgram | undefined): void => {
    if (!old) return;
    const c = old.counters();
    for (const k of Object.keys(retired) as (keyof EngineCounters)[]) retired[k] += c[k];
  };

  /**
   * Compiles (in the worker) and activates. `keepBuffer`: a PATCH carries the buffered
   * messages of the statements it does not define over to the new program.
   */
  async function activate(request: CompileRequest, persist: boolean, keepBuffer = false, atStart = false): Promise<WriteResult> {
    if (request.document === EMPTY) {
      // nothing to run: no module at all (and no asc at start-up for a broker without rules)
      if (persist) await store.write(EMPTY_TEXT);
      const old = program;
      program = undefined;
      retire(old);
      activeText = EMPTY_TEXT;
      activeParsed = EMPTY;
      activeStats = EMPTY_STATS;
      activeIds = [];
      etag = etagOf(EMPTY);
      source = '';
      return { etag, filters: 0, rules: 0, statements: 0, compileMillis: 0 };
    }
    let compiled: CompiledDocument;
    try {
      // the module of the active document is kept in the data folder: a restart loads it (atStart)
      compiled = await compiler.compile({ ...request, cacheDir: config.dataDir, limits: { topics: config.rulesMemoryTopics, samples: config.rulesWindowSamples } }, atStart);
    } catch (err) {
      if (err instanceof RulesError) throw err;
      stats.compileErrors++;
      rlog.error({ err }, 'rules compiler failed on a valid document');
      throw new RulesError(RulesErrorCode.compile, '', `the compiler failed: ${(err as Error).message.split('\n')[0]}`);
    }
    stats.compiles++;
    if (compiled.cacheProblem) rlog.warn({ problem: compiled.cacheProblem }, 'compiled-module cache: the module was compiled again');
    if (persist) await store.write(compiled.documentText);
    if (closed) throw new RulesError(RulesErrorCode.compile, '', 'the rules service is closed');
    // swap between two messages: nothing below awaits
    const old = program;
    const states = options.stateStore;
    compiled.program.stateReader = states ? (key) => states.read(Buffer.from(key, 'utf8')) : () => undefined;
    if (old && keepBuffer) {
      const patched = new Set(compiled.patchedIds);
      const keep = new Set(compiled.statementIds.filter((id) => !patched.has(id)));
      compiled.program.restoreBuffer(old.bufferSnapshot(), keep);
      // statements whose topic and condition are unchanged keep their memory
      compiled.program.restoreMemory(old.memorySnapshot());
    }
    enableTiming(compiled.program, compiled.documentText);
    program = compiled.program;
    retire(old);
    activeText = compiled.documentText;
    activeParsed = undefined; // parsed on demand (GET answers with the text)
    activeStats = compiled.stats;
    activeIds = compiled.statementIds;
    etag = compiled.etag;
    source = compiled.source;
    stats.lastCompileMillis = compiled.millis;
    stats.lastAscMillis = compiled.ascMillis;
    stats.wasmBytes = compiled.wasmBytes;
    stats.sourceBytes = Buffer.byteLength(compiled.source);
    rlog.info({ etag, ...compiled.counts, compileMs: Math.round(compiled.millis), wasmBytes: compiled.wasmBytes, fromCache: compiled.fromCache }, 'rules document active');
    return { etag, ...compiled.counts, compileMillis: Math.round(compiled.millis) };
  }

  /** Parts for the time histograms: filters, then rules; the rule of each logic entry. */
  function enableTiming(p: RulesProgram, text: string): void {
    const doc = JSON.parse(text) as RulesDocument;
    const logicRule: number[] = [];
    doc.rules.forEach((r, ri) => r.logic.forEach(() => logicRule.push(ri)));
    p.enableTiming(TIMING_EVERY, doc.filters.length, doc.rules.length, logicRule);
  }

  // One write at a time, in arrival order.
  let queue: Promise<unknown> = Promise.resolve();
  function serial<T>(op: () => Promise<T>): Promise<T> {
    const run = queue.then(op, op);
    queue = run.catch(() => undefined);
    return run;
  }
  function setAuthor(author: RulesAuthor | undefined, at = new Date().toISOString()): void {
    activeAuthor = author ? { ...author, at } : undefined;
    const user = author?.user;
    const acl = options.authorAccess;
    if (user === undefined || !acl) outputAllowed = undefined;
    else {
      const view = acl.forUser(user);
      outputAllowed = (topic) => !acl.enabled() || view.canWrite(topic);
    }
    const keys = options.stateAccess;
    if (user === undefined || !keys || !keys.enabled()) stateWriteAllowed = undefined;
    else {
      const view = keys.forUser(user);
      // devices repeat their keys: decide each once (bounded, like the ACL's own caches)
      const decided = new Map<string, boolean>();
      stateWriteAllowed = (key) => {
        let ok = decided.get(key);
        if (ok === undefined) {
          if (decided.size >= 4096) decided.clear();
          decided.set(key, (ok = view.canWriteKey(key)));
        }
        return ok;
      };
    }
  }
  async function saveAuthor(): Promise<void> {
    try {
      await writeFile(authorPath, JSON.stringify({ etag, ...(activeAuthor ?? {}) }) + '\n');
    } catch (err) {
      rlog.warn({ err: (err as Error).message }, 'cannot record the rules document author');
    }
  }
  function checkAuthor(author: RulesAuthor | undefined, ...texts: string[]): void {
    if (author?.user === undefined) return;
    const acl = options.authorAccess;
    const keys = options.stateAccess;
    const access = acl?.enabled() ? acl.forUser(author.user) : undefined;
    const keyAccess = keys?.enabled() ? keys.forUser(author.user) : undefined;
    if (!access && !keyAccess) return;
    for (const text of texts) {
      let doc: unknown;
      try {
        doc = parseJsonText(text);
      } catch {
        continue; // the compiler reports it
      }
      checkAuthorAccess(doc, access, author.user, keyAccess);
    }
  }
  const guarded = <T>(ifMatch: string | undefined, op: () => Promise<T>, author?: RulesAuthor, texts: string[] = []): Promise<T> =>
    serial(async () => {
      try {
        if (!ifMatchHolds(ifMatch, etag)) throw new RulesError(RulesErrorCode.stale, '', `If-Match ${ifMatch} does not name the active document (${etag})`);
        checkAuthor(author, ...texts);
        const result = await op();
        setAuthor(author);
        await saveAuthor();
        if (author) rlog.info({ etag, author: author.user ?? author.via }, 'rules document uploaded');
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
      applySavedMemory();
      return;
    }
    const text = await store.read();
    // The empty document needs no module: nothing is compiled until a document arrives,
    // so a broker without rules starts at once (asc takes seconds on a small board).
    if (text === undefined) return;
    try {
      await activate({ text }, false, false, true);
      applySavedBuffer();
      applySavedMemory();
      await restoreAuthor();
    } catch (err) {
      rlog.error({ err, file: store.path }, 'the stored rules document is invalid; starting with an empty document');
    }
  }
  async function restoreAuthor(): Promise<void> {
    try {
      const saved = JSON.parse(await readFile(authorPath, 'utf8')) as { etag?: unknown; user?: unknown; via?: unknown; at?: unknown };
      if (saved.etag === etag && typeof saved.via === 'string') {
        setAuthor({ user: typeof saved.user === 'string' ? saved.user : undefined, via: saved.via }, typeof saved.at === 'string' ? saved.at : undefined);
      }
    } catch {
      // no record: a document from before authors were recorded
    }
  }
  const ready = serial(load);
  ready.catch(() => undefined);

  // The rule buffer from the backup: applied when the document it was saved with is active
  // (the backup may be read before or after the stored document has compiled).
  let savedBuffer: { etag: string; entries: BufferedEntry[] } | undefined;
  function applySavedBuffer(): void {
    if (!savedBuffer || !program || savedBuffer.etag !== etag) return;
    const ids = new Set(activeIds);
    program.restoreBuffer(savedBuffer.entries, ids);
    rlog.info({ entries: savedBuffer.entries.length }, 'rule buffer restored');
    savedBuffer = undefined;
  }
  // Statements' memory from the backup: applied to the statements with the same topic and
  // condition once a document is active (whichever document it is).
  let savedMemory: StatementMemory[] | undefined;
  function applySavedMemory(): void {
    if (!savedMemory || !program) return;
    const n = program.restoreMemory(savedMemory);
    rlog.info({ topics: n }, 'rules memory restored');
    savedMemory = undefined;
  }
  const snapshotSection: SnapshotSection = {
    name: 'rules',
    save(): Buffer {
      const entries = program?.bufferSnapshot() ?? [];
      const memory = program ? encodeMemory(program.memorySnapshot()) : [];
      return Buffer.from(
        JSON.stringify({ etag, entries: entries.map((e) => ({ topic: e.topic.toString('base64'), payload: e.payload.toString('base64'), ids: e.statementIds })), memory }),
      );
    },
    restore(data: Buffer): void {
      const raw = JSON.parse(data.toString('utf8')) as { etag?: unknown; entries?: unknown; memory?: unknown };
      if (raw.memory !== undefined) {
        savedMemory = decodeMemory(raw.memory);
        applySavedMemory();
      }
      if (typeof raw.etag !== 'string' || !Array.isArray(raw.entries)) throw new Error('rules section: expected {etag, entries}');
      const entries = raw.entries.map((e: { topic?: unknown; payload?: unknown; ids?: unknown }) => {
        if (typeof e.topic !== 'string' || typeof e.payload !== 'string' || !Array.isArray(e.ids) || !e.ids.every((id) => Number.isInteger(id))) {
          throw new Error('rules section: bad buffer entry');
        }
        return { topic: Buffer.from(e.topic, 'base64'), payload: Buffer.from(e.payload, 'base64'), statementIds: e.ids as number[] };
      });
      savedBuffer = { etag: raw.etag, entries };
      applySavedBuffer();
    },
    reset(): void {
      savedBuffer = undefined;
      savedMemory = undefined;
    },
  };

  return {
    ready,
    current: () => ({ document: (activeParsed ??= JSON.parse(activeText) as RulesDocument), etag }),
    currentText: () => ({ text: activeText, etag }),
    replace: (body, ifMatch, author) => guarded(ifMatch, () => activate({ text: body }, true), author, [body]),
    // the patched document acts for the new author as a whole: check what is kept too
    patch: (body, ifMatch, author) => guarded(ifMatch, () => activate({ text: body, patchOnto: activeText }, true, true), author, [body, activeText]),
    clear: (ifMatch, author) => guarded(ifMatch, () => activate({ document: EMPTY }, true), author),
    author: () => activeAuthor,
    metrics(): RulesMetrics {
      const c = program?.counters();
      const sum = { ...retired };
      if (c) for (const k of Object.keys(sum) as (keyof EngineCounters)[]) sum[k] += c[k];
      sum.memoryTopics = c?.memoryTopics ?? 0; // a gauge of the active program
      return {
        ...sum,
        ...stats,
        stateWrites,
        stateWriteErrors,
        deniedOutputs,
        deniedStateWrites,
        ...activeStats,
      };
    },
    test(body: string) {
      const states = options.stateStore;
      // the live store is only read: a copy of each value, nothing written
      return dryRun(body, activeText, (key) => states?.read(Buffer.from(key, 'utf8')), { topics: config.rulesMemoryTopics, samples: config.rulesWindowSamples });
    },
    partMetrics(): PartMetrics[] {
      const p = program;
      if (!p) return [];
      const { statements, logicFires } = p.statementCounters();
      const meta = p.meta;
      const parts = new Map<string, PartMetrics>();
      const doc = (activeParsed ??= JSON.parse(activeText) as RulesDocument);
      const times = p.timeHistograms();
      const nb = TIME_BUCKETS.length + 1;
      const part = (name: string, topic: string): PartMetrics => {
        let m = parts.get(name);
        if (!m) {
          // parts are numbered filters first, then rules (RulesProgram.enableTiming)
          const [kind, n] = name.split('/');
          const index = kind === 'filters' ? Number(n) : doc.filters.length + Number(n);
          const counts = index < times.parts ? Array.from(times.counts.subarray(index * nb, index * nb + nb)) : new Array<number>(nb).fill(0);
          parts.set(name, (m = { part: name, topic, evaluations: 0, fires: 0, conditionErrors: 0, seconds: { counts, sum: times.sums[index] ?? 0 } }));
        }
        return m;
      };
      meta.statements.forEach((st, i) => {
        const c: StatementCounters = statements[i]!;
        const m = st.filter >= 0 ? part(`filters/${st.filter}`, doc.filters[st.filter]?.topic ?? '') : part(`rules/${st.rule}`, doc.rules[st.rule]?.statements.map((s) => s.topic).join(' ') ?? '');
        m.evaluations += c.evaluations;
        m.conditionErrors += c.unknown;
        if (st.filter >= 0) m.fires += c.trueResults;
      });
      let j = 0;
      doc.rules.forEach((r, ri) => {
        for (let k = 0; k < r.logic.length; k++) part(`rules/${ri}`, r.statements.map((s) => s.topic).join(' ')).fires += logicFires[j++] ?? 0;
      });
      return [...parts.values()];
    },
    messageSeconds() {
      const t = program?.timeHistograms();
      return t ? { counts: Array.from(t.messageCounts), sum: t.messageSum } : { counts: new Array<number>(TIME_BUCKETS.length + 1).fill(0), sum: 0 };
    },
    source: () => source,
    snapshotSection: () => snapshotSection,
    async close(): Promise<void> {
      closed = true;
      await queue.catch(() => undefined);
      program = undefined;
      if (ownCompiler) await compiler.close();
    },
  };
}
