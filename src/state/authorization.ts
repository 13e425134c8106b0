/**
 * Per-key authorization for the state store, from the config file section
 * `stateStore.authorization`:
 *
 *   stateStore:
 *     authorization:
 *       enabled: true                 # default: true when the section is present
 *       rules:
 *         - clientId: "sensor-*"      # who: globs on client id, user name, certificate
 *           username: "alice"         #   fields; all given must match; none = everyone
 *           certificate: { CN: "device-*" }
 *           access: readwrite         # read (GET, KEYNOTIFY), write (SET, DEL, VDEL), readwrite
 *           keys: ["config"]          # keys named exactly
 *           patterns: ["{clientId}/*"]  # glob patterns: * ? [0-9] [!a]
 *           base64Keys: ["AAEC"]      # binary keys, exactly
 *
 * `{clientId}` and `{username}` in keys and patterns stand for the requesting client's.
 * Keys are bytes: patterns match the key's bytes (a `?` is one byte; a pattern's own text
 * is taken as UTF-8). When authorization is enabled, what no rule grants is denied.
 */
import type { ValidateFunction } from 'ajv';
import { createAjv } from '../config/ajv.js';
import type { ClientInfo } from '../broker/hooks.js';

export type Access = 'read' | 'write';

export interface AuthorizationRule {
  clientId?: string;
  username?: string;
  certificate?: Record<string, string>;
  access: 'read' | 'write' | 'readwrite';
  keys?: string[];
  patterns?: string[];
  base64Keys?: string[];
}

export interface AuthorizationConfig {
  enabled?: boolean;
  rules?: AuthorizationRule[];
}

export interface StateStoreSection {
  /** Node id of the store's hybrid logical clock (default: "edb"). */
  nodeId?: string;
  authorization?: AuthorizationConfig;
}

const ruleSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['access'],
  properties: {
    clientId: { type: 'string', minLength: 1 },
    username: { type: 'string', minLength: 1 },
    certificate: { type: 'object', additionalProperties: { type: 'string' } },
    access: { enum: ['read', 'write', 'readwrite'] },
    keys: { type: 'array', items: { type: 'string', minLength: 1 } },
    patterns: { type: 'array', items: { type: 'string', minLength: 1 } },
    base64Keys: { type: 'array', items: { type: 'string', minLength: 1, pattern: '^[A-Za-z0-9+/]+={0,2}$' } },
  },
};

const sectionSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    nodeId: { type: 'string', minLength: 1, maxLength: 64 },
    authorization: {
      type: 'object',
      additionalProperties: false,
      properties: {
        enabled: { type: 'boolean' },
        rules: { type: 'array', items: ruleSchema },
      },
    },
  },
};

// Compiled on first use: a broker without a `stateStore` section never pays for it at start.
let sectionValidator: ValidateFunction | undefined;

export class StateStoreConfigError extends Error {
  readonly code = 'EDB_CONFIG_INVALID';
}

/** Validate `config.sections.stateStore`; throws StateStoreConfigError naming the problem. */
export function parseStateStoreSection(raw: unknown): StateStoreSection {
  if (raw === undefined || raw === null) return {};
  const validateSection = (sectionValidator ??= createAjv({ allErrors: false }).compile(sectionSchema));
  if (!validateSection(raw)) {
    const e = validateSection.errors![0]!;
    const where = `stateStore${e.instancePath.replace(/\//g, '.')}`;
    const extra = e.keyword === 'additionalProperties' ? ` "${String(e.params['additionalProperty'])}"` : '';
    throw new StateStoreConfigError(`${where}: ${e.message ?? 'invalid'}${extra}`);
  }
  const section = raw as StateStoreSection;
  // base64 must round-trip, so a typo is caught here rather than never matching
  for (const [i, rule] of (section.authorization?.rules ?? []).entries()) {
    for (const k of rule.base64Keys ?? []) {
      if (Buffer.from(k, 'base64').toString('base64') !== k) {
        throw new StateStoreConfigError(`stateStore.authorization.rules.${i}.base64Keys: "${k}" is not canonical base64`);
      }
    }
  }
  return section;
}

/** A glob over latin1 text (one char per byte) as a RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = '^';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') re += '[\\s\\S]*';
    else if (c === '?') re += '[\\s\\S]';
    else if (c === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close < 0) {
        re += '\\[';
        continue;
      }
      let body = glob.slice(i + 1, close);
      let negate = false;
      if (body[0] === '!' || body[0] === '^') {
        negate = true;
        body = body.slice(1);
      }
      re += `[${negate ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
      i = close;
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`${re}$`);
}

function escapeGlob(s: string): string {
  return s.replace(/[*?[\]]/g, '[$&]');
}

const utf8ToLatin1 = (s: string) => Buffer.from(s, 'utf8').toString('latin1');

interface CompiledRule {
  who: ((c: ClientInfo) => boolean)[];
  read: boolean;
  write: boolean;
  exact: string[]; // latin1, may contain {clientId}/{username}
  patterns: string[];
  binary: Set<string>;
}

export class StateStoreAuthorizer {
  readonly enabled: boolean;
  private readonly rules: CompiledRule[];
  private readonly regexCache = new Map<string, RegExp>();

  constructor(config: AuthorizationConfig | undefined) {
    this.enabled = config !== undefined && config.enabled !== false;
    this.rules = (config?.rules ?? []).map((r) => {
      const who: ((c: ClientInfo) => boolean)[] = [];
      if (r.clientId !== undefined) {
        const re = globToRegExp(r.clientId);
        who.push((c) => re.test(c.clientId));
      }
      if (r.username !== undefined) {
        const re = globToRegExp(r.username);
        who.push((c) => c.username !== undefined && re.test(c.username));
      }
      for (const [field, pattern] of Object.entries(r.certificate ?? {})) {
        const re = globToRegExp(pattern);
        who.push((c) => {
          const v = c.certificateFields?.[field];
          return v !== undefined && re.test(v);
        });
      }
      return {
        who,
        read: r.access !== 'write',
        write: r.access !== 'read',
        exact: (r.keys ?? []).map(utf8ToLatin1),
        patterns: (r.patterns ?? []).map(utf8ToLatin1),
        binary: new Set((r.base64Keys ?? []).map((k) => Buffer.from(k, 'base64').toString('latin1'))),
      };
    });
  }

  /** Whether the client may read or write the key. Always true when authorization is off. */
  allowed(client: ClientInfo, key: Buffer, access: Access): boolean {
    if (!this.enabled) return true;
    const k = key.toString('latin1');
    const id = utf8ToLatin1(client.clientId);
    const user = client.username === undefined ? undefined : utf8ToLatin1(client.username);
    for (const rule of this.rules) {
      if (access === 'read' ? !rule.read : !rule.write) continue;
      if (!rule.who.every((m) => m(client))) continue;
      if (rule.binary.has(k)) return true;
      for (const name of rule.exact) {
        const expanded = expand(name, id, user, false);
        if (expanded !== undefined && expanded === k) return true;
      }
      for (const p of rule.patterns) {
        const expanded = expand(p, id, user, true);
        if (expanded !== undefined && this.regex(expanded).test(k)) return true;
      }
    }
    return false;
  }

  /**
   * Whether at least one key matching `glob` (glob text as in `patterns`, taken as UTF-8)
   * may be read or written: false means no key of it ever can. The rules engine checks a
   * `set_state` key template with it at upload (src/rules/author-check.ts), before the
   * concrete keys are checked one by one at run time.
   */
  allowedSome(client: ClientInfo, glob: string, access: Access): boolean {
    if (!this.enabled) return true;
    const g = utf8ToLatin1(glob);
    const tokens = globTokens(g);
    const id = utf8ToLatin1(client.clientId);
    const user = client.username === undefined ? undefined : utf8ToLatin1(client.username);
    for (const rule of this.rules) {
      if (access === 'read' ? !rule.read : !rule.write) continue;
      if (!rule.who.every((m) => m(client))) continue;
      for (const k of rule.binary) if (this.regex(g).test(k)) return true;
      for (const name of rule.exact) {
        const expanded = expand(name, id, user, false);
        if (expanded !== undefined && this.regex(g).test(expanded)) return true;
      }
      for (const p of rule.patterns) {
        const expanded = expand(p, id, user, true);
        if (expanded !== undefined && globsIntersect(tokens, globTokens(expanded))) return true;
      }
    }
    return false;
  }

  private regex(glob: string): RegExp {
    let re = this.regexCache.get(glob);
    if (!re) {
      if (this.regexCache.size > 4096) this.regexCache.clear();
      re = globToRegExp(glob);
      this.regexCache.set(glob, re);
    }
    return re;
  }
}

/** Substitute {clientId} / {username}; undefined when {username} is needed and absent. */
function expand(template: string, clientId: string, username: string | undefined, glob: boolean): string | undefined {
  if (!template.includes('{')) return template;
  if (template.includes('{username}') && username === undefined) return undefined;
  const q = glob ? escapeGlob : (s: string) => s;
  return template.replaceAll('{clientId}', q(clientId)).replaceAll('{username}', q(username ?? ''));
}

/** A glob as tokens: `null` for `*`, else the set of bytes one position accepts. */
type GlobToken = Uint8Array | null;
const ANY_BYTE = new Uint8Array(256).fill(1);

/** Tokens of a latin1 glob, read exactly as globToRegExp reads it. */
function globTokens(glob: string): GlobToken[] {
  const out: GlobToken[] = [];
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (out[out.length - 1] !== null) out.push(null); // ** is *
      continue;
    }
    if (c === '?') {
      out.push(ANY_BYTE);
      continue;
    }
    if (c === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close >= 0) {
        const re = globToRegExp(glob.slice(i, close + 1));
        const set = new Uint8Array(256);
        for (let b = 0; b < 256; b++) if (re.test(String.fromCharCode(b))) set[b] = 1;
        out.push(set);
        i = close;
        continue;
      }
    }
    const set = new Uint8Array(256);
    set[c.charCodeAt(0) & 0xff] = 1;
    out.push(set);
  }
  return out;
}

/** Does some string match both globs? A walk over pairs of positions (the product automaton). */
function globsIntersect(a: GlobToken[], b: GlobToken[]): boolean {
  const seen = new Uint8Array((a.length + 1) * (b.length + 1));
  const stack: number[] = [0, 0];
  while (stack.length > 0) {
    const j = stack.pop()!;
    const i = stack.pop()!;
    const at = i * (b.length + 1) + j;
    if (seen[at]) continue;
    seen[at] = 1;
    if (i === a.length && j === b.length) return true;
    const ta = i < a.length ? a[i] : undefined;
    const tb = j < b.length ? b[j] : undefined;
    // a star may match nothing
    if (ta === null) stack.push(i + 1, j);
    if (tb === null) stack.push(i, j + 1);
    if (ta === undefined || tb === undefined) continue;
    // one byte both accept: a star stays where it is, a set moves on
    const sa = ta ?? ANY_BYTE;
    const sb = tb ?? ANY_BYTE;
    let both = false;
    for (let c = 0; c < 256 && !both; c++) both = sa[c] === 1 && sb[c] === 1;
    if (both) stack.push(ta === null ? i : i + 1, tb === null ? j : j + 1);
  }
  return false;
}
