/**
 * Backup and restore across restarts: a registry of snapshot sections, the snapshot file
 * in the backup folder (EDB_BACKUP_DIR, default <dataDir>/backup), an optional periodic
 * snapshot (EDB_BACKUP_INTERVAL seconds), and the restore at start.
 *
 *   const backup = createBackupManager(config, log);
 *   backup.register(stateStore.snapshotSection());   // and the broker's, the rules'
 *   await backup.restore();                          // before listeners open
 *   backup.startPeriodic();
 *   ...on SIGTERM/SIGINT, after clients are disconnected:
 *   await backup.save();                             // then backup.close()
 */
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { readSnapshot, removeFile, writeSnapshot, type SnapshotSection } from './snapshot.js';

export const SNAPSHOT_FILE = 'snapshot.edb';

export interface RestoreOutcome {
  /** "none": no backup; "restored"; "discarded": a bad backup was logged, deleted and ignored. */
  status: 'none' | 'restored' | 'discarded';
  sections: string[];
  error?: string;
  ms: number;
}

export class BackupManager {
  private readonly sections = new Map<string, SnapshotSection>();
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<number> | undefined;
  readonly file: string;

  constructor(
    readonly dir: string,
    private readonly log: Logger,
    private readonly intervalSeconds = 0,
    /** false: restore() and save() do nothing (EDB_BACKUP=false). */
    readonly enabled = true,
  ) {
    this.file = join(dir, SNAPSHOT_FILE);
  }

  /** Add a section; names are unique. Register everything before restore(). */
  register(section: SnapshotSection): void {
    if (this.sections.has(section.name)) throw new Error(`snapshot section "${section.name}" is registered twice`);
    this.sections.set(section.name, section);
  }

  registered(): string[] {
    return [...this.sections.keys()];
  }

  /**
   * Restore the backup, if there is one, then delete it. A backup that fails its checksum,
   * does not parse, or that a section refuses is logged and deleted, every section is
   * reset, and the broker starts clean: never throws.
   */
  async restore(): Promise<RestoreOutcome> {
    const started = performance.now();
    if (!this.enabled || !existsSync(this.file)) return { status: 'none', sections: [], ms: 0 };
    const applied: string[] = [];
    try {
      const snap = await readSnapshot(this.file);
      for (const [name, data] of snap.sections) {
        const section = this.sections.get(name);
        if (!section) {
          this.log.warn({ section: name }, 'backup: no part of the broker claims this section; skipped');
          continue;
        }
        await section.restore(data);
        applied.push(name);
      }
      await removeFile(this.file);
      const ms = Math.round(performance.now() - started);
      this.log.info({ file: this.file, sections: applied, ms, createdAt: new Date(snap.createdAt).toISOString() }, 'backup restored');
      return { status: 'restored', sections: applied, ms };
    } catch (err) {
      const message = (err as Error).message;
      this.log.error({ file: this.file, err: message }, 'backup is unusable; deleted it and starting clean');
      for (const section of this.sections.values()) {
        try {
          await section.reset?.();
        } catch (resetErr) {
          this.log.error({ section: section.name, err: (resetErr as Error).message }, 'backup: reset failed');
        }
      }
      await removeFile(this.file).catch(() => undefined);
      return { status: 'discarded', sections: [], error: message, ms: Math.round(performance.now() - started) };
    }
  }

  /** Write a snapshot of every section now. Concurrent calls share one write. */
  async save(): Promise<number> {
    if (!this.enabled) return 0;
    if (this.saving) return this.saving;
    this.saving = (async () => {
      const started = performance.now();
      const parts: { name: string; data: Buffer }[] = [];
      for (const section of this.sections.values()) parts.push({ name: section.name, data: await section.save() });
      const bytes = await writeSnapshot(this.file, parts);
      this.log.info({ file: this.file, bytes, sections: parts.map((p) => p.name), ms: Math.round(performance.now() - started) }, 'backup written');
      return bytes;
    })();
    try {
      return await this.saving;
    } finally {
      this.saving = undefined;
    }
  }

  /** Periodic snapshots, when EDB_BACKUP_INTERVAL > 0: bounds what a crash can lose. */
  startPeriodic(): void {
    if (!this.enabled || this.intervalSeconds <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      this.save().catch((err: Error) => this.log.error({ err: err.message }, 'periodic backup failed'));
    }, this.intervalSeconds * 1000);
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.saving) await this.saving.catch(() => undefined);
  }
}

/** The backup folder: EDB_BACKUP_DIR, or <dataDir>/backup. */
export function backupDir(config: Config): string {
  return resolve(config.backupDir ?? join(config.dataDir, 'backup'));
}

export function createBackupManager(config: Config, log: Logger): BackupManager {
  return new BackupManager(backupDir(config), log, config.backupInterval, config.backupEnabled);
}
