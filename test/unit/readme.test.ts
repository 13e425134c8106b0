import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { SETTINGS } from '../../src/config/schema.js';

describe('README', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

  it('opens with the start and test commands', () => {
    const firstBlock = readme.slice(readme.indexOf('```'), readme.indexOf('```', readme.indexOf('```') + 3));
    expect(firstBlock).toContain('npm start');
    expect(firstBlock).toContain('npm test');
  });

  it('documents every setting with its variable and default (regenerate: scripts/config-table.mjs --write)', () => {
    for (const [key, spec] of Object.entries(SETTINGS)) {
      const def = spec.default === null ? '(unset)' : `\`${spec.default}\``;
      expect(readme, `${spec.env} row`).toContain(`| \`${spec.env}\` | \`${key}\` |`);
      const row = readme.split('\n').find((l) => l.startsWith(`| \`${spec.env}\``))!;
      expect(row, `${spec.env} default`).toContain(def);
    }
  });
});
