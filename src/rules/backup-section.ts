/**
 * The rules' section of the shutdown backup (src/persistence/backup.ts): the rule buffer,
 * saved with the document's ETag and put back once the same document is active again (a
 * different document starts with an empty buffer), and the statements' memory, put back into
 * the statements with the same topic and condition of whichever document is active. The
 * backup may be read before or after the stored document has compiled: what it holds waits
 * until there is a program to put it into.
 */
import type { Logger } from 'pino';
import type { SnapshotSection } from '../persistence/snapshot.js';
import { decodeMemory, encodeMemory } from './memory-codec.js';
import type { BufferedEntry, RulesProgram, StatementMemory } from './runtime.js';

/** What the section needs of the service: the active program, its ETag and rule statement ids. */
export interface ActiveProgram {
  program: RulesProgram | undefined;
  etag: string;
  statementIds: readonly number[];
}

export class RulesBackup implements SnapshotSection {
  readonly name = 'rules';
  private savedBuffer: { etag: string; entries: BufferedEntry[] } | undefined;
  private savedMemory: StatementMemory[] | undefined;

  constructor(
    private readonly active: () => ActiveProgram,
    private readonly log: Logger,
  ) {}

  save(): Buffer {
    const { program, etag } = this.active();
    const entries = program?.bufferSnapshot() ?? [];
    const memory = program ? encodeMemory(program.memorySnapshot()) : [];
    return Buffer.from(
      JSON.stringify({ etag, entries: entries.map((e) => ({ topic: e.topic.toString('base64'), payload: e.payload.toString('base64'), ids: e.statementIds })), memory }),
    );
  }

  restore(data: Buffer): void {
    const raw = JSON.parse(data.toString('utf8')) as { etag?: unknown; entries?: unknown; memory?: unknown };
    if (raw.memory !== undefined) {
      this.savedMemory = decodeMemory(raw.memory);
      this.applyMemory();
    }
    if (typeof raw.etag !== 'string' || !Array.isArray(raw.entries)) throw new Error('rules section: expected {etag, entries}');
    const entries = raw.entries.map((e: { topic?: unknown; payload?: unknown; ids?: unknown }) => {
      if (typeof e.topic !== 'string' || typeof e.payload !== 'string' || !Array.isArray(e.ids) || !e.ids.every((id) => Number.isInteger(id))) {
        throw new Error('rules section: bad buffer entry');
      }
      return { topic: Buffer.from(e.topic, 'base64'), payload: Buffer.from(e.payload, 'base64'), statementIds: e.ids as number[] };
    });
    this.savedBuffer = { etag: raw.etag, entries };
    this.applyBuffer();
  }

  reset(): void {
    this.savedBuffer = undefined;
    this.savedMemory = undefined;
  }

  /** A restored rule buffer waits for a program (none is active yet: compiling at start). */
  get pending(): boolean {
    return this.savedBuffer !== undefined && this.active().program === undefined;
  }

  /** The saved rule buffer, once the document it was saved with is active. */
  applyBuffer(): void {
    const { program, etag, statementIds } = this.active();
    const saved = this.savedBuffer;
    if (!saved || !program || saved.etag !== etag) return;
    program.restoreBuffer(saved.entries, new Set(statementIds));
    this.log.info({ entries: saved.entries.length }, 'rule buffer restored');
    this.savedBuffer = undefined;
  }

  /** The saved memory, into the statements of the active document with the same topic and condition. */
  applyMemory(): void {
    const { program } = this.active();
    if (!this.savedMemory || !program) return;
    const n = program.restoreMemory(this.savedMemory);
    this.log.info({ topics: n }, 'rules memory restored');
    this.savedMemory = undefined;
  }
}
