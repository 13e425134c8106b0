import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { createRequire } from 'node:module';
import { SETTINGS, type Config, type SettingName, type SettingSpec } from './schema.js';

/** The YAML parser, loaded only when a YAML config file is read (72 modules a broker configured by EDB_* variables never needs). */
function parseYaml(text: string): unknown {
  const yaml = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return yaml.parse(text);
}

/** A setting that cannot be used; the CLI prints `message` and exits with code 2. */
export class ConfigError extends Error {
  readonly code = 'EDB_CONFIG_INVALID';
}

function jsonSchemaFor(spec: SettingSpec): Record<string, unknown> {
  switch (spec.type) {
    case 'boolean':
      return { type: 'boolean' };
    case 'integer':
      return { type: 'integer', minimum: spec.minimum ?? Number.MIN_SAFE_INTEGER, maximum: spec.maximum ?? Number.MAX_SAFE_INTEGER };
    case 'port':
      return { type: 'integer', minimum: -1, maximum: 65535 }; // -1 turns the listener off
    case 'enum':
      return { type: 'string', enum: [...(spec.values ?? [])] };
    case 'string':
      return spec.default === null ? { type: ['string', 'null'] } : { type: 'string', minLength: 1 };
  }
}

const names = Object.keys(SETTINGS) as SettingName[];
const settingsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: Object.fromEntries(names.map((n) => [n, jsonSchemaFor(SETTINGS[n])])),
};

const ajv = new Ajv({ allErrors: false, coerceTypes: false, useDefaults: false });
const validateSettings = ajv.compile(settingsSchema);

/** Sections only the config file carries; each part that owns one validates it itself. */
const FILE_SECTIONS = new Set(['stateStore', 'acl', 'users', 'rules']);

function coerceEnv(name: SettingName, raw: string): unknown {
  const spec: SettingSpec = SETTINGS[name];
  const value = raw.trim();
  switch (spec.type) {
    case 'boolean':
      if (/^(1|true|yes|on)$/i.test(value)) return true;
      if (/^(0|false|no|off)$/i.test(value)) return false;
      throw new ConfigError(`${spec.env}=${raw}: expected true or false`);
    case 'integer':
    case 'port': {
      if (!/^-?\d+$/.test(value)) throw new ConfigError(`${spec.env}=${raw}: expected a whole number`);
      return Number(value);
    }
    default:
      return value === '' && spec.default === null ? null : value;
  }
}

function describe(error: ErrorObject, origin: Map<string, string>): string {
  const key = error.instancePath.replace(/^\//, '') || String(error.params['additionalProperty'] ?? '');
  const where = origin.get(key) ?? key;
  if (error.keyword === 'additionalProperties') return `unknown setting "${error.params['additionalProperty']}" in the config file`;
  return `${where}: ${error.message}`;
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
    let parsed: unknown;
    try {
      const text = readFileSync(file, 'utf8');
      parsed = /\.json$/i.test(file) ? JSON.parse(text) : parseYaml(text);
    } catch (err) {
      throw new ConfigError(`EDB_CONFIG=${file}: cannot read the config file: ${(err as Error).message}`);
    }
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`EDB_CONFIG=${file}: expected a mapping of settings`);
      for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
        if (FILE_SECTIONS.has(key)) sections[key] = value;
        else {
          values[key] = value;
          origin.set(key, `${key} (in ${file})`);
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

  if (!validateSettings(values)) {
    throw new ConfigError(describe(validateSettings.errors![0]!, origin));
  }
  const config = Object.fromEntries(names.map((n) => [n, n in values ? values[n] : SETTINGS[n].default])) as unknown as Config;
  config.sections = sections;
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
  };
}
