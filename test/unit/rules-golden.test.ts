// Golden snapshots of the generated AssemblyScript for the example documents: the code
// generator must be deterministic and its output reviewable. After an intended change:
//   UPDATE_GOLDEN=1 npx vitest run test/unit/rules-golden.test.ts
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { parseDocumentText } from '../../src/rules/check.js';
import { generateProgram } from '../../src/rules/codegen.js';

describe('generated AssemblyScript', () => {
  for (const name of ['house-filters', 'mine-rules']) {
    test(name, () => {
      const text = readFileSync(`test/fixtures/${name}.json`, 'utf8');
      const first = generateProgram(parseDocumentText(text));
      const second = generateProgram(parseDocumentText(text));
      expect(second.source).toBe(first.source);
      expect(Buffer.from(second.tables).equals(Buffer.from(first.tables))).toBe(true);
      const golden = `test/fixtures/golden/${name}.ts`;
      if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(golden, first.source);
      expect(first.source).toBe(readFileSync(golden, 'utf8'));
      expect(first.source.startsWith('// GENERATED')).toBe(true);
    });
  }
});
