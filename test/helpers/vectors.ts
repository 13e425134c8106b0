// The fr_script test vectors (test/fixtures/vectors.json, copied from shared/examples): a
// document, the messages published, and what must come out after which input.
import { readFileSync } from 'node:fs';

export interface Vector {
  document: string;
  input: [string, string][];
  output: { after: number; topic: string; payload?: string; json?: unknown }[];
}

export const vectors = (JSON.parse(readFileSync('test/fixtures/vectors.json', 'utf8')) as { cases: Vector[] }).cases;
