/**
 * The state store over the storage interface: every write that changed the table is stored,
 * its answer waits for storage, and a new service loading the stored snapshot and writes has
 * the same keys, versions, expiries and fencing tokens. Runs over MemoryStorage (the same
 * interface as the durable one; the durable one is checked by the SIGKILL test).
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/storage/memory.js';
import { Harness } from './state-harness.js';

/** The value of a bulk answer (null: no such key). */
function bulk(h: Harness, key: string): string | null {
  const a = h.ask(['GET', key]);
  if (a.type !== 'bulk') throw new Error(`GET ${key}: ${JSON.stringify(a)}`);
  return a.value === null ? null : a.value.toString();
}

const flush = () => new Promise((r) => setImmediate(r));

describe('state store with storage', () => {
  it('answers a write only once storage says it is durable', async () => {
    const storage = new MemoryStorage();
    const h = new Harness({}, { storage });
    expect(h.request(['SET', 'k', 'v'])).toBeUndefined(); // not yet
    await flush();
    expect(h.published.at(-1)?.payload.toString()).toBe('+OK\r\n');
    expect(storage.stateLog().ops).toHaveLength(1);
    // a GET writes nothing and is answered at once
    expect(bulk(h, 'k')).toBe('v');
    expect(storage.stateLog().ops).toHaveLength(1);
  });

  it('a new service loading the stored writes has the same keys, versions, expiries and fencing', async () => {
    const storage = new MemoryStorage();
    const a = new Harness({}, { storage });
    const ca = a.client('a');
    a.request(['SET', 'plain', 'one']);
    a.request(['SET', 'plain', 'two']);
    a.request(['SET', 'gone', 'x']);
    a.request(['DEL', 'gone']);
    a.request(['SET', 'match', 'm']);
    a.request(['VDEL', 'match', 'm']);
    a.request(['SET', 'short', 'lived', 'PX', '1000']);
    a.request(['SET', 'nx', 'first', 'NX']);
    a.request(['SET', 'nx', 'second', 'NX']); // not applied: nothing stored for it
    const token = `${a.clock}:5:a`;
    a.request(['SET', 'res', 'guarded'], { client: ca, ft: token });
    await flush();
    const versions = new Map<string, string | undefined>();
    for (const k of ['plain', 'short', 'nx', 'res']) versions.set(k, a.ask(['GET', k]).ts);
    expect(storage.stateLog().ops).toHaveLength(9);

    const b = new Harness({}, { storage });
    b.clock = a.clock;
    expect(b.service.loadFromStorage()).toEqual({ keys: 4, writes: 9 });
    expect(bulk(b, 'plain')).toBe('two');
    expect(bulk(b, 'gone')).toBeNull();
    expect(bulk(b, 'match')).toBeNull();
    expect(bulk(b, 'nx')).toBe('first');
    for (const [k, ts] of versions) expect(b.ask(['GET', k]).ts, k).toBe(ts);
    // the fencing token came back with the key: a write without one is refused
    expect(b.request(['SET', 'res', 'x'])?.payload.toString()).toMatch(/^-ERR/);
    // the expiry too
    b.clock += 1500;
    expect(bulk(b, 'short')).toBeNull();
    // loading compacted the writes into one snapshot: a third service needs no replay
    const c = new Harness({}, { storage });
    c.clock = b.clock;
    expect(c.service.loadFromStorage().writes).toBe(0);
    expect(bulk(c, 'plain')).toBe('two');
    // versions issued after loading stay ahead of the stored ones
    c.request(['SET', 'plain', 'three']);
    await flush();
    expect(c.ask(['GET', 'plain']).ts! > versions.get('plain')!).toBe(true);
  });
});
