// The edges of the topic tree (engine.ts) and of the key trie (json.ts) have one layout,
// 12 bytes each: +0 offset of the label in the string pool, +4 label length, +8 child node;
// a node's edges are sorted by (length, bytes). This is the search both use.

import { EDGE_SIZE } from "./layout";
export { EDGE_SIZE };

/** Binary search of `count` edges from index `first` for the label [ptr, ptr+len): the child, or -1. */
// @ts-ignore: decorator
@inline export function searchEdges(edges: usize, first: i32, count: i32, pool: usize, ptr: usize, len: usize): i32 {
  let lo: i32 = first;
  let hi: i32 = first + count - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const e = edges + (<usize>mid) * EDGE_SIZE;
    const elen = <usize>load<u32>(e, 4);
    let c: i32;
    if (elen != len) c = elen < len ? -1 : 1;
    else c = compareBytes(pool + <usize>load<u32>(e), ptr, len);
    if (c == 0) return load<i32>(e, 8);
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** memory.compare's sign, eight bytes at a time (labels and keys are short and unaligned). */
// @ts-ignore: decorator
@inline export function compareBytes(a: usize, b: usize, len: usize): i32 {
  while (len >= 8) {
    const x = load<u64>(a);
    const y = load<u64>(b);
    if (x != y) {
      // little-endian: the lowest differing byte is the first one in memory
      const shift = ctz(x ^ y) & ~(<u64>7);
      return <i32>((x >> shift) & 0xff) - <i32>((y >> shift) & 0xff);
    }
    a += 8;
    b += 8;
    len -= 8;
  }
  while (len > 0) {
    const x = <i32>load<u8>(a);
    const y = <i32>load<u8>(b);
    if (x != y) return x - y;
    a++;
    b++;
    len--;
  }
  return 0;
}
