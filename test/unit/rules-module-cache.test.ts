import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ModuleCache, moduleKey } from '../../src/rules/module-cache.js';
import { RulesCompiler } from '../../src/rules/compiler.js';
import { until } from '../helpers/broker.js';

const HOUSE = readFileSync(new URL('../fixtures/house-filters.json', import.meta.url), 'utf8');
const dir = (): string => mkdtempSync(join(tmpdir(), 'edb-module-cache-'));
const fakeWasm = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 1) & 0xff);

describe('ModuleCache (the compiled module of the active document, on disk)', () => {
  it('gives back what it stored, only for the same key', async () => {
    const cache = new ModuleCache(dir());
    expect(cache.read(moduleKey('a', 3))).toEqual({ miss: 'none' });
    const binary = fakeWasm(5000);
    await cache.write(moduleKey('a', 3), binary);
    expect(cache.read(moduleKey('a', 3))).toEqual({ binary });
    // another program, another optimize level: a miss, not the old binary
    expect(cache.read(moduleKey('b', 3))).toEqual({ miss: 'other document' });
    expect(cache.read(moduleKey('a', 2))).toEqual({ miss: 'other document' });
  });

  it('reports a damaged file instead of returning it', async () => {
    const cache = new ModuleCache(dir());
    const key = moduleKey('a', 3);
    await cache.write(key, fakeWasm(300));
    const good = readFileSync(cache.path);
    const flipped = Buffer.from(good);
    flipped[flipped.length - 1]! ^= 1;
    const damaged: [string, Buffer][] = [
      ['a flipped bit', flipped],
      ['truncated', good.subarray(0, good.length - 10)],
      ['header only', good.subarray(0, 40)],
      ['garbage', Buffer.from('not a module at all, just some text of some length, long enough to pass the size check')],
      ['empty', Buffer.alloc(0)],
    ];
    for (const [what, bytes] of damaged) {
      writeFileSync(cache.path, bytes);
      const found = cache.read(key);
      expect(found, what).toHaveProperty('bad');
      expect((found as { bad: string }).bad, what).toMatch(/checksum|not a compiled rules module/);
    }
  });
});

describe('RulesCompiler with a module cache and an idle stop', () => {
  const compilers: RulesCompiler[] = [];
  // one warm worker for the tests that do not count workers (each cold start costs seconds)
  const shared = new RulesCompiler();
  afterEach(async () => {
    await Promise.all(compilers.splice(0).map((c) => c.close()));
  });
  afterAll(() => shared.close());

  it('compiles once; a start-up compile of the same document loads the module with no worker', async () => {
    const cacheDir = dir();
    const first = new RulesCompiler();
    compilers.push(first);
    const compiled = await first.compile({ text: HOUSE, cacheDir }, true);
    expect(compiled.fromCache).toBe(false);
    expect(first.workersStarted).toBe(1);

    const second = new RulesCompiler();
    compilers.push(second);
    const again = await second.compile({ text: HOUSE, cacheDir }, true);
    expect(again.fromCache).toBe(true);
    expect(again.ascMillis).toBe(0);
    expect(second.workersStarted).toBe(0);
    expect(again.etag).toBe(compiled.etag);
    // the loaded module works: house/1 is fire danger
    const out = again.program.process('house/1', Buffer.from('{"inside":{"temperature":50,"humidity":6},"temperature":8}'));
    expect(out.map((o) => [o.topic, o.payload.toString()])).toEqual([['house/1/alert/', 'fire_danger']]);
  });

  it('a damaged cache file is reported, compiled again and replaced', async () => {
    const cacheDir = dir();
    const c = shared;
    await c.compile({ text: HOUSE, cacheDir });
    const cache = new ModuleCache(cacheDir);
    const good = readFileSync(cache.path);
    writeFileSync(cache.path, Buffer.concat([good.subarray(0, 100), Buffer.from('garbage')]));
    const again = await c.compile({ text: HOUSE, cacheDir }, true);
    expect(again.fromCache).toBe(false);
    expect(again.cacheProblem).toMatch(/checksum/);
    expect(readFileSync(cache.path).equals(good)).toBe(true);
  });

  it('a cached module that passes its checksum but does not load is compiled again', async () => {
    const cacheDir = dir();
    const c = shared;
    await c.compile({ text: HOUSE, cacheDir });
    const cache = new ModuleCache(cacheDir);
    const good = readFileSync(cache.path);
    // the right key and a true checksum, over bytes that are not WebAssembly
    await cache.write(good.subarray(8, 40), Buffer.from('not wasm, but checksummed'));
    const again = await c.compile({ text: HOUSE, cacheDir }, true);
    expect(again.fromCache).toBe(false);
    expect(again.cacheProblem).toMatch(/does not load/);
    expect(readFileSync(cache.path).equals(good)).toBe(true);
    expect(again.program.process('house/2', Buffer.from('{"inside":{"temperature":50,"humidity":6}}')).map((o) => o.topic)).toEqual(['house/2/alert/']);
  });

    it('stops its worker after idleMillis without a compile and starts another on the next one', async () => {
    const c = new RulesCompiler({ idleMillis: 300 });
    compilers.push(c);
    await c.compile({ text: HOUSE });
    expect(c.running).toBe(true);
    await until(() => !c.running, 10_000, 'the idle worker to stop');
    const again = await c.compile({ text: HOUSE });
    expect(again.fromCache).toBe(false);
    expect(c.workersStarted).toBe(2);
  });
});
