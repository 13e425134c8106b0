/**
 * Runs the AssemblyScript compiler (asc's programmatic API) on a generated program with an
 * in-memory file system: the generated entry file plus the hand-written library in
 * assembly/rules/, read from the package (found from this file's URL, so it works from src/
 * under vitest and from dist/ once installed). Used inside the compile worker.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The package root: the nearest folder above this file holding the library's sources
 * (assembly/rules/engine.ts; dist/assembly/rules holds only the compiled layout.js that the
 * host side imports, so a folder alone is not enough).
 */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    try {
      statSync(join(dir, 'assembly', 'rules', 'engine.ts'));
      return dir;
    } catch {
      dir = resolve(dir, '..');
    }
  }
  throw new Error('cannot find assembly/rules above ' + fileURLToPath(import.meta.url));
}

let library: Map<string, string> | undefined;

/** The library sources, keyed by their path in the in-memory file system ("rules/engine.ts"). */
export function librarySources(): Map<string, string> {
  if (!library) {
    const dir = join(packageRoot(), 'assembly', 'rules');
    library = new Map();
    for (const name of readdirSync(dir).sort()) {
      if (name.endsWith('.ts')) library.set(`rules/${name}`, readFileSync(join(dir, name), 'utf8'));
    }
  }
  return library;
}

export interface AscResult {
  binary: Uint8Array;
  /** Milliseconds spent in asc. */
  millis: number;
}

export interface AscOptions {
  /** Binaryen optimize level (0-3). */
  optimizeLevel: number;
}

/** Level by size: -O3 normally; large documents trade some speed for compile time. */
export function optimizeLevelFor(sourceBytes: number): number {
  return sourceBytes > 400_000 ? 1 : sourceBytes > 150_000 ? 2 : 3;
}

export async function compileAssemblyScript(source: string, options: AscOptions): Promise<AscResult> {
  const asc = (await import('assemblyscript/asc')).default;
  const files = librarySources();
  let binary: Uint8Array | undefined;
  const started = performance.now();
  const stderr = asc.createMemoryStream();
  const result = await asc.main(
    [
      'program.ts',
      '--outFile',
      'program.wasm',
      '--optimizeLevel',
      String(options.optimizeLevel),
      '--shrinkLevel',
      '0',
      '--runtime',
      'minimal',
      '--noAssert',
      '--initialMemory',
      '2',
    ],
    {
      readFile: (name: string) => (name === 'program.ts' ? source : (files.get(name.replace(/^\.\//, '')) ?? null)),
      writeFile: (name: string, contents: Uint8Array | string) => {
        if (name.endsWith('.wasm') && typeof contents !== 'string') binary = contents;
      },
      listFiles: () => [],
      stdout: asc.createMemoryStream(),
      stderr,
    },
  );
  if (result.error || !binary) {
    throw new Error(`asc failed: ${result.error?.message ?? 'no output'}\n${stderr.toString()}`);
  }
  return { binary, millis: performance.now() - started };
}
