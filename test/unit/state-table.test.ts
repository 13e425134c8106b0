// One conformance suite, run against the Wasm table and the Map reference; then a
// differential test on generated operation sequences, and Wasm-only memory checks.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { codes, createStateTable, MapStateTable, WasmStateTable, type StateTable } from '../../src/state/table.js';
import type { Hlc } from '../../src/state/hlc.js';

const b = (s: string) => Buffer.from(s, 'utf8');
const ft = (wall: number, counter = 0, node = 'n'): Hlc => ({ wall, counter, node });
const NOW = 1_700_000_000_000;

function set(t: StateTable, k: string | Buffer, v: string | Buffer, opts: { flags?: number; ver?: number; exp?: number; ft?: Hlc; now?: number } = {}) {
  return t.set(typeof k === 'string' ? b(k) : k, typeof v === 'string' ? b(v) : v, opts.flags ?? 0, opts.ver ?? NOW, 0, opts.exp ?? 0, opts.ft, opts.now ?? NOW);
}

for (const kind of ['wasm', 'map'] as const) {
  describe(`state table conformance: ${kind}`, () => {
    const make = () => createStateTable(kind);

    it('stores, reads, overwrites and deletes', () => {
      const t = make();
      expect(t.get(b('a'), NOW)).toBeUndefined();
      expect(set(t, 'a', 'one', { ver: 10 })).toBe(codes.RESULT_OK);
      expect(t.get(b('a'), NOW)?.toString()).toBe('one');
      expect(t.last.versionWall).toBe(10);
      expect(set(t, 'a', 'a much longer second value', { ver: 11 })).toBe(codes.RESULT_OK);
      expect(t.get(b('a'), NOW)?.toString()).toBe('a much longer second value');
      expect(t.last.versionWall).toBe(11);
      expect(t.size).toBe(1);
      expect(t.stats().dataBytes).toBe(1 + 26);
      expect(t.delete(b('a'), undefined, undefined, NOW)).toBe(codes.RESULT_OK);
      expect(t.last.versionWall).toBe(11);
      expect(t.delete(b('a'), undefined, undefined, NOW)).toBe(codes.RESULT_NONE);
      expect(t.size).toBe(0);
      expect(t.stats().dataBytes).toBe(0);
    });

    it('keeps binary keys and values exactly, including empty values', () => {
      const t = make();
      const k1 = Buffer.from([0, 0xff, 0xfe, 0x80, 0]);
      const k2 = Buffer.from([0, 0xff, 0xfe, 0x80]);
      const v = Buffer.from([0xc3, 0x28, 0, 1, 2]);
      set(t, k1, v);
      set(t, k2, Buffer.alloc(0));
      expect(t.get(k1, NOW)).toEqual(v);
      expect(t.get(k2, NOW)).toEqual(Buffer.alloc(0));
      expect(t.size).toBe(2);
    });

    it('NX stores only when absent; NEX when absent or holding the same value', () => {
      const t = make();
      expect(set(t, 'k', 'v1', { flags: codes.SET_NX, ver: 1 })).toBe(codes.RESULT_OK);
      expect(set(t, 'k', 'v2', { flags: codes.SET_NX, ver: 2 })).toBe(codes.RESULT_NONE);
      expect(t.last.versionWall).toBe(1);
      expect(set(t, 'k', 'v2', { flags: codes.SET_NEX, ver: 3 })).toBe(codes.RESULT_NONE);
      expect(set(t, 'k', 'v1', { flags: codes.SET_NEX, ver: 4 })).toBe(codes.RESULT_OK);
      expect(set(t, 'other', 'x', { flags: codes.SET_NEX, ver: 5 })).toBe(codes.RESULT_OK);
      expect(t.get(b('k'), NOW)?.toString()).toBe('v1');
      expect(t.last.versionWall).toBe(4);
    });

    it('VDEL deletes only the same value', () => {
      const t = make();
      set(t, 'lock', 'me', { ver: 7 });
      expect(t.delete(b('lock'), b('you'), undefined, NOW)).toBe(codes.RESULT_MISMATCH);
      expect(t.last.versionWall).toBe(7);
      expect(t.delete(b('lock'), b('me'), undefined, NOW)).toBe(codes.RESULT_OK);
      expect(t.delete(b('lock'), b('me'), undefined, NOW)).toBe(codes.RESULT_NONE);
    });

    it('fencing tokens: stored, required, older refused, equal or newer accepted and kept', () => {
      const t = make();
      expect(set(t, 'r', 'v', { ft: ft(100, 1, 'a') })).toBe(codes.RESULT_OK);
      expect(set(t, 'r', 'w')).toBe(codes.ERR_FENCING_REQUIRED);
      expect(set(t, 'r', 'w', { ft: ft(100, 0, 'z') })).toBe(codes.ERR_FENCING_STALE);
      expect(set(t, 'r', 'w', { ft: ft(100, 1, '') })).toBe(codes.ERR_FENCING_STALE);
      expect(set(t, 'r', 'w', { ft: ft(100, 1, 'a') })).toBe(codes.RESULT_OK);
      expect(set(t, 'r', 'x', { ft: ft(200, 0, 'b') })).toBe(codes.RESULT_OK);
      expect(set(t, 'r', 'y', { ft: ft(100, 1, 'a') })).toBe(codes.ERR_FENCING_STALE);
      expect(t.delete(b('r'), undefined, undefined, NOW)).toBe(codes.ERR_FENCING_REQUIRED);
      expect(t.delete(b('r'), b('x'), ft(150), NOW)).toBe(codes.ERR_FENCING_STALE);
      expect(t.delete(b('r'), b('nope'), ft(200, 0, 'b'), NOW)).toBe(codes.RESULT_MISMATCH);
      expect(t.delete(b('r'), undefined, ft(300), NOW)).toBe(codes.RESULT_OK);
      // gone with its token: a plain SET works again
      expect(set(t, 'r', 'z')).toBe(codes.RESULT_OK);
    });

    it('expires lazily on every access, reporting it once', () => {
      const t = make();
      set(t, 'a', '1', { exp: NOW + 100 });
      set(t, 'b', '2', { exp: NOW + 100 });
      set(t, 'c', '3', { exp: NOW + 100 });
      expect(t.get(b('a'), NOW + 99)?.toString()).toBe('1');
      expect(t.last.expiresAt).toBe(NOW + 100);
      expect(t.last.expired).toBe(false);
      expect(t.get(b('a'), NOW + 100)).toBeUndefined();
      expect(t.last.expired).toBe(true);
      expect(t.get(b('a'), NOW + 100)).toBeUndefined();
      expect(t.last.expired).toBe(false);
      expect(set(t, 'b', 'new', { flags: codes.SET_NX, now: NOW + 200 })).toBe(codes.RESULT_OK);
      expect(t.last.expired).toBe(true);
      expect(t.delete(b('c'), undefined, undefined, NOW + 200)).toBe(codes.RESULT_NONE);
      expect(t.last.expired).toBe(true);
      expect(t.size).toBe(1);
      expect(t.stats().expiring).toBe(0);
    });

    it('an expired key with a fencing token is absent: no token needed', () => {
      const t = make();
      set(t, 'k', 'v', { ft: ft(5), exp: NOW + 1 });
      expect(set(t, 'k', 'w', { now: NOW + 2 })).toBe(codes.RESULT_OK);
    });

    it('the sweep removes expired keys and names them', () => {
      const t = make();
      for (let i = 0; i < 50; i++) set(t, `k${i}`, 'v', { exp: i % 2 ? NOW + 10 : 0 });
      const seen: string[] = [];
      let n = 0;
      do n = t.sweep(NOW + 10, 7, (k) => seen.push(k.toString()));
      while (n > 0);
      expect(seen.sort()).toEqual(Array.from({ length: 25 }, (_, i) => `k${2 * i + 1}`).sort());
      expect(t.size).toBe(25);
      expect(t.stats().expiring).toBe(0);
      expect(t.sweep(NOW + 10, 100, () => {})).toBe(0);
    });

    it('enforces max keys and max bytes (key + value lengths)', () => {
      const t = make();
      t.setLimits(2, 20);
      expect(set(t, 'a', '12345')).toBe(codes.RESULT_OK);
      expect(set(t, 'b', '12345')).toBe(codes.RESULT_OK);
      expect(set(t, 'c', '1')).toBe(codes.ERR_QUOTA);
      expect(set(t, 'a', '123456789')).toBe(codes.RESULT_OK); // 10 + 6 = 16 bytes
      expect(set(t, 'a', '12345678901234')).toBe(codes.ERR_QUOTA); // 15 + 6 = 21 bytes
      expect(t.get(b('a'), NOW)?.toString()).toBe('123456789');
      t.delete(b('b'), undefined, undefined, NOW);
      expect(set(t, 'c', '1')).toBe(codes.RESULT_OK);
    });

    it('grows, shrinks and keeps every key through resizes', () => {
      const t = make();
      const n = 20_000;
      for (let i = 0; i < n; i++) expect(set(t, `key-${i}`, `value-${i}`, { ver: i })).toBe(codes.RESULT_OK);
      expect(t.size).toBe(n);
      for (let i = 0; i < n; i += 3) expect(t.delete(b(`key-${i}`), undefined, undefined, NOW)).toBe(codes.RESULT_OK);
      for (let i = 0; i < n; i++) {
        const v = t.get(b(`key-${i}`), NOW);
        if (i % 3 === 0) expect(v).toBeUndefined();
        else {
          expect(v?.toString()).toBe(`value-${i}`);
          expect(t.last.versionWall).toBe(i);
        }
      }
      for (let i = 0; i < n; i++) t.delete(b(`key-${i}`), undefined, undefined, NOW);
      expect(t.size).toBe(0);
      expect(t.stats().dataBytes).toBe(0);
    });

    it('handles values far larger than the IO region', () => {
      const t = make();
      const big = Buffer.alloc(300_000, 7);
      big[299_999] = 9;
      expect(set(t, 'big', big)).toBe(codes.RESULT_OK);
      expect(t.get(b('big'), NOW)?.equals(big)).toBe(true);
      const chunks = t.exportRecords(NOW);
      const u = createStateTable(kind);
      expect(u.importRecords(Buffer.concat(chunks), NOW)).toBe(1);
      expect(u.get(b('big'), NOW)?.equals(big)).toBe(true);
    });

    it('exports and imports snapshot records, skipping expired ones', () => {
      const t = make();
      set(t, 'a', '1', { ver: 5 });
      set(t, 'b', '2', { ver: 6, exp: NOW + 5 });
      set(t, 'c', '3', { ver: 7, ft: ft(9, 2, 'nødé') });
      set(t, 'd', '4', { ver: 8, exp: NOW + 50 });
      const recs = Buffer.concat(t.exportRecords(NOW + 10));
      for (const other of [createStateTable('wasm'), createStateTable('map')]) {
        expect(other.importRecords(recs, NOW + 10)).toBe(3);
        expect(other.get(b('b'), NOW + 10)).toBeUndefined();
        expect(other.get(b('d'), NOW + 10)?.toString()).toBe('4');
        expect(other.last.expiresAt).toBe(NOW + 50);
        expect(other.get(b('c'), NOW)?.toString()).toBe('3');
        expect(other.last.versionWall).toBe(7);
        expect(set(other, 'c', 'x', { ft: ft(9, 2, 'nødb') })).toBe(codes.ERR_FENCING_STALE);
        expect(set(other, 'c', 'x', { ft: ft(9, 2, 'nødé') })).toBe(codes.RESULT_OK);
        expect(Buffer.concat(other.exportRecords(NOW)).length).toBeGreaterThan(0);
      }
    });

    it('a key recorded twice keeps the later record', () => {
      const a = make();
      set(a, 'k', 'first', { ver: 1, exp: NOW + 1000 });
      const first = Buffer.concat(a.exportRecords(NOW));
      set(a, 'k', 'second-longer', { ver: 2 });
      const second = Buffer.concat(a.exportRecords(NOW));
      const t = make();
      expect(t.importRecords(Buffer.concat([first, second]), NOW)).toBe(2);
      expect(t.size).toBe(1);
      expect(t.get(b('k'), NOW)?.toString()).toBe('second-longer');
      expect(t.last.versionWall).toBe(2);
      expect(t.stats()).toMatchObject({ keys: 1, dataBytes: 1 + 13, expiring: 0 });
    });

    it('refuses malformed snapshot records', () => {
      const t = make();
      const rec = Buffer.alloc(codes.RECORD_HEADER + 2);
      rec.writeUInt32LE(5, 0); // key runs past the end
      expect(() => t.importRecords(rec, NOW)).toThrow();
      const zeroKey = Buffer.alloc(codes.RECORD_HEADER);
      expect(() => t.importRecords(zeroKey, NOW)).toThrow();
    });
  });
}

describe('state table: Wasm and Map agree on generated operation sequences', () => {
  const key = fc.constantFrom(...['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map((s) => Buffer.from(s)), Buffer.from([0, 255]));
  const value = fc.oneof(fc.constantFrom(Buffer.from('x'), Buffer.from('yy'), Buffer.alloc(0)), fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)));
  const token = fc.option(fc.record({ wall: fc.integer({ min: 0, max: 5 }), counter: fc.integer({ min: 0, max: 2 }), node: fc.constantFrom('a', 'b') }), { nil: undefined });
  const op = fc.oneof(
    fc.record({ op: fc.constant('set' as const), key, value, flags: fc.constantFrom(0, codes.SET_NX, codes.SET_NEX), exp: fc.constantFrom(0, 0, 5, 20), ft: token }),
    fc.record({ op: fc.constant('get' as const), key }),
    fc.record({ op: fc.constant('del' as const), key, value: fc.option(value, { nil: undefined }), ft: token }),
    fc.record({ op: fc.constant('sweep' as const) }),
    fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 1, max: 10 }) }),
  );
  it('same results, same values, same versions, same stats', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
        const w = new WasmStateTable(4);
        const m = new MapStateTable();
        w.setLimits(6, 120);
        m.setLimits(6, 120);
        let now = 1000;
        let ver = 0;
        for (const o of ops) {
          switch (o.op) {
            case 'set': {
              ver++;
              const exp = o.exp ? now + o.exp : 0;
              const rw = w.set(o.key, o.value, o.flags, ver, ver, exp, o.ft, now);
              const rm = m.set(o.key, o.value, o.flags, ver, ver, exp, o.ft, now);
              expect(rw).toBe(rm);
              expect(w.last.expired).toBe(m.last.expired);
              if (rw === codes.RESULT_NONE) expect(w.last.versionWall).toBe(m.last.versionWall);
              break;
            }
            case 'get': {
              const vw = w.get(o.key, now);
              const vm = m.get(o.key, now);
              expect(vw).toEqual(vm);
              expect(w.last.expired).toBe(m.last.expired);
              if (vw) expect([w.last.versionWall, w.last.versionCounter, w.last.expiresAt]).toEqual([m.last.versionWall, m.last.versionCounter, m.last.expiresAt]);
              break;
            }
            case 'del': {
              const rw = w.delete(o.key, o.value, o.ft, now);
              expect(rw).toBe(m.delete(o.key, o.value, o.ft, now));
              if (rw === codes.RESULT_OK) expect(w.last.versionWall).toBe(m.last.versionWall);
              break;
            }
            case 'sweep': {
              const kw: string[] = [];
              const km: string[] = [];
              w.sweep(now, 100, (k) => kw.push(k.toString('hex')));
              m.sweep(now, 100, (k) => km.push(k.toString('hex')));
              expect(kw.sort()).toEqual(km.sort());
              break;
            }
            case 'tick':
              now += o.ms;
              break;
          }
          expect(w.size).toBe(m.size);
          expect(w.stats().dataBytes).toBe(m.stats().dataBytes);
          expect(w.stats().expiring).toBe(m.stats().expiring);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('state table: Wasm and Map agree while the Wasm table resizes', () => {
  // enough distinct keys that the table grows and shrinks (and migrates) under the operations
  const key = fc.integer({ min: 0, max: 400 }).map((i) => Buffer.from(`key-${i}`));
  const op = fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant('set' as const), key, len: fc.integer({ min: 0, max: 300 }), exp: fc.constantFrom(0, 0, 0, 3) }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('del' as const), key }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('get' as const), key }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('sweep' as const) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('burst' as const), from: fc.integer({ min: 0, max: 400 }), n: fc.integer({ min: 1, max: 200 }), del: fc.boolean() }) },
  );
  it('same answers through growth, shrinking, migration, expiry and sweeps', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 50, maxLength: 600 }), (ops) => {
        const w = new WasmStateTable(4);
        const m = new MapStateTable();
        let now = 1000;
        let ver = 0;
        const apply = (o: { op: 'set'; key: Buffer; len: number; exp: number } | { op: 'del' | 'get'; key: Buffer } | { op: 'sweep' }) => {
          now++;
          if (o.op === 'set') {
            const v = Buffer.alloc(o.len, ver & 0xff);
            ver++;
            const exp = o.exp ? now + o.exp : 0;
            expect(w.set(o.key, v, 0, ver, 0, exp, undefined, now)).toBe(m.set(o.key, v, 0, ver, 0, exp, undefined, now));
          } else if (o.op === 'del') {
            expect(w.delete(o.key, undefined, undefined, now)).toBe(m.delete(o.key, undefined, undefined, now));
          } else if (o.op === 'get') {
            const a = w.get(o.key, now);
            const b2 = m.get(o.key, now);
            expect(a?.equals(b2!) ?? b2 === undefined).toBe(true);
            if (a) expect(w.last.versionWall).toBe(m.last.versionWall);
          } else {
            const kw: string[] = [];
            const km: string[] = [];
            w.sweep(now, 1000, (k) => kw.push(k.toString()));
            m.sweep(now, 1000, (k) => km.push(k.toString()));
            expect(kw.sort()).toEqual(km.sort());
          }
        };
        for (const o of ops) {
          if (o.op === 'burst') {
            for (let i = 0; i < o.n; i++) {
              const k = Buffer.from(`key-${(o.from + i) % 401}`);
              apply(o.del ? { op: 'del', key: k } : { op: 'set', key: k, len: 8, exp: 0 });
            }
          } else apply(o);
          expect(w.size).toBe(m.size);
        }
        // every key agrees at the end
        for (let i = 0; i <= 400; i++) {
          const k = Buffer.from(`key-${i}`);
          const a = w.get(k, now);
          const b2 = m.get(k, now);
          expect(a === undefined ? b2 === undefined : b2 !== undefined && a.equals(b2)).toBe(true);
        }
        expect(w.stats().dataBytes).toBe(m.stats().dataBytes);
      }),
      { numRuns: 60 },
    );
  });
});

describe('Wasm state table: memory', () => {
  it('gives deleted space back: refilling after deletes does not grow the arena', () => {
    const t = new WasmStateTable();
    for (let i = 0; i < 50_000; i++) set(t, `k${i}`, 'v'.repeat(100));
    const full = t.stats();
    for (let i = 0; i < 50_000; i++) t.delete(b(`k${i}`), undefined, undefined, NOW);
    for (let i = 0; i < 50; i++) t.maintain();
    const empty = t.stats();
    expect(empty.keys).toBe(0);
    expect(empty.entryBytes).toBe(0);
    expect(empty.capacity).toBeLessThan(full.capacity!);
    for (let i = 0; i < 50_000; i++) set(t, `j${i}`, 'w'.repeat(100));
    const refilled = t.stats();
    expect(refilled.entryBytes).toBe(full.entryBytes);
    // the entries reuse the freed blocks; only slot arrays of new sizes may need fresh space
    expect(refilled.memoryBytes!).toBeLessThanOrEqual(full.memoryBytes! + refilled.slotBytes!);
    // what stays free is slot arrays left over from the shrink and regrowth, not entry space
    expect(refilled.freeBytes!).toBeLessThanOrEqual(2 * full.slotBytes!);
  });

  it('grows incrementally: a resize is spread over later writes', () => {
    const t = new WasmStateTable(16);
    let sawMigration = false;
    for (let i = 0; i < 5000; i++) {
      set(t, `k${i}`, 'v');
      // every key stays readable while the table migrates
      if (i % 97 === 0) for (let j = 0; j <= i; j += 13) expect(t.get(b(`k${j}`), NOW)?.toString()).toBe('v');
      const x = (t as unknown as { x: { stateMigrating(): number } }).x;
      if (x.stateMigrating()) sawMigration = true;
    }
    expect(sawMigration).toBe(true);
  });
});
