/**
 * Replacing a file atomically: a temporary file beside it (readable by its owner only),
 * fsync, rename over the old one, then fsync of the folder so the rename itself survives a
 * crash. A reader sees the old file or the new one, never a part of either; when anything
 * fails the temporary file is removed and the old file stays. The folder must exist.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function writeFileAtomic(path: string, data: string | readonly Uint8Array[]): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fh = await open(tmp, 'w', 0o600);
    try {
      if (typeof data === 'string') await fh.writeFile(data, 'utf8');
      else {
        for (const part of data) {
          let off = 0;
          while (off < part.length) off += (await fh.write(part, off, part.length - off)).bytesWritten;
        }
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    // a full disk or a vanished folder: the previous file stays, not a partial temporary one
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  try {
    const dir = await open(dirname(path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch {
    // some file systems cannot fsync a folder; the rename is still atomic
  }
}
