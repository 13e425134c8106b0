/**
 * The main-thread side of compiling: sends a write to the compile worker (check, codegen,
 * asc), then compiles the Wasm binary asynchronously and instantiates it. The worker starts
 * on first use and stays while writes keep coming (asc and Binaryen stay warm); after
 * `idleMillis` without one it stops and gives back its memory (about 240 MB with asc loaded).
 * At start-up a document whose module is in the cache is loaded on this thread, with no
 * worker and no asc.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { CheckedDocument } from './ast.js';
import { packageRoot } from './asc.js';
import type { WorkerReply, WorkerRequest } from './compile-worker.js';
import { RulesError } from './errors.js';
import { compileFromCache, runCompile, type CompileRequest, type CompileResult, type CompileSuccess } from './pipeline.js';
import { RulesProgram } from './runtime.js';

export interface CompiledDocument {
  program: RulesProgram;
  documentText: string;
  etag: string;
  statementIds: number[];
  stats: CompileSuccess['stats'];
  source: string;
  wasmBytes: number;
  patchedIds: number[];
  counts: CompileSuccess['counts'];
  /** Wall time from request to loaded program. */
  millis: number;
  /** Of which asc (in the worker); 0 for a module from the cache. */
  ascMillis: number;
  fromCache: boolean;
  /** A cache file that was unusable or could not be written (the compile itself succeeded). */
  cacheProblem?: string;
}

export interface RulesCompilerOptions {
  /** Stop the worker after this long without a compile; 0 keeps it. Default 60 s. */
  idleMillis?: number;
}

/** The worker script: next to this file once built; from src/ (vitest) the built copy. */
function workerPath(): string | undefined {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return join(here, '..', 'compile-worker.js');
  const built = join(packageRoot(), 'dist', 'src', 'rules', 'compile-worker.js');
  return existsSync(built) ? built : undefined;
}

export class RulesCompiler {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: CompileResult) => void; reject: (e: Error) => void }>();
  private readonly idleMillis: number;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Workers started so far (for tests). */
  workersStarted = 0;

  constructor(options: RulesCompilerOptions = {}) {
    this.idleMillis = options.idleMillis ?? 60_000;
  }

  /** Whether a worker is running now. */
  get running(): boolean {
    return this.worker !== undefined;
  }

  private start(): Worker | undefined {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.worker) return this.worker;
    const path = workerPath();
    if (!path) return undefined;
    const worker = new Worker(path);
    this.workersStarted++;
    worker.unref();
    worker.on('message', (reply: WorkerReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) {
        worker.unref();
        this.scheduleIdleStop(worker);
      }
      if ('crash' in reply) p.reject(new Error(reply.crash));
      else p.resolve(reply.result);
    });
    // a worker stopped on purpose (idle, close) is no longer this.worker: nothing of its is pending
    worker.on('error', (err) => {
      if (this.worker === worker) this.failAll(err);
    });
    worker.on('exit', () => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      this.failAll(new Error('the rules compiler worker stopped'));
    });
    this.worker = worker;
    return worker;
  }

  private scheduleIdleStop(worker: Worker): void {
    if (this.idleMillis <= 0) return;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.worker !== worker || this.pending.size > 0) return;
      this.worker = undefined;
      void worker.terminate();
    }, this.idleMillis);
    this.idleTimer.unref();
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Runs the pipeline in the worker (in this thread when no built worker script exists). */
  run(request: CompileRequest): Promise<CompileResult> {
    const worker = this.start();
    if (!worker) return runCompile(request);
    const id = this.nextId++;
    return new Promise<CompileResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.ref();
      const message: WorkerRequest = { id, request };
      worker.postMessage(message);
    });
  }

  /**
   * Compiles and loads; throws RulesError for an invalid document. With `cachedFirst` (start-up)
   * a module found in request.cacheDir is loaded on this thread and no worker starts.
   */
  async compile(request: CompileRequest, cachedFirst = false): Promise<CompiledDocument> {
    const started = performance.now();
    let result: CompileResult | undefined;
    if (cachedFirst && request.cacheDir !== undefined) {
      const found = compileFromCache({ ...request, cacheDir: request.cacheDir });
      if (!('miss' in found)) result = found;
    }
    result ??= await this.run(request);
    if (!result.ok) throw new RulesError(result.error.code, result.error.path, result.error.problem, result.error.position);
    let program: RulesProgram;
    try {
      program = await RulesProgram.load(result.binary, result.meta, result.tables, request.limits);
    } catch (err) {
      if (!result.fromCache) throw err;
      // a cached module that passed its checksum yet does not load: compile it again
      const problem = `the cached module does not load: ${(err as Error).message}`;
      result = await this.run({ ...request, rebuild: true });
      if (!result.ok) throw new RulesError(result.error.code, result.error.path, result.error.problem, result.error.position);
      result.cacheProblem ??= problem;
      program = await RulesProgram.load(result.binary, result.meta, result.tables, request.limits);
    }
    return {
      program,
      documentText: result.documentText,
      etag: result.etag,
      statementIds: result.statementIds,
      stats: result.stats,
      source: result.source,
      wasmBytes: result.binary.length,
      patchedIds: result.patchedIds,
      counts: result.counts,
      millis: performance.now() - started,
      ascMillis: result.ascMillis,
      fromCache: result.fromCache,
      ...(result.cacheProblem === undefined ? {} : { cacheProblem: result.cacheProblem }),
    };
  }

  /** For tests and benchmarks: compile an already checked document. */
  compileDocument(document: CheckedDocument, optimizeLevel?: number, limits?: { topics: number; samples: number }): Promise<CompiledDocument> {
    return this.compile({ document: document.document, ...(optimizeLevel === undefined ? {} : { optimizeLevel }), ...(limits ? { limits } : {}) });
  }

  async close(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
    this.failAll(new Error('the rules compiler is closed'));
  }
}
