// Functions the host (src/rules/runtime.ts) provides to the rules module. Both are on rare
// paths only: numbers outside Clinger's fast path, and numbers turned into text.

/** f64 of the ASCII number at [ptr, ptr+len), as JavaScript's Number() reads it. */
// @ts-ignore: decorator
@external("env", "parseNumber")
export declare function hostParseNumber(ptr: usize, len: i32): f64;

/** Writes JavaScript's String(value) as ASCII at dst (at most 32 bytes); returns the length. */
// @ts-ignore: decorator
@external("env", "formatNumber")
export declare function hostFormatNumber(value: f64, dst: usize): i32;
