import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ValidateFunction } from 'ajv';
import { createAjv } from '../config/ajv.js';
import { filterWithin, matchLevels } from '../topics/match.js';
import { isValidTopicFilter, parseSharedFilter } from '../topics/validate.js';

/**
 * Topic access control in the mosquitto / VerneMQ ACL file format:
 *
 *   # lines before any `user` line apply to anonymous clients
 *   topic read $SYS/#
 *   user alice
 *   topic readwrite alice/#          # access word optional: readwrite
 *   topic deny alice/secret/#        # deny beats any grant
 *   pattern readwrite clients/%c/#   # patterns apply to every client, wherever they appear
 *   pattern read users/%u/inbox
 *
 * Decision for a client: any matching `deny` rule refuses; otherwise a matching grant of the
 * needed access allows; otherwise refused (once an ACL is configured, everything not granted
 * is denied). PUBLISH and delivery check the topic name; SUBSCRIBE checks that the filter lies
 * inside a readable filter (a subscription to "a/#" needs read on "a/#" or wider) and is not
 * wholly inside a denied one. Deny rules that only overlap a subscription are enforced per
 * message on delivery.
 *
 * `%c` / `%u` must be a whole level. A client whose id or user name contains '/', '+' or
 * '#' (or an anonymous client, for %u) gets no grant from that pattern; a deny pattern then
 * applies with '+' in that level, so it errs on the side of refusing.
 */

export type Access = 'read' | 'write' | 'readwrite' | 'deny';

export interface AclRule {
  access: Access;
  /** The filter as written (may contain %c / %u for patterns). */
  topic: string;
  pattern: boolean;
  /** Where it came from, for messages ("acl.conf:12"). */
  source?: string;
}

export interface AclDocument {
  anonymous: AclRule[];
  users: Map<string, AclRule[]>;
  patterns: AclRule[];
}

export class AclError extends Error {
  readonly code = 'EDB_ACL_INVALID';
}

const ACCESS_WORDS = new Set<Access>(['read', 'write', 'readwrite', 'deny']);

export function emptyAcl(): AclDocument {
  return { anonymous: [], users: new Map(), patterns: [] };
}

function checkRule(rule: AclRule, where: string): void {
  if (!isValidTopicFilter(rule.topic)) throw new AclError(`${where}: "${rule.topic}" is not a valid topic filter`);
  const levels = rule.topic.split('/');
  for (const level of levels) {
    if (/%[cu]/.test(level) && level !== '%c' && level !== '%u') {
      throw new AclError(`${where}: %c and %u must be a whole topic level, as in "clients/%c/#"`);
    }
    if (!rule.pattern && (level === '%c' || level === '%u')) {
      // mosquitto treats these literally in `topic` lines; say so rather than surprise.
      throw new AclError(`${where}: %c / %u are substituted only in "pattern" lines, not in "topic" lines`);
    }
  }
}

/** Parse the text of a mosquitto-format ACL file. Throws AclError naming the line. */
export function parseAcl(text: string, source = 'acl'): AclDocument {
  const doc = emptyAcl();
  let current: AclRule[] = doc.anonymous;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${source}:${i + 1}`;
    const space = line.search(/\s/);
    const keyword = space < 0 ? line : line.slice(0, space);
    const rest = space < 0 ? '' : line.slice(space).trim();
    switch (keyword) {
      case 'user': {
        if (rest === '') throw new AclError(`${where}: "user" needs a user name`);
        let rules = doc.users.get(rest);
        if (!rules) doc.users.set(rest, (rules = []));
        current = rules;
        break;
      }
      case 'topic':
      case 'pattern': {
        if (rest === '') throw new AclError(`${where}: "${keyword}" needs a topic filter`);
        const m = /^(\S+)\s+(.+)$/.exec(rest);
        let access: Access = 'readwrite';
        let topic = rest;
        if (m && ACCESS_WORDS.has(m[1] as Access)) {
          access = m[1] as Access;
          topic = m[2]!.trim();
        } else if (ACCESS_WORDS.has(rest as Access)) {
          throw new AclError(`${where}: "${keyword} ${rest}" needs a topic filter after the access type`);
        }
        const rule: AclRule = { access, topic, pattern: keyword === 'pattern', source: where };
        checkRule(rule, where);
        if (rule.pattern) doc.patterns.push(rule);
        else current.push(rule);
        break;
      }
      default:
        throw new AclError(`${where}: unknown keyword "${keyword}" (expected user, topic or pattern)`);
    }
  }
  return doc;
}

export function loadAclFileSync(path: string): AclDocument {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new AclError(`${path}: cannot read the ACL file: ${(err as Error).message}`);
  }
  return parseAcl(text, path);
}

export async function loadAclFile(path: string): Promise<AclDocument> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new AclError(`${path}: cannot read the ACL file: ${(err as Error).message}`);
  }
  return parseAcl(text, path);
}

// ---------------------------------------------------------------------------------------
// The `acl` section of the config file.

const ruleSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['topic'],
  properties: {
    topic: { type: 'string', minLength: 1 },
    access: { enum: ['read', 'write', 'readwrite', 'deny'] },
  },
};

const aclSectionSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    anonymous: { type: 'array', items: ruleSchema },
    users: { type: 'object', additionalProperties: { type: 'array', items: ruleSchema } },
    patterns: { type: 'array', items: ruleSchema },
  },
};

// Compiled on first use: a broker without an `acl` section never pays for it at start.
let aclSectionValidator: ValidateFunction | undefined;

interface SectionRule {
  topic: string;
  access?: Access;
}
interface AclSection {
  anonymous?: SectionRule[];
  users?: Record<string, SectionRule[]>;
  patterns?: SectionRule[];
}

/**
 * The config file's `acl` section: either the ACL file text as a string (YAML block) or
 *
 *   acl:
 *     anonymous: [{ topic: "public/#", access: read }]
 *     users:
 *       alice: [{ topic: "alice/#" }]
 *     patterns: [{ topic: "clients/%c/#", access: readwrite }]
 */
export function parseAclSection(section: unknown, source = 'acl (config file)'): AclDocument {
  if (typeof section === 'string') return parseAcl(section, source);
  const validateAclSection = (aclSectionValidator ??= createAjv({ allErrors: false }).compile(aclSectionSchema));
  if (!validateAclSection(section)) {
    const e = validateAclSection.errors![0]!;
    const path = e.instancePath.replace(/^\//, '').replace(/\//g, '.');
    const extra = e.keyword === 'additionalProperties' ? ` ("${String(e.params['additionalProperty'])}")` : '';
    throw new AclError(`${source}${path ? '.' + path : ''}: ${e.message ?? 'invalid'}${extra}; expected a string in the ACL file format or { anonymous, users, patterns }`);
  }
  const s = section as AclSection;
  const doc = emptyAcl();
  const convert = (list: SectionRule[] | undefined, pattern: boolean, where: string): AclRule[] =>
    (list ?? []).map((r, i) => {
      const rule: AclRule = { access: r.access ?? 'readwrite', topic: r.topic, pattern, source: `${where}[${i}]` };
      checkRule(rule, rule.source!);
      return rule;
    });
  doc.anonymous = convert(s.anonymous, false, `${source}.anonymous`);
  for (const [user, list] of Object.entries(s.users ?? {})) doc.users.set(user, convert(list, false, `${source}.users.${user}`));
  doc.patterns = convert(s.patterns, true, `${source}.patterns`);
  return doc;
}

/** Union of two documents (file and config section): rules add up. */
export function mergeAcl(a: AclDocument, b: AclDocument): AclDocument {
  const users = new Map<string, AclRule[]>();
  for (const [u, r] of a.users) users.set(u, [...r]);
  for (const [u, r] of b.users) users.set(u, [...(users.get(u) ?? []), ...r]);
  return { anonymous: [...a.anonymous, ...b.anonymous], users, patterns: [...a.patterns, ...b.patterns] };
}

// ---------------------------------------------------------------------------------------
// Evaluation.

/** The rules that apply to one client, with %c / %u substituted and filters split. */
export class ClientAcl {
  private readonly deny: string[][] = [];
  private readonly read: string[][] = [];
  private readonly write: string[][] = [];
  /** Small per-client memo of topic decisions; delivery to a subscriber repeats topics a lot. */
  private readonly readCache = new Map<string, boolean>();
  private readonly writeCache = new Map<string, boolean>();
  private static readonly CACHE_LIMIT = 256;

  constructor(
    doc: AclDocument,
    readonly clientId: string,
    readonly username: string | undefined,
    readonly generation = 0,
  ) {
    const own = username === undefined ? doc.anonymous : (doc.users.get(username) ?? []);
    for (const rule of own) this.add(rule.access, rule.topic.split('/'));
    for (const rule of doc.patterns) {
      const levels = rule.topic.split('/');
      let usable = true;
      for (let i = 0; i < levels.length; i++) {
        const level = levels[i];
        if (level !== '%c' && level !== '%u') continue;
        const value = level === '%c' ? clientId : username;
        if (value === undefined || /[/+#]/.test(value)) {
          usable = false;
          levels[i] = '+';
        } else {
          levels[i] = value;
        }
      }
      if (usable || rule.access === 'deny') this.add(rule.access, levels);
    }
  }

  private add(access: Access, levels: string[]): void {
    if (access === 'deny') this.deny.push(levels);
    if (access === 'read' || access === 'readwrite') this.read.push(levels);
    if (access === 'write' || access === 'readwrite') this.write.push(levels);
  }

  private decide(topic: string, grants: string[][], cache: Map<string, boolean>): boolean {
    const hit = cache.get(topic);
    if (hit !== undefined) return hit;
    const levels = topic.split('/');
    let allowed = false;
    if (!this.deny.some((f) => matchLevels(f, levels))) allowed = grants.some((f) => matchLevels(f, levels));
    if (cache.size >= ClientAcl.CACHE_LIMIT) cache.clear();
    cache.set(topic, allowed);
    return allowed;
  }

  /** May this client publish to `topic` (a topic name)? */
  canWrite(topic: string): boolean {
    return this.decide(topic, this.write, this.writeCache);
  }

  /** May this client receive a message published to `topic`? */
  canRead(topic: string): boolean {
    return this.decide(topic, this.read, this.readCache);
  }

  /** May this client publish to every topic `filter` matches (no deny rule covering all of it)? */
  canWriteAll(filter: string): boolean {
    const levels = filter.split('/');
    if (this.deny.some((d) => filterWithin(levels, d))) return false;
    return this.write.some((g) => filterWithin(levels, g));
  }

  /** May this client subscribe to `filter` (shared subscriptions are checked on their inner filter)? */
  canSubscribe(filter: string): boolean {
    const inner = parseSharedFilter(filter)?.filter ?? filter;
    const levels = inner.split('/');
    if (this.deny.some((d) => filterWithin(levels, d))) return false;
    return this.read.some((g) => filterWithin(levels, g));
  }
}
