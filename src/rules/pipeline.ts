/**
 * The whole compile of one write, as it runs in the compile worker: parse and check the body
 * (and merge it onto the active document for a PATCH), generate AssemblyScript and tables,
 * run asc. Everything CPU-heavy happens here, off the broker's event loop; the main thread
 * only compiles the Wasm binary (asynchronously) and swaps the program in.
 */
import { createHash } from 'node:crypto';
import type { CheckedDocument, RulesDocument } from './ast.js';
import { compileAssemblyScript, optimizeLevelFor } from './asc.js';
import { parseDocumentText, checkDocument, patchDocument } from './check.js';
import { generateProgram } from './codegen.js';
import { RulesError } from './errors.js';

/** What the runtime needs to turn output records into messages. */
export interface ProgramMeta {
  /** Per filter statement: "/" + subtopic, and the fixed payload (null: the incoming one). */
  filterOutputs: { suffix: string; payload: string | null }[];
  /** Per logic entry: the "!"-prefixed topic and the fixed payload (null: the JSON of the buffer). */
  logicOutputs: { topic: string; payload: string | null }[];
  /** Rule statement ids by statement index. */
  ruleStatementIds: number[];
}

export function metaOf(doc: CheckedDocument): ProgramMeta {
  return {
    filterOutputs: doc.filterStatements.map((s) => ({ suffix: '/' + doc.filters[s.filter]!.suffix, payload: s.payload })),
    logicOutputs: doc.logic.map((l) => ({ topic: l.topic, payload: l.payload })),
    ruleStatementIds: doc.ruleStatements.map((s) => s.id),
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
  ascMillis: number;
}

export interface CompileFailure {
  ok: false;
  error: { code: RulesError['code']; path: string; problem: string; position?: number };
}

export type CompileResult = CompileSuccess | CompileFailure;

export async function runCompile(request: CompileRequest): Promise<CompileResult> {
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
  const checkMillis = performance.now() - started;
  const { binary, millis } = await compileAssemblyScript(generated.source, { optimizeLevel: request.optimizeLevel ?? optimizeLevelFor(generated.source.length) });
  return {
    ok: true,
    documentText: documentText(doc.document),
    etag: etagOf(doc.document),
    statementIds: doc.ruleStatements.map((st) => st.id),
    stats: { filters: doc.filters.length, filterStatements: doc.filterStatements.length, ruleStatements: doc.ruleStatements.length, logicEntries: doc.logic.length },
    meta: metaOf(doc),
    tables: generated.tables,
    binary,
    source: generated.source,
    patchedIds,
    counts: { filters: doc.filters.length, rules: doc.document.rules.length, statements: doc.filterStatements.length + doc.ruleStatements.length },
    checkMillis,
    ascMillis: millis,
  };
}
