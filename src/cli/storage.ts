/**
 * `edb storage show`: generations, sizes, the oldest message, retained count and the
 * persistent sessions with their lag, read from the storage folder (read-only; safe while
 * the broker runs). The folder is <EDB_DATA_DIR>/storage, or --data-dir's.
 */
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { formatStorageReport, inspectStorage } from '../storage/inspect.js';

export function register(program: Command): void {
  const storage = program.command('storage').description('durable storage (EDB_STORAGE=durable)');
  storage
    .command('show')
    .description('generations, sizes, oldest message, sessions and their lag')
    .option('-d, --data-dir <dir>', 'data folder (default: EDB_DATA_DIR or ./data)')
    .option('--json', 'print JSON')
    .action((opts: { dataDir?: string; json?: boolean }) => {
      const dir = resolve(join(opts.dataDir ?? process.env['EDB_DATA_DIR'] ?? './data', 'storage'));
      try {
        const report = inspectStorage(dir);
        process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatStorageReport(report));
      } catch (err) {
        process.stderr.write(`edb storage show: ${(err as Error).message}\n`);
        process.exitCode = 2;
      }
    });
}
