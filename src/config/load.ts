import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { SETTINGS, type Config, type SettingName, type SettingSpec } from './schema.js';
import { didYouMean } from './suggest.js';
import { validateSettings, type SettingsError } from './validate-settings.js';
import { BridgeConfigError, parseBridges } from './bridges.js';

/** The YAML parser, loaded only when a YAML config file is read (72 modules a broker configured by EDB_* variables never needs). */
function parseYaml(text: string): unknown {
  const yaml = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return yaml.parse(text);
}

/** A setting that cannot be used; the CLI prints `message` and exits with code 2. */
export class ConfigError extends Error {
  readonly code = 'EDB_CONFIG_INVALID';
}

/**
 * The settings are fine but the machine is not (a port in use, a folder the broker may not
 * write); the CLI prints `message` and exits with code 1.
 */
export class EnvironmentError extends Error {
  readonly code = 'EDB_ENVIRONMENT';
}

const names = Object.keys(SETTINGS) as SettingName[];

/** Sections only the config file carries; each part that owns one validates it itself. */
const FILE_SECTIONS = new Set(['stateStore', 'acl', 'users', 'rules', 'bridges']);

const TRUE_WORDS = ['true', '1', 'yes', 'on'];
const FALSE_WORDS = ['false', '0', 'no', 'off'];

/** What a setting takes, in words: "a port from 0 to 65535 (0 picks a free port, -1 turns the listener off)". */
export function expected(spec: SettingSpec): string {
  switch (spec.type) {
    case 'boolean':
      return `true or false (also accepted: ${TRUE_WORDS.slice(1).join(', ')} / ${FALSE_WORDS.slice(1).join(', ')})`;
    case 'port':
      return 'a port from 0 to 65535 (0 picks a free port, -1 turns the listener off)';
    case 'integer': {
      const { minimum: lo, maximum: hi } = spec;
      if (lo !== undefined && hi !== undefined) return `a whole number from ${lo} to ${hi}`;
      if (lo !== undefined) return `a whole number, at least ${lo}`;
      if (hi !== undefined) return `a whole number, at most ${hi}`;
      return 'a whole number';
    }
    case 'enum':
      return `one of ${(spec.values ?? []).join(', ')}`;
    case 'string':
      return spec.default === null ? 'a text (or nothing, to unset it)' : 'a text that is not empty';
  }
}

function coerceEnv(name: SettingName, raw: string): unknown {
  return coerceText(SETTINGS[name], raw, `${SETTINGS[name].env}=${raw}`);
}

/** A setting given as text (any environment variable; a quoted value in the file). */
function coerceText(spec: SettingSpec, raw: string, where: string): unknown {
  const value = raw.trim();
  switch (spec.type) {
    case 'boolean':
      if (TRUE_WORDS.includes(value.toLowerCase())) return true;
      if (FALSE_WORDS.includes(value.toLowerCase())) return false;
      throw new ConfigError(`${where}: not a yes/no value; use ${expected(spec)}`);
    case 'integer':
    case 'port': {
      if (!/^-?\d+$/.test(value)) throw new ConfigError(`${where}: not a whole number; use ${expected(spec)}`);
      return Number(value);
    }
    default:
      return value === '' && spec.default === null ? null : value;
  }
}

function describe(error: SettingsError, origin: Map<string, string>, file: string | undefined, values: Record<string, unknown>): string {
  if (error.keyword === 'additionalProperties') {
    const key = String(error.params['additionalProperty']);
    return `unknown setting "${key}" in the config file ${file ?? ''}`.trimEnd() + (didYouMean(key, [...names, ...FILE_SECTIONS]) || `; the README lists the settings`);
  }
  const key = error.instancePath.replace(/^\//, '') as SettingName;
  const where = origin.get(key) ?? key;
  const spec: SettingSpec | undefined = SETTINGS[key];
  if (!spec) return `${where}: ${error.message ?? 'invalid'}`;
  if (error.keyword === 'enum') {
    const given = values[key];
    const hint = typeof given === 'string' ? didYouMean(given, spec.values ?? []).replace(/^;/, ',') : '';
    return `${where}: not an allowed value; use ${expected(spec)}${hint}`;
  }
  if (error.keyword === 'minimum' || error.keyword === 'maximum') {
    return `${where}: out of range; use ${expected(spec)}`;
  }
  return `${where}: not valid; use ${expected(spec)}`;
}

/**
 * Settings come from `EDB_*` environment variables over the optional config file named by
 * `EDB_CONFIG` (YAML or JSON), over the defaults. Throws ConfigError naming the first bad one.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const origin = new Map<string, string>();
  const values: Record<string, unknown> = {};
  const sections: Record<string, unknown> = {};

  const file = env['EDB_CONFIG'];
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const reason = code === 'ENOENT' ? 'no such file (ENOENT)' : code === 'EACCES' ? 'permission denied (EACCES)' : (err as Error).message;
      throw new ConfigError(`EDB_CONFIG=${file}: cannot read the config file: ${reason}; check the path, or unset EDB_CONFIG`);
    }
    let parsed: unknown;
    try {
      parsed = /\.json$/i.test(file) ? JSON.parse(text) : parseYaml(text);
    } catch (err) {
      const reason = (err as Error).message.split('\n')[0]!.replace(/:$/, '');
      throw new ConfigError(`EDB_CONFIG=${file}: not valid ${/\.json$/i.test(file) ? 'JSON' : 'YAML'}: ${reason}; fix the file`);
    }
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`EDB_CONFIG=${file}: expected a mapping of settings (key: value lines, or a JSON object)`);
      for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
        if (FILE_SECTIONS.has(key)) sections[key] = value;
        else {
          origin.set(key, `${key} (in ${file})`);
          // "yes", "on", "8883" in a file mean what they mean in the environment
          const spec = (SETTINGS as Record<string, SettingSpec>)[key];
          values[key] = spec && typeof value === 'string' && spec.type !== 'string' && spec.type !== 'enum' ? coerceText(spec, value, `${key}: ${value} (in ${file})`) : value;
        }
      }
    }
  }

  for (const name of names) {
    const raw = env[SETTINGS[name].env];
    if (raw !== undefined) {
      values[name] = coerceEnv(name, raw);
      origin.set(name, `${SETTINGS[name].env}=${raw}`);
    }
  }

  const problem = validateSettings(values);
  if (problem) throw new ConfigError(describe(problem, origin, file, values));
  const config = Object.fromEntries(names.map((n) => [n, n in values ? values[n] : SETTINGS[n].default])) as unknown as Config;
  config.sections = sections;
  // bridges: the file's bridges: section and EDB_BRIDGE_<NAME>* (config/bridges.ts)
  try {
    config.bridges = parseBridges(sections['bridges'], env);
  } catch (err) {
    if (err instanceof BridgeConfigError) throw new ConfigError(err.message);
    throw err;
  }
  return config;
}

/** Defaults with overrides, for tests and embedding (ports default to 0 = pick a free one). */
const testDataDirs: string[] = [];

/** A fresh data folder for a test broker, removed when the process exits. */
function testDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'edb-test-'));
  if (testDataDirs.push(dir) === 1) {
    process.once('exit', () => {
      for (const d of testDataDirs) rmSync(d, { recursive: true, force: true });
    });
  }
  return dir;
}

export function testConfig(overrides: Partial<Config> = {}): Config {
  const base = loadConfig({});
  return {
    ...base,
    mqttPort: 0,
    mqttsPort: 0,
    wsPort: -1,
    wssPort: -1,
    httpPort: -1,
    rulesPort: -1,
    sysInterval: 0,
    logLevel: 'silent',
    // tests must not share a backup folder; those that test backups turn it on with their own
    backupEnabled: false,
    // nor a data folder (the rules document is persisted there)
    ...overrides,
    dataDir: overrides.dataDir ?? testDataDir(),
    sections: overrides.sections ?? {},
    bridges: overrides.bridges ?? [],
  };
}
