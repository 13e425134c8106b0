/**
 * The settings' JSON Schema, and a validator for it written out by hand.
 *
 * The schema is flat and small (a type, a range, an enum or a non-empty string per setting), so
 * the checks are a few lines; compiling it with Ajv at every start cost ~100 ms of CPU and 63
 * modules that an idle broker then keeps (issue 15, idle RSS). `test/unit/config-validate.test.ts`
 * checks this validator against Ajv's compilation of `settingsSchema` on generated inputs: same
 * verdict, same first error (keyword, path, parameter), as `loadConfig` reports it.
 */
import { SETTINGS, type SettingName, type SettingSpec } from './schema.js';

/** The part of an Ajv ErrorObject that `loadConfig` reports from. */
export interface SettingsError {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

export function jsonSchemaFor(spec: SettingSpec): Record<string, unknown> {
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
const known = new Set<string>(names);

export const settingsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: Object.fromEntries(names.map((n) => [n, jsonSchemaFor(SETTINGS[n])])),
};

const isInteger = (v: unknown): v is number => typeof v === 'number' && v % 1 === 0 && Number.isFinite(v);

/** The first problem with one setting's value, or undefined. */
function checkSetting(name: SettingName, value: unknown): SettingsError | undefined {
  const spec = SETTINGS[name] as SettingSpec;
  const instancePath = `/${name}`;
  const fail = (keyword: string, params: Record<string, unknown>, message: string): SettingsError => ({ keyword, instancePath, params, message });
  switch (spec.type) {
    case 'boolean':
      return typeof value === 'boolean' ? undefined : fail('type', { type: 'boolean' }, 'must be boolean');
    case 'integer':
    case 'port': {
      const lo = spec.type === 'port' ? -1 : (spec.minimum ?? Number.MIN_SAFE_INTEGER);
      const hi = spec.type === 'port' ? 65535 : (spec.maximum ?? Number.MAX_SAFE_INTEGER);
      if (!isInteger(value)) return fail('type', { type: 'integer' }, 'must be integer');
      if (value > hi) return fail('maximum', { comparison: '<=', limit: hi }, `must be <= ${hi}`);
      if (value < lo) return fail('minimum', { comparison: '>=', limit: lo }, `must be >= ${lo}`);
      return undefined;
    }
    case 'enum': {
      if (typeof value !== 'string') return fail('type', { type: 'string' }, 'must be string');
      const allowed = spec.values ?? [];
      return allowed.includes(value) ? undefined : fail('enum', { allowedValues: [...allowed] }, 'must be equal to one of the allowed values');
    }
    case 'string':
      if (spec.default === null) return typeof value === 'string' || value === null ? undefined : fail('type', { type: 'string,null' }, 'must be string,null');
      if (typeof value !== 'string') return fail('type', { type: 'string' }, 'must be string');
      // Ajv counts Unicode code points; for "at least 1" any non-empty string passes either way
      return value.length >= 1 ? undefined : fail('minLength', { limit: 1 }, 'must NOT have fewer than 1 characters');
  }
}

/**
 * The first error Ajv (allErrors: false) would report for `values`: an unknown key first (in
 * the object's key order), then each setting in SETTINGS order.
 */
export function validateSettings(values: Record<string, unknown>): SettingsError | undefined {
  for (const key in values) {
    if (!known.has(key)) return { keyword: 'additionalProperties', instancePath: '', params: { additionalProperty: key }, message: 'must NOT have additional properties' };
  }
  for (const name of names) {
    if (values[name] === undefined) continue; // as Ajv: an undefined property is not checked
    const problem = checkSetting(name, values[name]);
    if (problem) return problem;
  }
  return undefined;
}
