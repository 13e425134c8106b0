/**
 * Statements' memory (prev values, deadband references, window samples and buckets) as the
 * backup carries it: JSON with the floats as base64 of little-endian f64 (so -0, NaN and the
 * infinities survive) and topics and strings as base64 bytes.
 */
import type { CellMemory, StatementMemory } from './runtime.js';

type Encoded = { key: string; cells: string[]; topics: { t: string; c: unknown[] }[] };

function f64(a: Float64Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}
function unf64(s: unknown, stride: number): Float64Array {
  if (typeof s !== 'string') throw new Error('rules memory: expected base64 floats');
  const b = Buffer.from(s, 'base64');
  if (b.length % (8 * stride) !== 0) throw new Error('rules memory: bad float array');
  const out = new Float64Array(b.length / 8);
  for (let i = 0; i < out.length; i++) out[i] = b.readDoubleLE(i * 8);
  return out;
}

export function encodeMemory(memory: readonly StatementMemory[]): Encoded[] {
  return memory.map((m) => ({
    key: m.key,
    cells: m.cells,
    topics: m.topics.map((t) => ({
      t: t.topic.toString('base64'),
      c: t.cells.map((c) => {
        if (c.kind === 'value') return { k: 'v', h: c.has, y: c.type, n: f64(new Float64Array([c.num])), ...(c.str ? { s: c.str.toString('base64') } : {}) };
        if (c.kind === 'deadband') return { k: 'd', h: c.has, r: f64(new Float64Array([c.ref])) };
        return { k: 'w', e: f64(c.exact), b: f64(c.buckets) };
      }),
    })),
  }));
}

/** Throws on anything that is not what encodeMemory writes. */
export function decodeMemory(raw: unknown): StatementMemory[] {
  if (!Array.isArray(raw)) throw new Error('rules memory: expected a list');
  return raw.map((m: Partial<Encoded>) => {
    if (typeof m?.key !== 'string' || !Array.isArray(m.cells) || !m.cells.every((c) => typeof c === 'string') || !Array.isArray(m.topics)) throw new Error('rules memory: bad statement');
    return {
      key: m.key,
      cells: m.cells,
      topics: m.topics.map((t) => {
        if (typeof t?.t !== 'string' || !Array.isArray(t.c)) throw new Error('rules memory: bad topic');
        return {
          topic: Buffer.from(t.t, 'base64'),
          cells: t.c.map((x: unknown): CellMemory => {
            const c = x as Record<string, unknown>;
            if (c?.['k'] === 'v') {
              if (typeof c['y'] !== 'number') throw new Error('rules memory: bad value cell');
              return { kind: 'value', has: c['h'] === true, type: c['y'], num: unf64(c['n'], 1)[0] ?? 0, ...(typeof c['s'] === 'string' ? { str: Buffer.from(c['s'], 'base64') } : {}) };
            }
            if (c?.['k'] === 'd') return { kind: 'deadband', has: c['h'] === true, ref: unf64(c['r'], 1)[0] ?? 0 };
            if (c?.['k'] === 'w') {
              const exact = unf64(c['e'], 2);
              const buckets = unf64(c['b'], 7);
              if (buckets.length / 7 > 65) throw new Error('rules memory: too many buckets');
              return { kind: 'window', exact, buckets };
            }
            throw new Error('rules memory: bad cell');
          }),
        };
      }),
    };
  });
}
