// JSON scanner over the payload bytes in linear memory, with field extraction.
//
// One pass validates the whole payload (RFC 8259 grammar; nesting deeper than MAX_DEPTH and
// invalid UTF-8 inside strings are the documented differences from JSON.parse) and records,
// for exactly the variable paths the document's conditions use, where each value is.
// The paths form a key trie, built by the host (src/rules/codegen.ts) into the tables blob:
//
//   key node  (KEY_NODE_SIZE = 24 bytes, u32 each)
//     +0  edgeStart   index of the first edge in the key edge array
//     +4  edgeCount   edges sorted by (length, bytes)
//     +8  slot        slot number of this path, or -1 when no condition reads it
//     +12 slotLo      first slot of this subtree (slots are numbered depth-first)
//     +16 slotHi      one past the last slot of this subtree
//     +20 lengthMask  bit min(length, 31) set when an edge's key has that byte length
//   key edge  (EDGE_SIZE = 12 bytes, edges.ts): +0 key offset in the string pool, +4 key length, +8 child node
//
//   slot      (SLOT_SIZE = 32 bytes), array at `slots`:
//     +0  epoch   equal to the current message's epoch when the value below is valid
//     +4  kind    JSON_NULL .. JSON_ARRAY
//     +8  ptr     number: token start; string: first byte of the content (decoded when escaped)
//     +12 len     byte length of the token / content
//     +16 num     f64 value of a number
//     +24 flags   bit 0: string content has escapes (not yet decoded); bit 1: decoded
//     +28 reserved

import { hostParseNumber } from "./host";
import { searchEdges } from "./edges";

export const JSON_NULL: i32 = 1;
export const JSON_FALSE: i32 = 2;
export const JSON_TRUE: i32 = 3;
export const JSON_NUMBER: i32 = 4;
export const JSON_STRING: i32 = 5;
export const JSON_OBJECT: i32 = 6;
export const JSON_ARRAY: i32 = 7;

import { KEY_NODE_SIZE } from "./layout";
export const SLOT_SIZE: usize = 32;
export const FLAG_ESCAPED: u32 = 1;
export const FLAG_DECODED: u32 = 2;

const MAX_DEPTH: i32 = 512;

/** Set by loadTables (engine.ts). */
export let keyNodes: usize = 0;
export let keyEdges: usize = 0;
export let strings: usize = 0;
export let keyNodeCount: i32 = 0;
export let slots: usize = 0;
export let slotCount: i32 = 0;
export let epoch: u32 = 1;

// The payload being scanned.
let base: usize = 0;
let end: usize = 0;
// Scratch arena for decoded keys and strings, reset per message (engine.ts sizes it).
let scratch: usize = 0;
let scratchUsed: usize = 0;

export function scratchTop(): usize {
  return scratch + scratchUsed;
}

export function scratchAdvance(len: usize): void {
  scratchUsed += len;
}

export function setKeyTables(nodes: usize, edges: usize, pool: usize, count: i32, slotArray: usize, nslots: i32): void {
  keyNodes = nodes;
  keyEdges = edges;
  strings = pool;
  keyNodeCount = count;
  slots = slotArray;
  slotCount = nslots;
}

/** Every slot reads as missing until the next scan (a payload that is not a JSON object). */
export function invalidateSlots(): void {
  epoch++;
  if (epoch == 0) epoch = 1;
}

export function setScratch(ptr: usize): void {
  scratch = ptr;
  scratchUsed = 0;
}

// @ts-ignore: decorator
@inline export function slotPtr(slot: i32): usize {
  return slots + (<usize>slot) * SLOT_SIZE;
}

/** Kind of the value at `slot` for this message, or 0 when the path is missing. */
// @ts-ignore: decorator
@inline export function slotKind(slot: i32): i32 {
  const p = slotPtr(slot);
  return load<u32>(p) == epoch ? load<i32>(p, 4) : 0;
}

// @ts-ignore: decorator
@inline function isWs(c: u32): bool {
  return c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09;
}

// @ts-ignore: decorator
@inline function skipWs(pos: usize): usize {
  // one comparison for the usual case (no white space: most payloads are written compact)
  while (pos < end) {
    const c = <u32>load<u8>(pos);
    if (c > 0x20 || !isWs(c)) break;
    pos++;
  }
  return pos;
}

// @ts-ignore: decorator
@inline function isDigit(c: u32): bool {
  return c - 0x30 < 10;
}

// @ts-ignore: decorator
@inline function isHex(c: u32): bool {
  return c - 0x30 < 10 || (c | 0x20) - 0x61 < 6;
}

/** Scans [ptr, ptr+len). True when it is one JSON object; slots of the key trie are filled. */
export function scanObject(ptr: usize, len: usize): bool {
  base = ptr;
  end = ptr + len;
  epoch++;
  if (epoch == 0) epoch = 1;
  let pos = skipWs(base);
  if (pos >= end || load<u8>(pos) != 0x7b) return false;
  const after = keyNodeCount > 0 ? value(pos, 0, 0) : skipValue(pos, 0);
  if (after == 0) return false;
  return skipWs(after) == end;
}

// @ts-ignore: decorator
@inline function record(node: i32, kind: i32, ptr: usize, len: usize, flags: u32): void {
  const slot = load<i32>(keyNodes + (<usize>node) * KEY_NODE_SIZE, 8);
  if (slot < 0) return;
  const p = slotPtr(slot);
  store<u32>(p, epoch);
  store<i32>(p, kind, 4);
  store<u32>(p, <u32>ptr, 8);
  store<u32>(p, <u32>len, 12);
  store<u32>(p, flags, 24);
  if (kind == JSON_NUMBER) store<f64>(p, parseNumber(ptr, len), 16);
}

// @ts-ignore: decorator
@inline function clearSubtree(node: i32): void {
  const n = keyNodes + (<usize>node) * KEY_NODE_SIZE;
  const lo = load<i32>(n, 12);
  const hi = load<i32>(n, 16);
  for (let s = lo; s < hi; s++) store<u32>(slotPtr(s), 0);
}

/** Parses one value at pos (after white space); returns the position after it, or 0 when invalid. */
function value(pos: usize, node: i32, depth: i32): usize {
  if (node < 0) return skipValue(pos, depth);
  pos = skipWs(pos);
  if (pos >= end) return 0;
  const c = <u32>load<u8>(pos);
  if (c == 0x22) {
    const after = stringEnd(pos + 1);
    if (after == 0) return 0;
    if (node >= 0) record(node, JSON_STRING, pos + 1, after - pos - 2, stringFlags);
    return after;
  }
  if (c == 0x7b) {
    if (depth >= MAX_DEPTH) return 0;
    const after = object(pos + 1, node, depth + 1);
    if (after != 0 && node >= 0) record(node, JSON_OBJECT, pos, after - pos, 0);
    return after;
  }
  if (c == 0x5b) {
    if (depth >= MAX_DEPTH) return 0;
    const after = array(pos + 1, node, depth + 1);
    if (after != 0 && node >= 0) record(node, JSON_ARRAY, pos, after - pos, 0);
    return after;
  }
  if (c == 0x2d || isDigit(c)) {
    const after = numberEnd(pos);
    if (after != 0 && node >= 0) record(node, JSON_NUMBER, pos, after - pos, 0);
    return after;
  }
  if (c == 0x74) return literal(pos, node, 0x65757274, JSON_TRUE); // "true"
  if (c == 0x6e) return literal(pos, node, 0x6c6c756e, JSON_NULL); // "null"
  if (c == 0x66) {
    // "false"
    if (pos + 5 > end || load<u32>(pos, 1) != 0x65736c61) return 0;
    if (node >= 0) record(node, JSON_FALSE, pos, 5, 0);
    return pos + 5;
  }
  return 0;
}

function literal(pos: usize, node: i32, word: u32, kind: i32): usize {
  if (pos + 4 > end || load<u32>(pos) != word) return 0;
  if (node >= 0) record(node, kind, pos, 4, 0);
  return pos + 4;
}

let stringFlags: u32 = 0;

const ONES: u64 = 0x0101010101010101;
const HIGHS: u64 = 0x8080808080808080;

/** pos is just after the opening quote; returns the position after the closing quote, or 0. */
// @ts-ignore: decorator
@inline function stringEnd(pos: usize): usize {
  stringFlags = 0;
  for (;;) {
    // eight bytes at a time up to the first quote, backslash or control character (SWAR: a
    // byte b < n shows up in (w - n * ONES) & ~w & HIGHS when b < 0x80; a borrow can only
    // flag bytes above a true one, so the lowest flagged byte is exact: ctz finds it)
    while (pos + 8 <= end) {
      const w = load<u64>(pos);
      const quote = w ^ 0x2222222222222222;
      const slash = w ^ 0x5c5c5c5c5c5c5c5c;
      const m = (((quote - ONES) & ~quote) | ((slash - ONES) & ~slash) | ((w - 0x2020202020202020) & ~w)) & HIGHS;
      if (m != 0) {
        pos += <usize>(ctz(m) >> 3);
        break;
      }
      pos += 8;
    }
    // a special byte, or one of the last seven bytes of the payload
    if (pos >= end) return 0;
    const c = <u32>load<u8>(pos);
    if (c == 0x22) return pos + 1;
    if (c == 0x5c) {
      stringFlags = FLAG_ESCAPED;
      if (pos + 1 >= end) return 0;
      const e = <u32>load<u8>(pos + 1);
      if (e == 0x75) {
        if (pos + 6 > end) return 0;
        if (!isHex(<u32>load<u8>(pos + 2)) || !isHex(<u32>load<u8>(pos + 3)) || !isHex(<u32>load<u8>(pos + 4)) || !isHex(<u32>load<u8>(pos + 5))) return 0;
        pos += 6;
        continue;
      }
      if (e == 0x22 || e == 0x5c || e == 0x2f || e == 0x62 || e == 0x66 || e == 0x6e || e == 0x72 || e == 0x74) {
        pos += 2;
        continue;
      }
      return 0;
    }
    if (c < 0x20) return 0;
    pos++;
  }
  return 0;
}

// @ts-ignore: decorator
@inline function numberEnd(pos: usize): usize {
  if (load<u8>(pos) == 0x2d) pos++;
  if (pos >= end) return 0;
  let c = <u32>load<u8>(pos);
  if (c == 0x30) {
    pos++;
  } else if (isDigit(c)) {
    while (pos < end && isDigit(<u32>load<u8>(pos))) pos++;
  } else return 0;
  if (pos < end && load<u8>(pos) == 0x2e) {
    pos++;
    const start = pos;
    while (pos < end && isDigit(<u32>load<u8>(pos))) pos++;
    if (pos == start) return 0;
  }
  if (pos < end && (<u32>load<u8>(pos) | 0x20) == 0x65) {
    pos++;
    if (pos < end && (load<u8>(pos) == 0x2b || load<u8>(pos) == 0x2d)) pos++;
    const start = pos;
    while (pos < end && isDigit(<u32>load<u8>(pos))) pos++;
    if (pos == start) return 0;
  }
  return pos;
}

function object(pos: usize, node: i32, depth: i32): usize {
  pos = skipWs(pos);
  if (pos >= end) return 0;
  if (load<u8>(pos) == 0x7d) return pos + 1;
  const edges = node >= 0 ? load<i32>(keyNodes + (<usize>node) * KEY_NODE_SIZE, 4) : 0;
  while (true) {
    pos = skipWs(pos);
    if (pos >= end || load<u8>(pos) != 0x22) return 0;
    const keyStart = pos + 1;
    const after = stringEnd(keyStart);
    if (after == 0) return 0;
    let child: i32 = -1;
    if (edges > 0) {
      let kptr = keyStart;
      let klen = after - keyStart - 1;
      // most keys have a length no edge has: no search
      const lengths = load<u32>(keyNodes + (<usize>node) * KEY_NODE_SIZE, 20);
      if (stringFlags != 0) {
        const mark = scratchUsed;
        klen = decodeString(keyStart, klen, scratch + scratchUsed);
        kptr = scratch + mark;
        if (lengths & (1 << <u32>(klen < 31 ? klen : 31))) child = findKey(node, kptr, klen);
        scratchUsed = mark; // the decoded key is not kept
      } else if (lengths & (1 << <u32>(klen < 31 ? klen : 31))) {
        child = findKey(node, kptr, klen);
      }
      if (child >= 0) clearSubtree(child); // a repeated key: the last one wins, as in JSON.parse
    }
    pos = skipWs(after);
    if (pos >= end || load<u8>(pos) != 0x3a) return 0;
    pos = child >= 0 ? value(pos + 1, child, depth) : skipValue(pos + 1, depth);
    if (pos == 0) return 0;
    pos = skipWs(pos);
    if (pos >= end) return 0;
    const c = load<u8>(pos);
    if (c == 0x2c) {
      pos++;
      continue;
    }
    if (c == 0x7d) return pos + 1;
    return 0;
  }
  return 0;
}

// Values no condition reads (most of a payload) are only validated: one loop with an
// explicit stack of open containers (1: object, 0: array), no calls and no key lookups.
const openKinds = memory.data(MAX_DEPTH + 1);

/** A member's key and its colon from pos; returns the position after the colon, or 0. */
// @ts-ignore: decorator
@inline function skipKey(pos: usize): usize {
  pos = skipWs(pos);
  if (pos >= end || load<u8>(pos) != 0x22) return 0;
  pos = stringEnd(pos + 1);
  if (pos == 0) return 0;
  pos = skipWs(pos);
  if (pos >= end || load<u8>(pos) != 0x3a) return 0;
  return pos + 1;
}

/**
 * Validates one value at pos (white space first) inside `depth` open containers, as value()
 * does with no key trie node (same grammar, same depth limit); returns the position after
 * it, or 0 when invalid.
 */
function skipValue(pos: usize, depth: i32): usize {
  let level: i32 = 0; // containers opened here and not closed yet
  for (;;) {
    pos = skipWs(pos);
    if (pos >= end) return 0;
    let c = <u32>load<u8>(pos);
    if (c == 0x22) {
      pos = stringEnd(pos + 1);
      if (pos == 0) return 0;
    } else if (c == 0x7b || c == 0x5b) {
      if (depth + level >= MAX_DEPTH) return 0;
      const obj = c == 0x7b;
      store<u8>(openKinds + <usize>level, obj ? 1 : 0);
      level++;
      pos = skipWs(pos + 1);
      if (pos >= end) return 0;
      if (<u32>load<u8>(pos) == (obj ? 0x7d : 0x5d)) {
        pos++; // empty
        level--;
      } else {
        if (obj) {
          pos = skipKey(pos);
          if (pos == 0) return 0;
        }
        continue; // the first member
      }
    } else if (c == 0x2d || isDigit(c)) {
      pos = numberEnd(pos);
      if (pos == 0) return 0;
    } else if (c == 0x74) {
      if (pos + 4 > end || load<u32>(pos) != 0x65757274) return 0; // "true"
      pos += 4;
    } else if (c == 0x6e) {
      if (pos + 4 > end || load<u32>(pos) != 0x6c6c756e) return 0; // "null"
      pos += 4;
    } else if (c == 0x66) {
      if (pos + 5 > end || load<u32>(pos, 1) != 0x65736c61) return 0; // "false"
      pos += 5;
    } else return 0;
    // after a value: the next member, or the end of containers
    for (;;) {
      if (level == 0) return pos;
      pos = skipWs(pos);
      if (pos >= end) return 0;
      c = <u32>load<u8>(pos);
      const obj = load<u8>(openKinds + <usize>(level - 1)) != 0;
      if (c == 0x2c) {
        pos++;
        if (obj) {
          pos = skipKey(pos);
          if (pos == 0) return 0;
        }
        break;
      }
      if (c != (obj ? 0x7d : 0x5d)) return 0;
      pos++;
      level--;
    }
  }
  return 0;
}

const indexDigits = memory.data(16);

function array(pos: usize, node: i32, depth: i32): usize {
  pos = skipWs(pos);
  if (pos >= end) return 0;
  if (load<u8>(pos) == 0x5d) return pos + 1;
  const edges = node >= 0 ? load<i32>(keyNodes + (<usize>node) * KEY_NODE_SIZE, 4) : 0;
  let index: u32 = 0;
  while (true) {
    let child: i32 = -1;
    if (edges > 0) {
      // array elements are addressed by their decimal index: $list.0
      let n = index;
      let len: usize = 0;
      do {
        len++;
        n /= 10;
      } while (n != 0);
      n = index;
      for (let i = len; i > 0; i--) {
        store<u8>(indexDigits + i - 1, <u8>(0x30 + n % 10));
        n /= 10;
      }
      child = findKey(node, indexDigits, len);
    }
    pos = value(pos, child, depth);
    if (pos == 0) return 0;
    pos = skipWs(pos);
    if (pos >= end) return 0;
    const c = load<u8>(pos);
    if (c == 0x2c) {
      pos++;
      index++;
      continue;
    }
    if (c == 0x5d) return pos + 1;
    return 0;
  }
  return 0;
}

/** The child of `node` under the key [ptr, ptr+len), or -1. */
// @ts-ignore: decorator
@inline export function findKey(node: i32, ptr: usize, len: usize): i32 {
  const n = keyNodes + (<usize>node) * KEY_NODE_SIZE;
  return searchEdges(keyEdges, load<i32>(n), load<i32>(n, 4), strings, ptr, len);
}

// @ts-ignore: decorator
@inline function hexValue(c: u32): u32 {
  return c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x61 + 10;
}

function hex4(p: usize): u32 {
  return (hexValue(load<u8>(p)) << 12) | (hexValue(load<u8>(p, 1)) << 8) | (hexValue(load<u8>(p, 2)) << 4) | hexValue(load<u8>(p, 3));
}

/** Decodes a validated JSON string body into UTF-8 at dst (lone surrogates as WTF-8); returns the length. */
export function decodeString(src: usize, len: usize, dst: usize): usize {
  const stop = src + len;
  let out = dst;
  while (src < stop) {
    const c = <u32>load<u8>(src);
    if (c != 0x5c) {
      store<u8>(out++, <u8>c);
      src++;
      continue;
    }
    const e = <u32>load<u8>(src + 1);
    src += 2;
    if (e == 0x75) {
      let cp = hex4(src);
      src += 4;
      if (cp >= 0xd800 && cp < 0xdc00 && src + 6 <= stop && load<u8>(src) == 0x5c && load<u8>(src, 1) == 0x75) {
        const lo = hex4(src + 2);
        if (lo >= 0xdc00 && lo < 0xe000) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          src += 6;
        }
      }
      if (cp < 0x80) store<u8>(out++, <u8>cp);
      else if (cp < 0x800) {
        store<u8>(out++, <u8>(0xc0 | (cp >> 6)));
        store<u8>(out++, <u8>(0x80 | (cp & 0x3f)));
      } else if (cp < 0x10000) {
        store<u8>(out++, <u8>(0xe0 | (cp >> 12)));
        store<u8>(out++, <u8>(0x80 | ((cp >> 6) & 0x3f)));
        store<u8>(out++, <u8>(0x80 | (cp & 0x3f)));
      } else {
        store<u8>(out++, <u8>(0xf0 | (cp >> 18)));
        store<u8>(out++, <u8>(0x80 | ((cp >> 12) & 0x3f)));
        store<u8>(out++, <u8>(0x80 | ((cp >> 6) & 0x3f)));
        store<u8>(out++, <u8>(0x80 | (cp & 0x3f)));
      }
      continue;
    }
    let b: u32 = e; // \" \\ \/
    if (e == 0x62) b = 0x08;
    else if (e == 0x66) b = 0x0c;
    else if (e == 0x6e) b = 0x0a;
    else if (e == 0x72) b = 0x0d;
    else if (e == 0x74) b = 0x09;
    store<u8>(out++, <u8>b);
  }
  return out - dst;
}

// Exact powers of ten: a decimal with at most 15 significant digits times 10^k, |k| <= 22,
// rounds exactly once (Clinger's fast path); anything else asks the host (JSON.parse's digits).
const POW10: StaticArray<f64> = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/**
 * f64 of a number token (JSON grammar, or the looser numeric-string grammar of payload_type:
 * optional sign, digits with an optional fraction, optional exponent; validated by the caller).
 */
export function parseNumber(ptr: usize, len: usize): f64 {
  const stop = ptr + len;
  let p = ptr;
  let negative = false;
  let c = <u32>load<u8>(p);
  if (c == 0x2d || c == 0x2b) {
    negative = c == 0x2d;
    p++;
  }
  let mantissa: u64 = 0;
  let digits: i32 = 0;
  let exp10: i32 = 0;
  let seenDot = false;
  while (p < stop) {
    c = <u32>load<u8>(p);
    if (isDigit(c)) {
      if (mantissa != 0 || c != 0x30) {
        if (digits >= 15) return hostParseNumber(ptr, <i32>len);
        mantissa = mantissa * 10 + <u64>(c - 0x30);
        digits++;
      }
      if (seenDot) exp10--;
    } else if (c == 0x2e) {
      seenDot = true;
    } else break;
    p++;
  }
  if (p < stop) {
    // exponent
    p++;
    let expNegative = false;
    c = <u32>load<u8>(p);
    if (c == 0x2d || c == 0x2b) {
      expNegative = c == 0x2d;
      p++;
    }
    let e: i32 = 0;
    while (p < stop) {
      if (e > 100000) return hostParseNumber(ptr, <i32>len);
      e = e * 10 + <i32>(load<u8>(p) - 0x30);
      p++;
    }
    exp10 += expNegative ? -e : e;
  }
  let result: f64;
  if (mantissa == 0) result = 0;
  else if (exp10 == 0) result = <f64>mantissa;
  else if (exp10 > 0 && exp10 <= 22) result = <f64>mantissa * unchecked(POW10[exp10]);
  else if (exp10 < 0 && exp10 >= -22) result = <f64>mantissa / unchecked(POW10[-exp10]);
  else return hostParseNumber(ptr, <i32>len);
  return negative ? -result : result;
}
