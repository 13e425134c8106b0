/**
 * The active document's author: who uploaded it (kept beside the document in the data folder,
 * so a restart knows it), the upload-time check of a new document against their rights
 * (author-check.ts), and the run-time checks it installs on the outputs (outputs.ts).
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { checkAuthorAccess, type AuthorAccess, type AuthorKeyAccess, type RulesAuthor } from './author-check.js';
import { parseJsonText } from './check.js';
import type { RuleOutputs } from './outputs.js';

/** The topic ACL as it applies to a document's author; `enabled` false when no ACL is configured. */
export interface AuthorTopicRights {
  enabled(): boolean;
  forUser(user: string): AuthorAccess & { canWrite(topic: string): boolean };
}

/** The state store's per-key authorization as it applies to a document's author. */
export interface AuthorKeyRights {
  enabled(): boolean;
  forUser(user: string): AuthorKeyAccess;
}

/** Concrete keys decided per author before the cache starts again (devices repeat their keys). */
const KEY_DECISIONS = 4096;

/** A per-key decision, remembered for the keys seen last (devices repeat their keys). */
function decider(decide: (key: string) => boolean): (key: string) => boolean {
  const decided = new Map<string, boolean>();
  return (key) => {
    let ok = decided.get(key);
    if (ok === undefined) {
      if (decided.size >= KEY_DECISIONS) decided.clear();
      decided.set(key, (ok = decide(key)));
    }
    return ok;
  };
}

export class DocumentAuthor {
  current: (RulesAuthor & { at: string }) | undefined;
  /**
   * Set while the active document has an author and the state store authorizes keys: may it
   * read this key with state()? A denied read is an absent key (counted by the service).
   */
  stateReadAllowed: ((key: string) => boolean) | undefined;

  constructor(
    /** Where the record is kept (rules-author.json in the data folder). */
    private readonly path: string,
    private readonly outputs: RuleOutputs,
    private readonly log: Logger,
    private readonly topics?: AuthorTopicRights,
    private readonly keys?: AuthorKeyRights,
  ) {}

  /**
   * Throws a 403 RulesError when a document (its texts: a PATCH is checked with what it
   * keeps) would act outside the author's rights. Trusted uploads (no user) are not checked.
   */
  check(author: RulesAuthor | undefined, ...texts: string[]): void {
    if (author?.user === undefined) return;
    const access = this.topics?.enabled() ? this.topics.forUser(author.user) : undefined;
    const keyAccess = this.keys?.enabled() ? this.keys.forUser(author.user) : undefined;
    if (!access && !keyAccess) return;
    for (const text of texts) {
      let doc: unknown;
      try {
        doc = parseJsonText(text);
      } catch {
        continue; // the compiler reports it
      }
      checkAuthorAccess(doc, access, author.user, keyAccess);
    }
  }

  /** The author of the document now active: installs the run-time checks for their rights. */
  set(author: RulesAuthor | undefined, at = new Date().toISOString()): void {
    this.current = author ? { ...author, at } : undefined;
    const user = author?.user;
    const topics = this.topics;
    if (user === undefined || !topics) this.outputs.outputAllowed = undefined;
    else {
      const view = topics.forUser(user);
      this.outputs.outputAllowed = (topic) => !topics.enabled() || view.canWrite(topic);
    }
    const keys = this.keys;
    if (user === undefined || !keys || !keys.enabled()) {
      this.outputs.stateWriteAllowed = undefined;
      this.stateReadAllowed = undefined;
    } else {
      const view = keys.forUser(user);
      this.outputs.stateWriteAllowed = decider((key) => view.canWriteKey(key));
      this.stateReadAllowed = decider((key) => view.canReadKey(key));
    }
  }

  /** Records the author with the document's ETag (a failure is logged: the upload stands). */
  async save(etag: string): Promise<void> {
    try {
      await writeFile(this.path, JSON.stringify({ etag, ...(this.current ?? {}) }) + '\n');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot record the rules document author');
    }
  }

  /** At start: the recorded author, when it was recorded for the document now active. */
  async restore(etag: string): Promise<void> {
    try {
      const saved = JSON.parse(await readFile(this.path, 'utf8')) as { etag?: unknown; user?: unknown; via?: unknown; at?: unknown };
      if (saved.etag === etag && typeof saved.via === 'string') {
        this.set({ user: typeof saved.user === 'string' ? saved.user : undefined, via: saved.via }, typeof saved.at === 'string' ? saved.at : undefined);
      }
    } catch {
      // no record: a document from before authors were recorded
    }
  }
}
