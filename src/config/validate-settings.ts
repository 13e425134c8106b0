/**
 * The settings' JSON Schema, and its validator: code Ajv generated from it at build time
 * (`settings-validator.generated.ts`, written by scripts/settings-validator.mjs and checked to
 * be current by test/unit/config-validate.test.ts). Compiling the schema with Ajv at every
 * start cost ~100 ms of CPU and 63 modules that an idle broker then kept (issue 15, idle RSS);
 * the generated code is Ajv's own checks, with none of its compiler.
 */
import { SETTINGS, type SettingName, type SettingSpec } from './schema.js';
import { validate } from './settings-validator.generated.js';

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

export const settingsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: Object.fromEntries(names.map((n) => [n, jsonSchemaFor(SETTINGS[n])])),
};

/** Checks `values` against settingsSchema; on failure `.errors[0]` is the first problem. */
type GeneratedValidator = ((values: unknown) => boolean) & { errors?: SettingsError[] | null };
const validateGenerated = validate as unknown as GeneratedValidator;

/** The first error Ajv (allErrors: false) reports for `values`, or undefined when they are valid. */
export function validateSettings(values: Record<string, unknown>): SettingsError | undefined {
  if (validateGenerated(values)) return undefined;
  return validateGenerated.errors![0]!;
}
