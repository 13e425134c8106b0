/**
 * Re-reading the password file and the ACL: on SIGHUP and when the files change (fs.watch on
 * their folders, debounced). Reloads never overlap: one asked for while another runs makes
 * that one run once more when it ends. A file that no longer parses is reported by the
 * caller's reloadOnce and the previous rules stay in force.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from 'pino';

export class AuthReloader {
  private running: Promise<void> | null = null;
  private again = false;

  constructor(private readonly reloadOnce: () => Promise<void>) {}

  /** Resolves once the rules read by this (or a coalesced later) reload are in force or rejected. */
  reload(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.reloadOnce();
      } while (this.again);
      this.running = null;
    })();
    return this.running;
  }

  /** The reload in progress, if any. */
  get pending(): Promise<void> | null {
    return this.running;
  }
}

/**
 * Calls `onChange` (debounced by `debounceMs`) when one of `files` changes. The folder is
 * watched, not the file: editors and `edb passwd` replace the file by rename.
 */
export class AuthFileWatcher {
  private readonly watchers: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | undefined;

  constructor(files: readonly (string | null | undefined)[], debounceMs: number, onChange: () => void, log: Logger) {
    const watched = new Map<string, Set<string>>();
    for (const file of files) {
      if (!file) continue;
      const dir = dirname(resolve(file));
      if (!watched.has(dir)) watched.set(dir, new Set());
      watched.get(dir)!.add(basename(file));
    }
    for (const [dir, names] of watched) {
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => {
          if (name !== null && !names.has(name.toString())) return;
          clearTimeout(this.debounce);
          this.debounce = setTimeout(onChange, debounceMs);
        });
        w.on('error', (err) => log.warn({ err: err.message, dir }, 'cannot watch auth files; SIGHUP still reloads'));
        this.watchers.push(w);
      } catch (err) {
        log.warn({ err: (err as Error).message, dir }, 'cannot watch auth files; SIGHUP still reloads');
      }
    }
  }

  close(): void {
    clearTimeout(this.debounce);
    for (const w of this.watchers) w.close();
  }
}
