import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { crc32, crc32Range } from '../../src/persistence/snapshot.js';

describe('crc32Range', () => {
  it('equals crc32 of the span for every length from 0 to 600 bytes at several offsets', () => {
    const b = randomBytes(2048);
    for (const start of [0, 1, 3, 7, 100]) {
      for (let len = 0; len <= 600; len++) expect(crc32Range(b, start, start + len)).toBe(crc32(b.subarray(start, start + len)) >>> 0);
    }
  });

  it('gives the standard CRC-32 check value', () => {
    const b = Buffer.from('xx123456789yy', 'latin1');
    expect(crc32Range(b, 2, 11)).toBe(0xcbf43926);
  });
});
