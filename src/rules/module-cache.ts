/**
 * The compiled module of the active document, kept on disk so that a restart loads it instead
 * of running asc again (seconds on a small board, and a compiler worker of about 240 MB that
 * would otherwise be started only to rebuild what the broker already had).
 *
 * One file, `<dataDir>/rules-module.bin`, replaced atomically:
 *
 *   offset  size  field
 *        0     8  magic "EDBRWASM"
 *        8    32  key: SHA-256 of everything the binary depends on (see moduleKey)
 *       40    32  SHA-256 of the binary
 *       72     n  the Wasm binary
 *
 * The key covers the generated AssemblyScript (so any change of the document or of the code
 * generator), the hand-written library, the optimize level and asc's version; a file for
 * another key is a miss. A file that is short, has another magic or fails its checksum is
 * reported and ignored: the module is compiled again and the file replaced.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { writeFileAtomic } from '../persistence/atomic-file.js';
import { librarySources } from './asc.js';

export const MODULE_FILE = 'rules-module.bin';
const MAGIC = Buffer.from('EDBRWASM', 'ascii');
const HEADER = MAGIC.length + 32 + 32;

let ascVersion: string | undefined;
function assemblyScriptVersion(): string {
  ascVersion ??= (createRequire(import.meta.url)('assemblyscript/package.json') as { version: string }).version;
  return ascVersion;
}

/** What a compiled module depends on, hashed. */
export function moduleKey(source: string, optimizeLevel: number): Buffer {
  const h = createHash('sha256');
  h.update(`asc ${assemblyScriptVersion()} -O${optimizeLevel}\n`);
  for (const [name, text] of librarySources()) h.update(`${name}\n${text.length}\n`).update(text);
  h.update('program.ts\n').update(source);
  return h.digest();
}

export type CacheLookup = { binary: Uint8Array } | { miss: 'none' | 'other document' } | { bad: string };

export class ModuleCache {
  readonly path: string;
  constructor(readonly dir: string) {
    this.path = join(dir, MODULE_FILE);
  }

  /** Synchronous: used on the main thread at start-up, before clients are let in. */
  read(key: Buffer): CacheLookup {
    let file: Buffer;
    try {
      file = readFileSync(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { miss: 'none' };
      return { bad: `cannot read ${this.path}: ${(err as Error).message}` };
    }
    if (file.length < HEADER + 8 || !file.subarray(0, MAGIC.length).equals(MAGIC)) return { bad: `${this.path} is not a compiled rules module` };
    if (!file.subarray(8, 40).equals(key)) return { miss: 'other document' };
    const binary = file.subarray(HEADER);
    if (!createHash('sha256').update(binary).digest().equals(file.subarray(40, HEADER))) return { bad: `${this.path} fails its checksum` };
    // a copy with a buffer of its own: the worker transfers it (a small file's Buffer may share Node's pool)
    return { binary: new Uint8Array(binary) };
  }

  async write(key: Buffer, binary: Uint8Array): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const sum = createHash('sha256').update(binary).digest();
    await writeFileAtomic(this.path, [MAGIC, key, sum, binary]);
  }
}
