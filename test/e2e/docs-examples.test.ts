/**
 * The docs show what `edb` prints: the examples between `<!-- examples:start -->` and
 * `<!-- examples:end -->` in docs/operations.md are run here through the real command,
 * and each must print the line shown (the first line of standard error) and exit with the
 * code shown. A change of wording or of exit code must change the docs with it.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from '../helpers/process.js';

interface Example {
  command: string;
  env: Record<string, string>;
  args: string[];
  line: string;
  code: number;
}

function examples(path: string): Example[] {
  const text = readFileSync(path, 'utf8');
  const block = /<!-- examples:start -->([\s\S]*?)<!-- examples:end -->/.exec(text)?.[1];
  if (!block) throw new Error(`${path} has no examples block`);
  const lines = block.split('\n').filter((l) => l !== '' && !l.startsWith('```'));
  const out: Example[] = [];
  for (let i = 0; i < lines.length; i += 3) {
    const [command, line, exit] = [lines[i]!, lines[i + 1]!, lines[i + 2]!];
    if (!command.startsWith('$ ') || !/^exit \d+$/.test(exit ?? '')) throw new Error(`${path}: expected "$ command", its line, "exit N" at "${command}"`);
    const words = command.slice(2).split(/\s+/);
    const env: Record<string, string> = {};
    while (/^[A-Z_]+=/.test(words[0]!)) {
      const [k, ...v] = words.shift()!.split('=');
      env[k!] = v.join('=');
    }
    if (words.shift() !== 'edb') throw new Error(`${path}: not an edb command: ${command}`);
    out.push({ command, env, args: words, line, code: Number(exit.slice(5)) });
  }
  return out;
}

const cases = examples('docs/operations.md');

describe.concurrent('docs/operations.md examples', () => {
  it('has examples to run', () => {
    expect(cases.length).toBeGreaterThanOrEqual(5);
  });

  it.each(cases)('$command', async (c) => {
    const base: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('EDB_') && v !== undefined) base[k] = v;
    // run in an empty folder, so that relative file names in the examples name nothing
    const cwd = mkdtempSync(join(tmpdir(), 'edb-docs-'));
    const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(process.execPath, [CLI, ...c.args], { cwd, env: { ...base, EDB_DATA_DIR: join(cwd, 'data'), ...c.env }, timeout: 60_000 }, (err, _stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stderr }),
      );
    });
    expect(r.stderr.split('\n')[0]).toBe(c.line);
    expect(r.code).toBe(c.code);
  });
});
