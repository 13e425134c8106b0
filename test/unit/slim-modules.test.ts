import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadUws } from '../../src/transport/uws.js';

const SCRIPT = join(import.meta.dirname, '../../scripts/slim-modules.mjs');
const REAL = join(import.meta.dirname, '../../node_modules/uWebSockets.js');
const current = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;

function slim(modules: string): string {
  return execFileSync(process.execPath, [SCRIPT, modules], { encoding: 'utf8' });
}

describe('scripts/slim-modules.mjs (the Docker image keeps one uWebSockets.js build, no binaryen tools)', () => {
  it('keeps the build for this platform and Node, and every file that is not a build', () => {
    const modules = mkdtempSync(join(tmpdir(), 'edb-slim-'));
    const dir = join(modules, 'uWebSockets.js');
    mkdirSync(dir);
    const others = ['uws_darwin_arm64_137.node', 'uws_win32_x64_115.node', `uws_${process.platform}_${process.arch}_1.node`];
    for (const name of [current, ...others, 'uws.js', 'package.json', 'index.d.ts']) writeFileSync(join(dir, name), name);
    mkdirSync(join(modules, 'binaryen', 'bin'), { recursive: true });
    writeFileSync(join(modules, 'binaryen', 'bin', 'wasm-opt'), 'tool');
    writeFileSync(join(modules, 'binaryen', 'index.js'), 'library');
    const out = slim(modules);
    expect(out).toContain(`kept ${current}, removed 3 other builds`);
    expect(out).toContain('binaryen: removed its command-line tools');
    expect(readdirSync(dir).sort()).toEqual([current, 'index.d.ts', 'package.json', 'uws.js'].sort());
    expect(readdirSync(join(modules, 'binaryen'))).toEqual(['index.js']);
  });

  it('says so when no build fits, and fails on a missing package', () => {
    const modules = mkdtempSync(join(tmpdir(), 'edb-slim-'));
    mkdirSync(join(modules, 'uWebSockets.js'));
    writeFileSync(join(modules, 'uWebSockets.js', 'uws_sunos_sparc_1.node'), '');
    expect(slim(modules)).toContain('the ws engine will serve');
    expect(readdirSync(join(modules, 'uWebSockets.js'))).toEqual([]);
    expect(() => execFileSync(process.execPath, [SCRIPT, join(modules, 'none')], { stdio: 'pipe' })).toThrow(/cannot read/);
  });

  // The real package, pruned, still loads where uWebSockets.js loads at all (not on Node 22/24 with glibc < 2.38).
  it.skipIf(!loadUws().ok)('the pruned real package still loads', () => {
    const modules = mkdtempSync(join(tmpdir(), 'edb-slim-'));
    const dir = join(modules, 'uWebSockets.js');
    mkdirSync(dir);
    const binaries = readdirSync(REAL).filter((n) => n.endsWith('.node'));
    expect(binaries).toContain(current);
    for (const name of ['uws.js', 'package.json', current, ...binaries.filter((n) => n !== current).slice(0, 2)]) copyFileSync(join(REAL, name), join(dir, name));
    slim(modules);
    expect(readdirSync(dir).filter((n) => n.endsWith('.node'))).toEqual([current]);
    const uws = createRequire(import.meta.url)(join(dir, 'uws.js')) as { App: unknown };
    expect(typeof uws.App).toBe('function');
  });
});
