/**
 * The whole compile of one write, as it runs in the compile worker: parse and check the body
 * (and merge it onto the active document for a PATCH), generate AssemblyScript and tables,
 * run asc. Everything CPU-heavy happens here, off the broker's event loop; the main thread
 * only compiles the Wasm binary (asynchronously) and swaps the program in.
 */
import { createHash } from 'node:crypto';
import type { CheckedDocument, MemoryCell, RulesDocument, Templates } from './ast.js';
import { compileAssemblyScript, optimizeLevelFor } from './asc.js';
import { parseDocumentText, checkDocument, patchDocument } from './check.js';
import { generateProgram, type GeneratedProgram } from './codegen.js';
import { RulesError } from './errors.js';
import { ModuleCache, moduleKey } from './module-cache.js';

/** What the runtime needs to turn output records into messages. */
/** A statement's or logic entry's templates, without the expressions (the module computes their values). */
export type OutputTemplates = Omit<Templates, 'exprs'> & { values: number };

export interface ProgramMeta {
  /** Per filter statement: "/" + subtopic, and the fixed payload (null: the incoming one). */
  filterOutputs: { suffix: string; payload: string | null; templates?: OutputTemplates }[];
  /** Per logic entry: the "!"-prefixed topic and the fixed payload (null: the JSON of the buffer). */
  logicOutputs: { topic: string; payload: string | null; templates?: OutputTemplates }[];
  /** Rule statement ids by statement index. */
  ruleStatementIds: number[];
  /** state() key templates by number (env.stateRead). */
  stateKeys: string[];
  /**
   * Every statement (filter statements, then rule statements): what identifies its memory across
   * documents (topic filter and condition text, and which of the equal ones) and its cells.
   */
  statements: { key: string; cells: MemoryCell[]; filter: number; rule: number }[];
}

function outputTemplates(t: Templates | undefined): OutputTemplates | undefined {
  if (!t) return undefined;
  const { exprs, ...rest } = t;
  return { ...rest, values: exprs.length };
}

/** Statement identities for memory: topic + condition, numbered among equal ones. */
export function statementKeys(doc: CheckedDocument): string[] {
  const seen = new Map<string, number>();
  const key = (topic: string, condition: string): string => {
    const base = JSON.stringify([topic, condition]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    return `${base}#${n}`;
  };
  return [...doc.filterStatements.map((s) => key(doc.filters[s.filter]!.topic, s.source)), ...doc.ruleStatements.map((s) => key(s.topic, s.source))];
}

export function metaOf(doc: CheckedDocument, stateKeys: string[] = []): ProgramMeta {
  const keys = statementKeys(doc);
  const ruleOf = new Map<number, number>();
  doc.document.rules.forEach((r, ri) => r.statements.forEach((s) => ruleOf.set(s.id, ri)));
  return {
    filterOutputs: doc.filterStatements.map((s) => {
      const t = outputTemplates(s.templates);
      return { suffix: '/' + doc.filters[s.filter]!.suffix, payload: s.payload, ...(t ? { templates: t } : {}) };
    }),
    logicOutputs: doc.logic.map((l) => {
      const t = outputTemplates(l.templates);
      return { topic: l.topic, payload: l.payload, ...(t ? { templates: t } : {}) };
    }),
    ruleStatementIds: doc.ruleStatements.map((s) => s.id),
    stateKeys,
    statements: [
      ...doc.filterStatements.map((s, i) => ({ key: keys[i]!, cells: s.cells, filter: s.filter, rule: -1 })),
      ...doc.ruleStatements.map((s, i) => ({ key: keys[doc.filterStatements.length + i]!, cells: s.cells, filter: -1, rule: ruleOf.get(s.id)! })),
    ],
  };
}

/** The ETag of a document: a hash of its compact JSON. */
export function etagOf(document: RulesDocument): string {
  return `"${createHash('sha256').update(JSON.stringify(document)).digest('base64url').slice(0, 27)}"`;
}

/** How the document is stored and served: indented JSON. */
export function documentText(document: RulesDocument): string {
  return JSON.stringify(document, null, 2) + '\n';
}

export interface DocumentStats {
  filters: number;
  filterStatements: number;
  ruleStatements: number;
  logicEntries: number;
}

export interface CompileRequest {
  /** A document as JSON text (POST, PATCH body, EDB_RULES_FILE), or an object already parsed. */
  text?: string;
  document?: unknown;
  /** PATCH: merge onto this active document (its stored text). */
  patchOnto?: string;
  optimizeLevel?: number;
  /** The folder of the compiled-module cache (the data folder); none: asc runs every time. */
  cacheDir?: string;
  /** Run asc and replace the cached module even when the cache holds one (it did not load). */
  rebuild?: boolean;
  /** Memory bounds of the loaded program (not part of the compile). */
  limits?: { topics: number; samples: number };
}

export interface CompileSuccess {
  ok: true;
  /** The normalised document as stored and served (documentText), and its ETag. Text, not an
   * object: the main thread copies a string, it does not rebuild thousands of objects. */
  documentText: string;
  etag: string;
  /** Ids of all rule statements. */
  statementIds: number[];
  stats: DocumentStats;
  meta: ProgramMeta;
  tables: Uint8Array;
  binary: Uint8Array;
  source: string;
  /** Statement ids the PATCH body defines (their buffered messages are dropped). */
  patchedIds: number[];
  counts: { filters: number; rules: number; statements: number };
  checkMillis: number;
  /** 0 when the module came from the cache. */
  ascMillis: number;
  fromCache: boolean;
  /** A cache file that was unusable, or could not be written: for the log. */
  cacheProblem?: string;
}

export interface CompileFailure {
  ok: false;
  error: { code: RulesError['code']; path: string; problem: string; position?: number };
}

export type CompileResult = CompileSuccess | CompileFailure;

interface Prepared {
  doc: CheckedDocument;
  patchedIds: number[];
  generated: GeneratedProgram;
  optimizeLevel: number;
  started: number;
  checkMillis: number;
}

/** Parse, check (and merge, for a PATCH) and generate: everything before asc. */
function prepare(request: CompileRequest): Prepared | CompileFailure {
  const started = performance.now();
  let doc: CheckedDocument;
  let patchedIds: number[] = [];
  try {
    const incoming = request.text !== undefined ? parseDocumentText(request.text) : checkDocument(request.document);
    if (request.patchOnto) {
      doc = checkDocument(patchDocument(JSON.parse(request.patchOnto) as RulesDocument, incoming.document));
      patchedIds = incoming.ruleStatements.map((s) => s.id);
    } else doc = incoming;
  } catch (err) {
    if (err instanceof RulesError) return { ok: false, error: { code: err.code, path: err.path, problem: err.problem, ...(err.position === undefined ? {} : { position: err.position }) } };
    throw err;
  }
  const generated = generateProgram(doc);
  const optimizeLevel = request.optimizeLevel ?? optimizeLevelFor(generated.source.length);
  return { doc, patchedIds, generated, optimizeLevel, started, checkMillis: performance.now() - started };
}

function success(p: Prepared, binary: Uint8Array, ascMillis: number, fromCache: boolean, cacheProblem: string | undefined): CompileSuccess {
  const { doc, generated } = p;
  return {
    ok: true,
    documentText: documentText(doc.document),
    etag: etagOf(doc.document),
    statementIds: doc.ruleStatements.map((st) => st.id),
    stats: { filters: doc.filters.length, filterStatements: doc.filterStatements.length, ruleStatements: doc.ruleStatements.length, logicEntries: doc.logic.length },
    meta: metaOf(doc, generated.stateKeys),
    tables: generated.tables,
    binary,
    source: generated.source,
    patchedIds: p.patchedIds,
    counts: { filters: doc.filters.length, rules: doc.document.rules.length, statements: doc.filterStatements.length + doc.ruleStatements.length },
    checkMillis: p.checkMillis,
    ascMillis,
    fromCache,
    ...(cacheProblem === undefined ? {} : { cacheProblem }),
  };
}

/** The whole compile; with `cacheDir`, a cached module for the same program skips asc. */
export async function runCompile(request: CompileRequest): Promise<CompileResult> {
  const p = prepare(request);
  if (!('doc' in p)) return p;
  const cache = request.cacheDir === undefined ? undefined : new ModuleCache(request.cacheDir);
  const key = cache ? moduleKey(p.generated.source, p.optimizeLevel) : undefined;
  let problem: string | undefined;
  if (cache && key && !request.rebuild) {
    const found = cache.read(key);
    if ('binary' in found) return success(p, found.binary, 0, true, undefined);
    if ('bad' in found) problem = found.bad;
  }
  const { binary, millis } = await compileAssemblyScript(p.generated.source, { optimizeLevel: p.optimizeLevel });
  if (cache && key) {
    try {
      await cache.write(key, binary);
    } catch (err) {
      problem = `cannot write ${cache.path}: ${(err as Error).message}`;
    }
  }
  return success(p, binary, millis, false, problem);
}

/**
 * Start-up on the main thread: the compile when the cache holds the module (no asc, no worker),
 * or undefined when it does not (the caller then compiles in the worker). An invalid document
 * is answered as by runCompile.
 */
export function compileFromCache(request: CompileRequest & { cacheDir: string }): CompileResult | { miss: string } {
  const p = prepare(request);
  if (!('doc' in p)) return p;
  const found = new ModuleCache(request.cacheDir).read(moduleKey(p.generated.source, p.optimizeLevel));
  if ('binary' in found) return success(p, found.binary, 0, true, undefined);
  return { miss: 'bad' in found ? found.bad : found.miss };
}
