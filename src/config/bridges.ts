/**
 * Bridge settings: the `bridges:` section of the config file and the EDB_BRIDGE_<NAME>*
 * environment variables, in the shape the original VerneMQ deployment used
 * (DOCKER_VERNEMQ_VMQ_BRIDGE__TCP__BR0=host:port, ..._BR0__TOPIC__1="* in"):
 *
 *   EDB_BRIDGE_BR0=host:port                      the endpoint (mqtt:// or mqtts:// URL, or host:port)
 *   EDB_BRIDGE_BR0_TOPIC_1="* in"                 a topic line (any number, any order)
 *   EDB_BRIDGE_BR0_MAX_OUTGOING_BUFFERED_MESSAGES=100
 *   EDB_BRIDGE_BR0_<FIELD>=...                    every other field below, in upper snake case
 *
 * A topic line is mosquitto's and VerneMQ's `pattern [in|out|both [qos [local-prefix [remote-prefix]]]]`,
 * with `*` meaning `#` and `""` for an empty prefix. Each bad value is a ConfigError that
 * names the bridge and the field (the CLI exits 2). Pure parsing: nothing here connects.
 */
import { topicFilterProblem } from '../topics/validate.js';

export type BridgeDirection = 'in' | 'out' | 'both';

export interface BridgeTopic {
  /** As written (for display). */
  line: string;
  /** The topic filter, `*` already turned into `#`. */
  pattern: string;
  direction: BridgeDirection;
  qos: 0 | 1 | 2;
  /** Local topic = localPrefix + pattern-matched topic; remote topic = remotePrefix + the same. */
  localPrefix: string;
  remotePrefix: string;
}

export interface BridgeTls {
  ca?: string;
  cert?: string;
  key?: string;
  serverName?: string;
  /** Verify the remote's certificate (default true). */
  verify: boolean;
}

export interface BridgeConfig {
  name: string;
  /** mqtt://host:port or mqtts://host:port */
  url: string;
  topics: BridgeTopic[];
  protocolVersion: 4 | 5;
  clientId: string;
  username?: string;
  password?: string;
  keepAlive: number;
  /** Clean session on the remote (default false: the remote queues for us while we are away). */
  cleanSession: boolean;
  /** v5: Session Expiry Interval asked of the remote for a persistent session, seconds. */
  sessionExpiry: number;
  tls: BridgeTls;
  /** Reconnect back-off: from reconnectMinMs, doubling, up to reconnectMaxMs, with jitter. */
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** Buffer bounds (QoS 0 memory buffer and QoS 1/2 backlog each): messages, bytes, age (0 = none). */
  maxOutgoingBufferedMessages: number;
  maxOutgoingBufferedBytes: number;
  maxOutgoingBufferedAgeMs: number;
  /** QoS 1/2 messages sent to the remote and not yet acknowledged, at most. */
  maxInflight: number;
  /**
   * Loops: a message that has crossed this many bridges already (v5 user property
   * edb-bridge-path) is not forwarded over this one (docs/bridges.md, No loops).
   */
  maxHops: number;
  /** The local identity the ACL checks what this bridge publishes locally against. */
  localUsername?: string;
}

/** Thrown for a bad bridge setting; config/load.ts wraps it into its ConfigError. */
export class BridgeConfigError extends Error {
  readonly code = 'EDB_CONFIG_INVALID';
}

type FieldKind = 'string' | 'integer' | 'boolean' | 'duration' | 'version';

interface FieldSpec {
  key: keyof BridgeConfig | `tls.${keyof BridgeTls}`;
  kind: FieldKind;
  min?: number;
  max?: number;
  description: string;
}

/** Every field but the endpoint and the topics, by its config-file key. */
export const BRIDGE_FIELDS: Record<string, FieldSpec> = {
  clientId: { key: 'clientId', kind: 'string', description: 'client id on the remote (default edb-bridge-<name>)' },
  username: { key: 'username', kind: 'string', description: 'user name on the remote' },
  password: { key: 'password', kind: 'string', description: 'password on the remote' },
  protocolVersion: { key: 'protocolVersion', kind: 'version', description: 'MQTT version towards the remote: 3.1.1 (or 4) or 5 (default 5)' },
  keepAlive: { key: 'keepAlive', kind: 'integer', min: 1, max: 65535, description: 'keep alive towards the remote, seconds (default 60)' },
  cleanSession: { key: 'cleanSession', kind: 'boolean', description: 'clean session on the remote (default false)' },
  sessionExpiry: { key: 'sessionExpiry', kind: 'integer', min: 0, max: 4294967295, description: 'v5 session expiry asked of the remote, seconds (default 4294967295: never)' },
  tlsCa: { key: 'tls.ca', kind: 'string', description: 'PEM file of the CA that signed the remote\'s certificate' },
  tlsCert: { key: 'tls.cert', kind: 'string', description: 'PEM client certificate' },
  tlsKey: { key: 'tls.key', kind: 'string', description: 'PEM client key' },
  tlsServerName: { key: 'tls.serverName', kind: 'string', description: 'server name to verify (default the host)' },
  tlsVerify: { key: 'tls.verify', kind: 'boolean', description: 'verify the remote certificate (default true)' },
  reconnectMin: { key: 'reconnectMinMs', kind: 'duration', min: 10, description: 'first reconnect delay (default 1s)' },
  reconnectMax: { key: 'reconnectMaxMs', kind: 'duration', min: 10, description: 'longest reconnect delay (default 2m)' },
  maxOutgoingBufferedMessages: { key: 'maxOutgoingBufferedMessages', kind: 'integer', min: 1, description: 'messages buffered towards the remote, per QoS 0 buffer and per QoS 1/2 backlog (default 1000000)' },
  maxOutgoingBufferedBytes: { key: 'maxOutgoingBufferedBytes', kind: 'integer', min: 0, description: 'payload bytes buffered towards the remote (default 1073741824; 0 = no bound)' },
  maxOutgoingBufferedAge: { key: 'maxOutgoingBufferedAgeMs', kind: 'duration', min: 0, description: 'oldest message kept for the remote (default 0 = no bound)' },
  maxInflight: { key: 'maxInflight', kind: 'integer', min: 1, max: 65535, description: 'QoS 1/2 messages in flight to the remote (default 1000)' },
  maxHops: { key: 'maxHops', kind: 'integer', min: 1, max: 255, description: 'bridges a message may have crossed (v5 edb-bridge-path) and still be forwarded over this one (default 8)' },
  localUsername: { key: 'localUsername', kind: 'string', description: 'local identity for the ACL of what the bridge publishes here (default: none, like an anonymous client)' },
};

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;

function fail(bridge: string, field: string, message: string): never {
  throw new BridgeConfigError(`bridge ${bridge}: ${field}: ${message}`);
}

/** `pattern [in|out|both [qos [local-prefix [remote-prefix]]]]`; tokens may be "quoted" ("" is empty). */
export function parseTopicLine(line: string, bridge = '?', field = 'topic'): BridgeTopic {
  const tokens: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) tokens.push(m[1] ?? m[2] ?? m[3]!);
  if (tokens.length === 0) fail(bridge, field, 'empty topic line; expected "pattern [in|out|both [qos [local-prefix [remote-prefix]]]]"');
  if (tokens.length > 5) fail(bridge, field, `"${line}": too many words; expected "pattern [in|out|both [qos [local-prefix [remote-prefix]]]]"`);
  const [rawPattern, rawDirection = 'out', rawQos = '0', localPrefix = '', remotePrefix = ''] = tokens;
  const pattern = rawPattern === '*' ? '#' : rawPattern!.replace(/(^|\/)\*$/, '$1#');
  const problem = topicFilterProblem(pattern);
  if (problem) fail(bridge, field, `"${line}": the pattern ${pattern} is not a topic filter: ${problem}`);
  if (pattern.startsWith('$share/')) fail(bridge, field, `"${line}": a shared subscription cannot be bridged`);
  const direction = rawDirection.toLowerCase();
  if (direction !== 'in' && direction !== 'out' && direction !== 'both') fail(bridge, field, `"${line}": direction "${rawDirection}": use in, out or both`);
  if (!/^[012]$/.test(rawQos)) fail(bridge, field, `"${line}": qos "${rawQos}": use 0, 1 or 2`);
  for (const [what, prefix] of [['local prefix', localPrefix], ['remote prefix', remotePrefix]] as const) {
    if (/[#+\0]/.test(prefix)) fail(bridge, field, `"${line}": the ${what} "${prefix}" may not hold # or +`);
  }
  return { line, pattern, direction, qos: Number(rawQos) as 0 | 1 | 2, localPrefix, remotePrefix };
}

/** host:port, mqtt://host[:port] or mqtts://host[:port] as a URL with its port. */
export function parseEndpoint(text: string, bridge: string, field = 'url'): string {
  const value = text.trim();
  const withScheme = /^[a-z]+:\/\//i.test(value) ? value : `mqtt://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    fail(bridge, field, `"${text}": expected host:port, mqtt://host:port or mqtts://host:port`);
  }
  if (url.protocol !== 'mqtt:' && url.protocol !== 'mqtts:') fail(bridge, field, `"${text}": the scheme must be mqtt:// or mqtts://`);
  if (!url.hostname) fail(bridge, field, `"${text}": no host`);
  if (url.pathname !== '' && url.pathname !== '/') fail(bridge, field, `"${text}": no path expected`);
  const port = url.port || (url.protocol === 'mqtts:' ? '8883' : '1883');
  return `${url.protocol}//${url.hostname}:${port}`;
}

function coerce(spec: FieldSpec, raw: unknown, bridge: string, field: string): unknown {
  const text = typeof raw === 'string' ? raw.trim() : raw;
  switch (spec.kind) {
    case 'string':
      if (typeof text !== 'string' && typeof text !== 'number') fail(bridge, field, 'expected a text');
      if (String(text) === '') fail(bridge, field, 'may not be empty');
      return String(text);
    case 'boolean':
      if (typeof text === 'boolean') return text;
      if (typeof text === 'string' && ['true', '1', 'yes', 'on'].includes(text.toLowerCase())) return true;
      if (typeof text === 'string' && ['false', '0', 'no', 'off'].includes(text.toLowerCase())) return false;
      fail(bridge, field, `"${String(raw)}": use true or false`);
    // eslint-disable-next-line no-fallthrough
    case 'integer': {
      const n = typeof text === 'number' ? text : typeof text === 'string' && /^-?\d+$/.test(text) ? Number(text) : NaN;
      if (!Number.isSafeInteger(n)) fail(bridge, field, `"${String(raw)}": not a whole number`);
      if (spec.min !== undefined && n < spec.min) fail(bridge, field, `${n}: at least ${spec.min}`);
      if (spec.max !== undefined && n > spec.max) fail(bridge, field, `${n}: at most ${spec.max}`);
      return n;
    }
    case 'duration': {
      let ms: number;
      if (typeof text === 'number' && Number.isSafeInteger(text)) ms = text;
      else {
        const m = typeof text === 'string' ? /^(\d+)\s*(ms|s|m|h|d)?$/.exec(text) : null;
        if (!m) fail(bridge, field, `"${String(raw)}": expected a duration such as 500ms, 10s, 2m or 1h`);
        if (!m[2] && Number(m[1]) !== 0) fail(bridge, field, `"${String(raw)}": give a unit (ms, s, m, h or d)`);
        ms = Number(m[1]) * DURATION_UNITS[m[2] ?? 'ms']!;
      }
      if (spec.min !== undefined && ms < spec.min && ms !== 0) fail(bridge, field, `${String(raw)}: at least ${spec.min} ms`);
      return ms;
    }
    case 'version': {
      const v = String(text);
      if (v === '4' || v === '3.1.1') return 4;
      if (v === '5' || v === '5.0') return 5;
      fail(bridge, field, `"${String(raw)}": use 3.1.1 or 5`);
    }
  }
}

/** The defaults a bridge gets for what it does not set. */
function defaults(name: string): Omit<BridgeConfig, 'name' | 'url' | 'topics'> {
  return {
    protocolVersion: 5,
    clientId: `edb-bridge-${name}`,
    keepAlive: 60,
    cleanSession: false,
    sessionExpiry: 4294967295,
    tls: { verify: true },
    reconnectMinMs: 1000,
    reconnectMaxMs: 120_000,
    maxOutgoingBufferedMessages: 1_000_000,
    maxOutgoingBufferedBytes: 1_073_741_824,
    maxOutgoingBufferedAgeMs: 0,
    maxInflight: 1000,
    maxHops: 8,
  };
}

/**
 * One bridge from a plain object (the file's form, and the admin API's body): `url`, `topics`
 * (lines or {pattern, direction, qos, localPrefix, remotePrefix}), and the fields above
 * (`tls: {ca, cert, key, serverName, verify}` nested, or tlsCa... flat).
 */
export function parseBridge(name: string, raw: unknown): BridgeConfig {
  if (!NAME_RE.test(name)) fail(name, 'name', 'use lower-case letters, digits, - and _ (at most 64)');
  if (typeof raw === 'string') raw = { url: raw };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(name, 'bridge', 'expected a mapping with url, topics and other fields');
  const obj = { ...(raw as Record<string, unknown>) };
  delete obj['name'];
  const out: BridgeConfig = { name, url: '', topics: [], ...defaults(name), tls: { verify: true } };
  if (obj['url'] === undefined && obj['endpoint'] === undefined) fail(name, 'url', 'missing; give mqtt://host:port or mqtts://host:port');
  const endpoint = obj['url'] ?? obj['endpoint'];
  if (typeof endpoint !== 'string') fail(name, 'url', 'expected a text such as mqtt://host:1883');
  out.url = parseEndpoint(endpoint, name);
  delete obj['url'];
  delete obj['endpoint'];
  const topics = obj['topics'] ?? [];
  delete obj['topics'];
  if (!Array.isArray(topics)) fail(name, 'topics', 'expected a list of topic lines such as "sensors/# out 1"');
  topics.forEach((t, i) => {
    const field = `topics[${i}]`;
    if (typeof t === 'string') out.topics.push(parseTopicLine(t, name, field));
    else if (t && typeof t === 'object' && typeof (t as { pattern?: unknown }).pattern === 'string') {
      const o = t as Record<string, unknown>;
      const q = (s: unknown) => `"${String(s ?? '')}"`;
      out.topics.push(parseTopicLine(`${q(o['pattern'])} ${String(o['direction'] ?? 'out')} ${String(o['qos'] ?? 0)} ${q(o['localPrefix'])} ${q(o['remotePrefix'])}`, name, field));
      out.topics[out.topics.length - 1]!.line = `${String(o['pattern'])} ${String(o['direction'] ?? 'out')} ${String(o['qos'] ?? 0)}${o['localPrefix'] || o['remotePrefix'] ? ` ${q(o['localPrefix'])} ${q(o['remotePrefix'])}` : ''}`;
    } else fail(name, field, 'expected a topic line (text) or {pattern, direction, qos, localPrefix, remotePrefix}');
  });
  const tls = obj['tls'];
  delete obj['tls'];
  if (tls !== undefined) {
    if (tls === null || typeof tls !== 'object' || Array.isArray(tls)) fail(name, 'tls', 'expected a mapping with ca, cert, key, serverName, verify');
    for (const [k, v] of Object.entries(tls)) {
      const flat = `tls${k.charAt(0).toUpperCase()}${k.slice(1)}`;
      if (!BRIDGE_FIELDS[flat]) fail(name, `tls.${k}`, 'unknown field; use ca, cert, key, serverName or verify');
      obj[flat] = v;
    }
  }
  for (const [k, v] of Object.entries(obj)) {
    const spec = BRIDGE_FIELDS[k];
    if (!spec) fail(name, k, `unknown field; known: url, topics, ${Object.keys(BRIDGE_FIELDS).join(', ')}`);
    if (v === undefined || v === null) continue;
    const value = coerce(spec, v, name, k);
    if (spec.key.startsWith('tls.')) (out.tls as unknown as Record<string, unknown>)[spec.key.slice(4)] = value;
    else (out as unknown as Record<string, unknown>)[spec.key] = value;
  }
  if (out.reconnectMaxMs < out.reconnectMinMs) fail(name, 'reconnectMax', `${out.reconnectMaxMs} ms is below reconnectMin (${out.reconnectMinMs} ms)`);
  if ((out.tls.cert === undefined) !== (out.tls.key === undefined)) fail(name, out.tls.cert ? 'tlsKey' : 'tlsCert', 'a client certificate needs both tlsCert and tlsKey');
  if (out.url.startsWith('mqtt:') && (out.tls.ca || out.tls.cert || out.tls.serverName)) fail(name, 'url', `${out.url}: TLS settings are given, so use mqtts://`);
  if (out.password !== undefined && out.username === undefined) fail(name, 'password', 'a password needs a username');
  return out;
}

/** EDB_BRIDGE_BR0_MAX_OUTGOING_BUFFERED_MESSAGES -> maxOutgoingBufferedMessages, and so on. */
const ENV_FIELDS = new Map<string, string>(
  Object.keys(BRIDGE_FIELDS).map((k) => [k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase(), k]),
);
ENV_FIELDS.set('URL', 'url');
ENV_FIELDS.set('MQTT_VERSION', 'protocolVersion');
ENV_FIELDS.set('CLEAN_START', 'cleanSession');

const ENV_PREFIX = 'EDB_BRIDGE_';

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length]!;
}

/**
 * Bridges from the environment: `EDB_BRIDGE_<NAME>` is the endpoint; `EDB_BRIDGE_<NAME>_TOPIC_<N>`
 * a topic line; `EDB_BRIDGE_<NAME>_<FIELD>` any other field. Names are case-insensitive and
 * shown in lower case (BR0 -> br0). Returns plain objects for parseBridge, by name.
 */
export function bridgesFromEnv(env: NodeJS.ProcessEnv): Map<string, Record<string, unknown>> {
  const vars = Object.keys(env)
    .filter((k) => k.startsWith(ENV_PREFIX) && env[k] !== undefined)
    .sort();
  const fieldOf = (rest: string): { name: string; field: string } | undefined => {
    const topic = /^(.+)_TOPIC_(\d+)$/.exec(rest);
    if (topic) return { name: topic[1]!, field: `TOPIC_${topic[2]}` };
    for (const [suffix] of ENV_FIELDS) if (rest.endsWith(`_${suffix}`) && rest.length > suffix.length + 1) return { name: rest.slice(0, -suffix.length - 1), field: suffix };
    return undefined;
  };
  // the endpoints first: a variable whose tail is no known field names a bridge
  const names = new Set<string>();
  for (const k of vars) {
    const rest = k.slice(ENV_PREFIX.length);
    if (!fieldOf(rest)) names.add(rest);
  }
  // EDB_BRIDGE_BR0_MAX_OUTGOING_BUFERED_MESSAGES is a misspelt field of br0, not a bridge
  for (const n of names) {
    const owner = [...names].find((o) => o !== n && n.startsWith(`${o}_`));
    if (owner) {
      const field = n.slice(owner.length + 1);
      const close = [...ENV_FIELDS.keys()].filter((f) => editDistance(f, field) <= 3);
      throw new BridgeConfigError(
        `${ENV_PREFIX}${n}: bridge ${owner.toLowerCase()}: unknown field ${field}${close.length ? `; did you mean ${close.join(' or ')}?` : `; known: TOPIC_<n>, ${[...ENV_FIELDS.keys()].join(', ')}`}`,
      );
    }
  }
  const out = new Map<string, Record<string, unknown>>();
  for (const n of names) out.set(n.toLowerCase(), { url: env[`${ENV_PREFIX}${n}`]!, topics: [] as { n: number; line: string }[] });
  for (const k of vars) {
    const rest = k.slice(ENV_PREFIX.length);
    if (names.has(rest)) continue;
    const f = fieldOf(rest)!;
    // a name that itself ends like a field (EDB_BRIDGE_SITE_URL...) is taken as the longest known name
    let name = f.name;
    let field = f.field;
    if (!names.has(name)) {
      const known = [...names].filter((n) => rest.startsWith(`${n}_`)).sort((a, b) => b.length - a.length)[0];
      if (!known) {
        throw new BridgeConfigError(`${k}: there is no bridge ${f.name.toLowerCase()}; set ${ENV_PREFIX}${f.name}=host:port (its endpoint) first`);
      }
      name = known;
      field = rest.slice(known.length + 1);
    }
    const entry = out.get(name.toLowerCase())!;
    const topic = /^TOPIC_(\d+)$/.exec(field);
    if (topic) (entry['topics'] as { n: number; line: string }[]).push({ n: Number(topic[1]), line: env[k]! });
    else {
      const key = ENV_FIELDS.get(field);
      if (!key) throw new BridgeConfigError(`${k}: bridge ${name.toLowerCase()}: unknown field ${field}; known: TOPIC_<n>, ${[...ENV_FIELDS.keys()].join(', ')}`);
      entry[key] = env[k];
    }
  }
  for (const entry of out.values()) {
    entry['topics'] = (entry['topics'] as { n: number; line: string }[]).sort((a, b) => a.n - b.n).map((t) => t.line);
  }
  return out;
}

/**
 * The bridges a broker runs: the config file's `bridges:` (a mapping of name to bridge, or a
 * list of bridges with a `name`), then the environment's, which replace a file bridge of the
 * same name field by field.
 */
export function parseBridges(section: unknown, env: NodeJS.ProcessEnv): BridgeConfig[] {
  const raw = new Map<string, Record<string, unknown>>();
  if (section !== undefined && section !== null) {
    if (Array.isArray(section)) {
      section.forEach((b, i) => {
        const name = (b as { name?: unknown } | null)?.name;
        if (typeof name !== 'string') throw new BridgeConfigError(`bridges[${i}]: name: missing; each bridge in the list needs a name`);
        if (raw.has(name)) throw new BridgeConfigError(`bridge ${name}: name: given twice`);
        raw.set(name, typeof b === 'object' ? { ...(b as object) } : b);
      });
    } else if (typeof section === 'object') {
      for (const [name, b] of Object.entries(section)) raw.set(name, typeof b === 'string' ? { url: b } : (b as Record<string, unknown>));
    } else throw new BridgeConfigError('bridges: expected a mapping of bridge names to bridges');
  }
  for (const [name, fields] of bridgesFromEnv(env)) {
    const base = raw.get(name);
    const envTopics = fields['topics'] as string[];
    const merged: Record<string, unknown> = { ...(base && typeof base === 'object' ? base : {}), ...fields };
    if (envTopics.length === 0 && base && typeof base === 'object' && 'topics' in base) merged['topics'] = base['topics'];
    raw.set(name, merged);
  }
  return [...raw].map(([name, b]) => parseBridge(name, b));
}
