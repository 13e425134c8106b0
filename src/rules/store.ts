/** The active document on disk: `<dataDir>/rules.json`, replaced atomically (tmp, fsync, rename, fsync dir). */
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../persistence/atomic-file.js';

export const DOCUMENT_FILE = 'rules.json';

export class DocumentStore {
  readonly path: string;
  constructor(dataDir: string) {
    this.path = join(dataDir, DOCUMENT_FILE);
  }
  /** The stored text, or undefined when there is none. */
  async read(): Promise<string | undefined> {
    try {
      return await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }
  async write(text: string): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    await writeFileAtomic(this.path, text);
  }
}
