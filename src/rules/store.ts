/** The active document on disk: `<dataDir>/rules.json`, replaced atomically (tmp, fsync, rename, fsync dir). */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export const DOCUMENT_FILE = 'rules.json';

export async function writeFileAtomic(path: string, data: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data, 'utf8');
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  // make the rename itself durable
  try {
    const dir = await open(dirname(path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch {
    // some file systems cannot fsync a directory; the rename is still atomic
  }
}

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
  write(text: string): Promise<void> {
    return writeFileAtomic(this.path, text);
  }
}
