/**
 * Ajv, loaded on first use: the ACL, state-store and rules schemas are compiled only when a
 * section or a document is there, and an idle broker without them need not load Ajv's 63
 * modules at all.
 */
import { createRequire } from 'node:module';
import type { Ajv, Options } from 'ajv';

export function createAjv(options: Options): Ajv {
  const ajv = createRequire(import.meta.url)('ajv') as typeof import('ajv');
  return new ajv.Ajv(options);
}
