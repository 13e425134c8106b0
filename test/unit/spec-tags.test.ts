/**
 * Spec tags in the source and the tests name the version they cite (CONTRIBUTING.md, "Spec tags"):
 * [MQTT-5-3.1.2-22], [MQTT-3.1.1-3.1.2-22], or a section without a statement number.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const TAG_FORM = /^\[MQTT-(5|3\.1\.1)-\d+(\.\d+)*(-\d+)?\]$/;

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sources(path));
    else if (name.endsWith('.ts')) out.push(path);
  }
  return out;
}

/** Every `[MQTT-...]` in a text, with its line. */
export function specTags(text: string): { tag: string; line: number }[] {
  const found: { tag: string; line: number }[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    for (const m of line.matchAll(/\[MQTT-[^\]\s]*\]?/g)) found.push({ tag: m[0], line: i + 1 });
  });
  return found;
}

describe('spec tags', () => {
  it('the form accepts versioned tags and refuses unversioned, placeholder and range forms', () => {
    for (const good of ['[MQTT-5-3.1.2-22]', '[MQTT-3.1.1-3.1.2-22]', '[MQTT-5-3.3.2.3.4]', '[MQTT-5-4.8.2]', '[MQTT-3.1.1-1.5.3-1]']) {
      expect(good).toMatch(TAG_FORM);
    }
    for (const bad of ['[MQTT-3.1.2-22]', '[MQTT-4.7.2-1]', '[MQTT-5-3.3.1-9..11]', '[MQTT-5-1.5.4-1/2]', '[MQTT-x.y.z-n]', '[MQTT-5-3.1.?-1]', '[MQTT-5-?]', '[MQTT-3.3.1-5']) {
      expect(specTags(bad).map((t) => t.tag).every((t) => TAG_FORM.test(t))).toBe(false);
    }
  });

  it('every [MQTT-...] tag in src/, assembly/ and test/ says which version it cites', () => {
    const wrong: string[] = [];
    let count = 0;
    const self = join(ROOT, 'test', 'unit', 'spec-tags.test.ts');
    for (const file of [...sources(join(ROOT, 'src')), ...sources(join(ROOT, 'assembly')), ...sources(join(ROOT, 'test'))]) {
      if (file === self) continue;
      for (const { tag, line } of specTags(readFileSync(file, 'utf8'))) {
        count++;
        if (!TAG_FORM.test(tag)) wrong.push(`${relative(ROOT, file)}:${line} ${tag}`);
      }
    }
    expect(wrong).toEqual([]);
    // the sweep found well over a hundred; far fewer means the scan went wrong, not the tags
    expect(count).toBeGreaterThan(100);
  });
});
