// The settings validator (Ajv's standalone code, generated at build time and committed) against
// Ajv compiling the same JSON Schema at run time, on generated inputs: the same verdict and the
// same first error; and the committed code is what the generator makes of today's schema.
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SETTINGS } from '../../src/config/schema.js';
import { settingsSchema, validateSettings } from '../../src/config/validate-settings.js';
// @ts-expect-error: a plain .mjs script without types
import { GENERATED, settingsValidatorSource } from '../../scripts/settings-validator.mjs';

const ajvValidate = new Ajv({ allErrors: false, coerceTypes: false, useDefaults: false }).compile(settingsSchema);
const names = Object.keys(SETTINGS);

/** What loadConfig reports from: keyword, path and the unknown key. */
function verdictOfAjv(values: Record<string, unknown>): string {
  if (ajvValidate(values)) return 'ok';
  const e = ajvValidate.errors![0]!;
  return `${e.keyword} ${e.instancePath} ${String(e.params['additionalProperty'] ?? '')}`;
}

function verdictOfOurs(values: Record<string, unknown>): string {
  const e = validateSettings(values);
  if (!e) return 'ok';
  return `${e.keyword} ${e.instancePath} ${String(e.params['additionalProperty'] ?? '')}`;
}

const anyValue = fc.oneof(
  fc.integer({ min: -100_000, max: 100_000 }),
  fc.constantFrom(-1, 0, 1, 65535, 65536, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 2, 1.5, NaN, Infinity),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.string({ maxLength: 6 }),
  fc.constantFrom('', 'info', 'debug', 'memory', 'durable', 'json', 'pretty', 'drop', 'disconnect'),
  fc.constant([1]),
);
const entry = fc.tuple(fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...names) }, { weight: 1, arbitrary: fc.constantFrom('nope', 'mqttPrt', 'constructor') }), anyValue);

describe('settings validation', () => {
  it('runs code generated from the current schema (npm run build:ts regenerates it: commit the file)', () => {
    expect(readFileSync(GENERATED as string, 'utf8')).toBe((settingsValidatorSource as (s: unknown) => string)(settingsSchema));
  });

  it('agrees with Ajv on generated settings objects', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 8 }), (entries) => {
        const values = Object.fromEntries(entries);
        expect(verdictOfOurs(values)).toBe(verdictOfAjv(values));
      }),
      { numRuns: 3000 },
    );
  });

  it('accepts the defaults and refuses each kind of mistake', () => {
    const defaults = Object.fromEntries(names.map((n) => [n, (SETTINGS as Record<string, { default: unknown }>)[n]!.default]));
    expect(verdictOfOurs(defaults)).toBe('ok');
    expect(verdictOfAjv(defaults)).toBe('ok');
    expect(verdictOfOurs({ mqttPort: 70000 })).toBe('maximum /mqttPort ');
    expect(verdictOfOurs({ mqttPort: 'x' })).toBe('type /mqttPort ');
    expect(verdictOfOurs({ bogus: 1, mqttPort: 'x' })).toBe('additionalProperties  bogus');
  });
});
