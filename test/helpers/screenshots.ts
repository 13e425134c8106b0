/**
 * Where the browser tests put their screenshots: docs/console/ (the pictures of
 * docs/console.md) with EDB_UPDATE_SCREENSHOTS=1, else a folder under the system's temp
 * directory, so `npm test` never rewrites tracked files.
 */
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function screenshotDir(): string {
  const dir = process.env['EDB_UPDATE_SCREENSHOTS'] === '1' ? join(process.cwd(), 'docs', 'console') : join(tmpdir(), 'edb-screenshots');
  mkdirSync(dir, { recursive: true });
  return dir;
}
