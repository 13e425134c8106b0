/**
 * compileDocument: checked document -> generated AssemblyScript -> Wasm (in a worker thread)
 * -> a loaded RulesProgram. The worker is started on first use and kept for later compiles
 * (asc and Binaryen stay warm).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { CheckedDocument } from './ast.js';
import { compileAssemblyScript, optimizeLevelFor, packageRoot } from './asc.js';
import { generateProgram } from './codegen.js';
import type { CompileReply, CompileRequest } from './compile-worker.js';
import { RulesProgram } from './runtime.js';

export interface CompiledDocument {
  program: RulesProgram;
  source: string;
  wasmBytes: number;
  /** Wall time from checked document to loaded program. */
  millis: number;
  /** Of which asc (in the worker). */
  ascMillis: number;
}

/** The worker script: next to this file once built; from src/ (vitest) use the built copy. */
function workerPath(): string | undefined {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return join(here, '..', 'compile-worker.js');
  const built = join(packageRoot(), 'dist', 'src', 'rules', 'compile-worker.js');
  return existsSync(built) ? built : undefined;
}

export class RulesCompiler {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: { binary: Uint8Array; millis: number }) => void; reject: (e: Error) => void }>();

  private start(): Worker | undefined {
    if (this.worker) return this.worker;
    const path = workerPath();
    if (!path) return undefined;
    const worker = new Worker(path);
    worker.unref();
    worker.on('message', (reply: CompileReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if ('error' in reply) p.reject(new Error(reply.error));
      else p.resolve({ binary: reply.binary, millis: reply.millis });
    });
    worker.on('error', (err) => this.failAll(err));
    worker.on('exit', () => {
      this.worker = undefined;
      this.failAll(new Error('the rules compiler worker stopped'));
    });
    this.worker = worker;
    return worker;
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Compiles AssemblyScript source to Wasm off the main thread. */
  compileSource(source: string, optimizeLevel = optimizeLevelFor(source.length)): Promise<{ binary: Uint8Array; millis: number }> {
    const worker = this.start();
    // without a built worker script (running from sources without a build), compile here
    if (!worker) return compileAssemblyScript(source, { optimizeLevel });
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.ref();
      const request: CompileRequest = { id, source, optimizeLevel };
      worker.postMessage(request);
    }).finally(() => {
      if (this.pending.size === 0) this.worker?.unref();
    }) as Promise<{ binary: Uint8Array; millis: number }>;
  }

  async compileDocument(document: CheckedDocument): Promise<CompiledDocument> {
    const started = performance.now();
    const generated = generateProgram(document);
    const { binary, millis } = await this.compileSource(generated.source);
    const program = await RulesProgram.load(binary, document, generated.tables);
    return { program, source: generated.source, wasmBytes: binary.length, millis: performance.now() - started, ascMillis: millis };
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }
}
