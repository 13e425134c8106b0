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
    else c = memory.compare(pool + <usize>load<u32>(e), ptr, len);
    if (c == 0) return load<i32>(e, 8);
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
