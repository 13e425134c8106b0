// Functions the host (src/rules/runtime.ts) provides to the rules module. All are on rare
// paths only: numbers outside Clinger's fast path, numbers turned into text, state() reads,
// and the clock of the messages sampled for timing.

/** f64 of the ASCII number at [ptr, ptr+len), as JavaScript's Number() reads it. */
// @ts-ignore: decorator
@external("env", "parseNumber")
export declare function hostParseNumber(ptr: usize, len: i32): f64;

/** Writes JavaScript's String(value) as ASCII at dst (at most 32 bytes); returns the length. */
// @ts-ignore: decorator
@external("env", "formatNumber")
export declare function hostFormatNumber(value: f64, dst: usize): i32;

/**
 * state('key'): the host renders key template `key` for the current topic and reads the state
 * store. Writes a number (f64) or string bytes at dst (at most cap bytes) and returns
 * (length << 3) | kind: kind 1 null, 2 false, 3 true, 4 number, 5 string, 6 string longer than
 * cap (call again with room for `length` bytes); -1 when the key is absent.
 */
// @ts-ignore: decorator
@external("env", "stateRead")
export declare function hostStateRead(key: i32, dst: usize, cap: i32): i32;

/** A monotonic clock in milliseconds (performance.now()): read only on messages sampled for timing. */
// @ts-ignore: decorator
@external("env", "clock")
export declare function hostClock(): f64;
