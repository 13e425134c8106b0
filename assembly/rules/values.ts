// Values and three-valued logic of fr_script conditions.
//
// Logic results are i32: FALSE = 0, TRUE = 1, UNKNOWN = 2 (SQL-style, docs/rules.md).
// Intermediate values live in registers, a fixed region of `registerCount` entries:
//
//   register (REG_SIZE = 24 bytes)
//     +0  kind   V_UNKNOWN, V_NULL, V_BOOL, V_NUMBER, V_STRING
//     +4  ptr    string: first byte of its UTF-8 (payload, scratch arena or a literal)
//     +8  len    string: byte length
//     +12 reserved
//     +16 num    number value; booleans as 0 / 1
//
// Objects and arrays, missing fields and values that a payload_type cannot convert are
// V_UNKNOWN. The generated code (src/rules/codegen.ts) passes register numbers, slot numbers
// and operator codes as constants, so after inlining most of this folds away.

import {
  slotPtr, slotKind, decodeString, parseNumber, scratchTop, scratchAdvance,
  JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, FLAG_ESCAPED, FLAG_DECODED,
} from "./json";
import { hostFormatNumber } from "./host";

export const FALSE: i32 = 0;
export const TRUE: i32 = 1;
export const UNKNOWN: i32 = 2;

import { V_UNKNOWN, V_NULL, V_BOOL, V_NUMBER, V_STRING } from "./layout";
export { V_UNKNOWN, V_NULL, V_BOOL, V_NUMBER, V_STRING };

// Comparison operators
export const EQ: i32 = 0;
export const NE: i32 = 1;
export const LT: i32 = 2;
export const LE: i32 = 3;
export const GT: i32 = 4;
export const GE: i32 = 5;
// Arithmetic operators
export const ADD: i32 = 0;
export const SUB: i32 = 1;
export const MUL: i32 = 2;
export const DIV: i32 = 3;
export const MOD: i32 = 4;
// payload_type
export const T_NONE: i32 = 0;
export const T_INT: i32 = 1;
export const T_FLOAT: i32 = 2;
export const T_STR: i32 = 3;
export const T_BOOL: i32 = 4;

export const REG_SIZE: usize = 24;
let registers: usize = 0;

/** Per-message counts of unknown results, read by engine.ts. */
export let missingCount: f64 = 0;
export let kindCount: f64 = 0;

export function setRegisters(ptr: usize): void {
  registers = ptr;
}

// @ts-ignore: decorator
@inline function reg(r: i32): usize {
  return registers + (<usize>r) * REG_SIZE;
}

/** A register's address (memory.ts reads and writes values directly). */
// @ts-ignore: decorator
@inline export function regPtr(r: i32): usize {
  return registers + (<usize>r) * REG_SIZE;
}

/** abs(e): the absolute value of a number. */
export function absValue(r: i32, a: i32): void {
  const pa = reg(a);
  if (load<i32>(pa) != V_NUMBER) setUnknown(r);
  else setNumber(r, Math.abs(load<f64>(pa, 16)));
}

/** Copies register a into r. */
export function copyValue(r: i32, a: i32): void {
  memory.copy(reg(r), reg(a), REG_SIZE);
}

// @ts-ignore: decorator
@inline export function setNumber(r: i32, v: f64): void {
  const p = reg(r);
  store<i32>(p, V_NUMBER);
  store<f64>(p, v, 16);
}

// @ts-ignore: decorator
@inline export function setString(r: i32, ptr: usize, len: i32): void {
  const p = reg(r);
  store<i32>(p, V_STRING);
  store<u32>(p, <u32>ptr, 4);
  store<i32>(p, len, 8);
}

// @ts-ignore: decorator
@inline export function setBool(r: i32, b: bool): void {
  const p = reg(r);
  store<i32>(p, V_BOOL);
  store<f64>(p, b ? 1 : 0, 16);
}

// @ts-ignore: decorator
@inline export function setNull(r: i32): void {
  store<i32>(reg(r), V_NULL);
}

// @ts-ignore: decorator
@inline export function setUnknown(r: i32): void {
  store<i32>(reg(r), V_UNKNOWN);
}

/** A logic result as a value: TRUE/FALSE become booleans, UNKNOWN stays unknown. */
export function setTri(r: i32, t: i32): void {
  if (t == UNKNOWN) setUnknown(r);
  else setBool(r, t == TRUE);
}

/** A value used as a condition: only booleans have a truth value. */
export function truth(r: i32): i32 {
  const p = reg(r);
  if (load<i32>(p) != V_BOOL) return UNKNOWN;
  return load<f64>(p, 16) != 0 ? TRUE : FALSE;
}

// @ts-ignore: decorator
@inline export function and3(a: i32, b: i32): i32 {
  // a is not FALSE here (the generated code short-circuits)
  return b == FALSE ? FALSE : (a == TRUE ? b : UNKNOWN);
}

// @ts-ignore: decorator
@inline export function or3(a: i32, b: i32): i32 {
  // a is not TRUE here
  return b == TRUE ? TRUE : (a == FALSE ? b : UNKNOWN);
}

// @ts-ignore: decorator
@inline export function not3(a: i32): i32 {
  return a == UNKNOWN ? UNKNOWN : a ^ 1;
}

/** Whether the path at `slot` is absent from this message's payload. */
// @ts-ignore: decorator
@inline export function isMissing(slot: i32): bool {
  return slotKind(slot) == 0;
}

export function resetUnknownCounts(): void {
  missingCount = 0;
  kindCount = 0;
}

/** Counts an UNKNOWN statement result by cause (metrics). */
export function noteUnknown(missing: bool): void {
  if (missing) missingCount += 1;
  else kindCount += 1;
}

/** Bytes of a string slot, decoding escapes once into the scratch arena. */
function slotString(s: usize): void {
  const flags = load<u32>(s, 24);
  if ((flags & FLAG_ESCAPED) != 0 && (flags & FLAG_DECODED) == 0) {
    const dst = scratchTop();
    const len = decodeString(<usize>load<u32>(s, 8), <usize>load<u32>(s, 12), dst);
    scratchAdvance(len);
    store<u32>(s, <u32>dst, 8);
    store<u32>(s, <u32>len, 12);
    store<u32>(s, flags | FLAG_DECODED, 24);
  }
}

// @ts-ignore: decorator
@inline function isDigitByte(c: u32): bool {
  return c - 0x30 < 10;
}

/**
 * Numeric text of payload_type int/float: optional ASCII white space, an optional sign,
 * digits with an optional fraction (or a fraction alone), an optional exponent.
 * Returns NaN when the text is not numeric (NaN never comes from JSON).
 */
function numericString(ptr: usize, len: usize): f64 {
  let a = ptr;
  let b = ptr + len;
  while (a < b && (load<u8>(a) == 0x20 || load<u8>(a) == 0x09 || load<u8>(a) == 0x0a || load<u8>(a) == 0x0d)) a++;
  while (b > a && (load<u8>(b - 1) == 0x20 || load<u8>(b - 1) == 0x09 || load<u8>(b - 1) == 0x0a || load<u8>(b - 1) == 0x0d)) b--;
  let p = a;
  if (p < b && (load<u8>(p) == 0x2b || load<u8>(p) == 0x2d)) p++;
  let intDigits = 0;
  while (p < b && isDigitByte(<u32>load<u8>(p))) {
    p++;
    intDigits++;
  }
  let fracDigits = 0;
  if (p < b && load<u8>(p) == 0x2e) {
    p++;
    while (p < b && isDigitByte(<u32>load<u8>(p))) {
      p++;
      fracDigits++;
    }
  }
  if (intDigits + fracDigits == 0) return NaN;
  if (p < b && (<u32>load<u8>(p) | 0x20) == 0x65) {
    p++;
    if (p < b && (load<u8>(p) == 0x2b || load<u8>(p) == 0x2d)) p++;
    let expDigits = 0;
    while (p < b && isDigitByte(<u32>load<u8>(p))) {
      p++;
      expDigits++;
    }
    if (expDigits == 0) return NaN;
  }
  if (p != b) return NaN;
  return parseNumber(a, b - a);
}

// "true", "True", "false", "False"
function boolString(ptr: usize, len: usize): i32 {
  if (len == 4) {
    const w = load<u32>(ptr);
    if (w == 0x65757274 || w == 0x65757254) return TRUE;
  } else if (len == 5) {
    const w = load<u32>(ptr, 1);
    const c = load<u8>(ptr);
    if (w == 0x65736c61 && (c == 0x66 || c == 0x46)) return FALSE;
  }
  return UNKNOWN;
}

const TEXT_TRUE = memory.data<u8>([0x74, 0x72, 0x75, 0x65]);
const TEXT_FALSE = memory.data<u8>([0x66, 0x61, 0x6c, 0x73, 0x65]);

/** Loads the value at `slot` into register r, converted to payload_type `type`. */
export function loadVar(r: i32, slot: i32, type: i32): void {
  const kind = slotKind(slot);
  const s = slotPtr(slot);
  if (kind == 0 || kind > JSON_STRING) {
    setUnknown(r); // missing, object or array
    return;
  }
  if (type == T_NONE) {
    if (kind == JSON_NUMBER) setNumber(r, load<f64>(s, 16));
    else if (kind == JSON_STRING) {
      slotString(s);
      setString(r, <usize>load<u32>(s, 8), load<i32>(s, 12));
    } else if (kind == JSON_NULL) setNull(r);
    else setBool(r, kind == JSON_TRUE);
    return;
  }
  if (kind == JSON_NULL) {
    setUnknown(r);
    return;
  }
  if (type == T_INT || type == T_FLOAT) {
    let v: f64;
    if (kind == JSON_NUMBER) v = load<f64>(s, 16);
    else if (kind == JSON_STRING) {
      slotString(s);
      v = numericString(<usize>load<u32>(s, 8), <usize>load<u32>(s, 12));
      if (isNaN(v)) {
        setUnknown(r);
        return;
      }
    } else v = kind == JSON_TRUE ? 1 : 0;
    setNumber(r, type == T_INT ? Math.trunc(v) : v);
    return;
  }
  if (type == T_STR) {
    if (kind == JSON_STRING) {
      slotString(s);
      setString(r, <usize>load<u32>(s, 8), load<i32>(s, 12));
    } else if (kind == JSON_NUMBER) {
      const dst = scratchTop();
      const len = hostFormatNumber(load<f64>(s, 16), dst);
      scratchAdvance(<usize>len);
      setString(r, dst, len);
    } else if (kind == JSON_TRUE) setString(r, TEXT_TRUE, 4);
    else setString(r, TEXT_FALSE, 5);
    return;
  }
  // T_BOOL
  if (kind == JSON_NUMBER) setBool(r, load<f64>(s, 16) != 0);
  else if (kind == JSON_STRING) {
    slotString(s);
    const t = boolString(<usize>load<u32>(s, 8), <usize>load<u32>(s, 12));
    if (t == UNKNOWN) setUnknown(r);
    else setBool(r, t == TRUE);
  } else setBool(r, kind == JSON_TRUE);
}

/** Arithmetic on two numbers; anything else, and division by zero, is unknown. */
export function arith(r: i32, op: i32, a: i32, b: i32): void {
  const pa = reg(a);
  const pb = reg(b);
  if (load<i32>(pa) != V_NUMBER || load<i32>(pb) != V_NUMBER) {
    setUnknown(r);
    return;
  }
  const x = load<f64>(pa, 16);
  const y = load<f64>(pb, 16);
  let v: f64;
  if (op == ADD) v = x + y;
  else if (op == SUB) v = x - y;
  else if (op == MUL) v = x * y;
  else {
    if (y == 0) {
      setUnknown(r);
      return;
    }
    v = op == DIV ? x / y : x % y; // % keeps the sign of the dividend (fmod)
  }
  setNumber(r, v);
}

export function negate(r: i32, a: i32): void {
  const pa = reg(a);
  if (load<i32>(pa) != V_NUMBER) setUnknown(r);
  else setNumber(r, -load<f64>(pa, 16));
}

// @ts-ignore: decorator
@inline function order(op: i32, c: i32): i32 {
  // c < 0, == 0, > 0
  let t: bool;
  if (op == LT) t = c < 0;
  else if (op == LE) t = c <= 0;
  else if (op == GT) t = c > 0;
  else t = c >= 0;
  return t ? TRUE : FALSE;
}

// @ts-ignore: decorator
@inline function compareNumbers(op: i32, x: f64, y: f64): i32 {
  let t: bool;
  if (op == EQ) t = x == y;
  else if (op == NE) t = x != y;
  else if (op == LT) t = x < y;
  else if (op == LE) t = x <= y;
  else if (op == GT) t = x > y;
  else t = x >= y;
  return t ? TRUE : FALSE;
}

/** Compares two registers. `==`/`!=` across kinds are FALSE/TRUE; ordering needs two numbers or two strings. */
export function compare(op: i32, a: i32, b: i32): i32 {
  const pa = reg(a);
  const pb = reg(b);
  const ka = load<i32>(pa);
  const kb = load<i32>(pb);
  if (ka == V_UNKNOWN || kb == V_UNKNOWN) return UNKNOWN;
  if (ka == V_NUMBER && kb == V_NUMBER) return compareNumbers(op, load<f64>(pa, 16), load<f64>(pb, 16));
  if (op == EQ || op == NE) {
    let equal: bool;
    if (ka != kb) equal = false;
    else if (ka == V_NULL) equal = true;
    else if (ka == V_BOOL) equal = load<f64>(pa, 16) == load<f64>(pb, 16);
    else {
      const la = load<i32>(pa, 8);
      equal = la == load<i32>(pb, 8) && memory.compare(<usize>load<u32>(pa, 4), <usize>load<u32>(pb, 4), <usize>la) == 0;
    }
    return (op == EQ) == equal ? TRUE : FALSE;
  }
  if (ka == V_STRING && kb == V_STRING) {
    // UTF-8 byte order is code point order
    const la = load<i32>(pa, 8);
    const lb = load<i32>(pb, 8);
    let c = memory.compare(<usize>load<u32>(pa, 4), <usize>load<u32>(pb, 4), <usize>(la < lb ? la : lb));
    if (c == 0) c = la - lb;
    return order(op, c);
  }
  return UNKNOWN;
}

/** Fast path for `$var OP number` (the usual condition): no registers when the field is a number. */
export function compareSlotNumber(slot: i32, type: i32, op: i32, literal: f64, scratchReg: i32): i32 {
  if (slotKind(slot) == JSON_NUMBER && (type == T_NONE || type == T_FLOAT || type == T_INT)) {
    let v = load<f64>(slotPtr(slot), 16);
    if (type == T_INT) v = Math.trunc(v);
    return compareNumbers(op, v, literal);
  }
  loadVar(scratchReg, slot, type);
  setNumber(scratchReg + 1, literal);
  return compare(op, scratchReg, scratchReg + 1);
}
