// RESP codec, hybrid logical clock, glob patterns: table-driven.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeAnswer, decodeRequest, encodeBulk, encodeError, encodeInteger, encodeRequest, encodeSetNotification } from '../../src/state/resp.js';
import { compareHlc, formatHlc, HybridLogicalClock, parseHlc } from '../../src/state/hlc.js';
import { globToRegExp } from '../../src/state/authorization.js';

describe('RESP', () => {
  it('encodes requests as arrays of bulk strings', () => {
    expect(encodeRequest(['SET', 'k', Buffer.from([0, 13, 10])]).toString('latin1')).toBe('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\x00\r\n\r\n');
    expect(encodeRequest(['GET', '']).toString('latin1')).toBe('*2\r\n$3\r\nGET\r\n$0\r\n\r\n');
  });

  it('round-trips any request', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 50 }), { minLength: 1, maxLength: 6 }), (parts) => {
        const decoded = decodeRequest(encodeRequest(parts.map((p) => Buffer.from(p))));
        expect(decoded?.map((b) => [...b])).toEqual(parts.map((p) => [...p]));
      }),
    );
  });

  it.each([
    ['', 'empty'],
    ['GET k', 'inline command'],
    ['*0\r\n', 'no elements'],
    ['*-1\r\n', 'null array'],
    ['*1\r\n', 'missing element'],
    ['*1\r\n$3\r\nGET', 'missing CRLF'],
    ['*1\r\n$3\r\nGETX\r\n', 'length mismatch'],
    ['*1\r\n$-1\r\n', 'null bulk element'],
    ['*1\r\n+OK\r\n', 'simple string element'],
    ['*1\r\n$3\r\nGET\r\n*', 'trailing bytes'],
    ['*1x\r\n$3\r\nGET\r\n', 'bad count'],
    ['*99999999999\r\n', 'huge count'],
    ['*1\r\n$12345678901\r\nx\r\n', 'huge length'],
  ])('refuses %j (%s)', (text) => {
    expect(decodeRequest(Buffer.from(text, 'latin1'))).toBeUndefined();
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => void decodeRequest(Buffer.from(bytes))));
  });

  it('encodes and decodes answers', () => {
    expect(encodeInteger(-1).toString()).toBe(':-1\r\n');
    expect(encodeInteger(42).toString()).toBe(':42\r\n');
    expect(encodeBulk(Buffer.from('hi')).toString()).toBe('$2\r\nhi\r\n');
    expect(encodeError('syntax error').toString()).toBe('-ERR syntax error\r\n');
    expect(decodeAnswer(Buffer.from('+OK\r\n'))).toEqual({ type: 'simple', value: 'OK' });
    expect(decodeAnswer(Buffer.from(':-1\r\n'))).toEqual({ type: 'integer', value: -1 });
    expect(decodeAnswer(Buffer.from('$-1\r\n'))).toEqual({ type: 'bulk', value: null });
    expect(decodeAnswer(Buffer.from('-ERR not authorized\r\n'))).toEqual({ type: 'error', message: 'not authorized' });
    const n = decodeAnswer(encodeSetNotification(Buffer.from('v')));
    expect(n?.type).toBe('array');
    expect(decodeAnswer(Buffer.from('$5\r\nab\r\n'))).toBeUndefined();
  });
});

describe('hybrid logical clock', () => {
  it('parses padded and unpadded forms, refuses the rest', () => {
    expect(parseHlc('001696374425000:00000:node-a')).toEqual({ wall: 1696374425000, counter: 0, node: 'node-a' });
    expect(parseHlc('1696374425000:7:n:with:colons')).toEqual({ wall: 1696374425000, counter: 7, node: 'n:with:colons' });
    for (const bad of ['', '1:2', '1:2:', ':2:n', '1::n', 'a:2:n', '1:b:n', '-1:2:n', '1.5:2:n', '1:99999999999:n', '99999999999999999:0:n']) {
      expect(parseHlc(bad), bad).toBeUndefined();
    }
    expect(formatHlc({ wall: 1696374425000, counter: 3, node: 'x' })).toBe('001696374425000:00003:x');
  });

  it('orders by wall clock, counter, node', () => {
    const t = (w: number, c: number, n: string) => ({ wall: w, counter: c, node: n });
    expect(compareHlc(t(1, 9, 'z'), t(2, 0, 'a'))).toBe(-1);
    expect(compareHlc(t(2, 1, 'a'), t(2, 0, 'z'))).toBe(1);
    expect(compareHlc(t(2, 1, 'a'), t(2, 1, 'b'))).toBe(-1);
    expect(compareHlc(t(2, 1, 'a'), t(2, 1, 'a'))).toBe(0);
  });

  it('ticks past what it saw and what it issued, even when the wall clock stands still or goes back', () => {
    let now = 1000;
    const clock = new HybridLogicalClock('b', () => now);
    const a = clock.tick();
    expect(a).toEqual({ wall: 1000, counter: 0, node: 'b' });
    expect(clock.tick()).toEqual({ wall: 1000, counter: 1, node: 'b' });
    expect(clock.tick({ wall: 5000, counter: 3, node: 'z' })).toEqual({ wall: 5000, counter: 4, node: 'b' });
    now = 900;
    expect(clock.tick()).toEqual({ wall: 5000, counter: 5, node: 'b' });
    now = 6000;
    expect(clock.tick({ wall: 10, counter: 0, node: 'a' })).toEqual({ wall: 6000, counter: 0, node: 'b' });
    expect(clock.tooFarAhead({ wall: 66_001, counter: 0, node: '' })).toBe(true);
    expect(clock.tooFarAhead({ wall: 66_000, counter: 0, node: '' })).toBe(false);
  });

  it('is monotonic under any interleaving of ticks, observations and clock jumps', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: -50, max: 50 }), fc.option(fc.integer({ min: 0, max: 2000 })))), (steps) => {
        let now = 1000;
        const clock = new HybridLogicalClock('n', () => now);
        let prev = clock.tick();
        for (const [jump, seen] of steps) {
          now += jump;
          const s = seen === null ? undefined : { wall: seen, counter: 3, node: 'zz' };
          const next = clock.tick(s);
          expect(compareHlc(next, prev)).toBe(1);
          if (s) expect(compareHlc(next, s)).toBe(1);
          prev = next;
        }
      }),
    );
  });
});

describe('glob patterns', () => {
  it.each([
    ['a*', 'abc', true],
    ['a*', 'ba', false],
    ['a?c', 'abc', true],
    ['a?c', 'ac', false],
    ['room[0-9]', 'room7', true],
    ['room[0-9]', 'roomx', false],
    ['room[!0-9]', 'roomx', true],
    ['a.b', 'aXb', false],
    ['x/(y)', 'x/(y)', true],
    ['[*]', '*', true],
    ['[*]', 'a', false],
    ['[unclosed', '[unclosed', true],
  ])('%s on %s: %s', (glob, text, match) => {
    expect(globToRegExp(glob).test(text)).toBe(match);
  });
});
