// Per-statement, per-topic memory of fr_script (specs/fr-script-state.md): previous values
// (prev, changed, delta), deadband references and windows (avg, min, max, sum, count), kept
// in this module's linear memory. The reference interpreter (src/rules/reference.ts) holds
// the same data in JS objects and must give the same results bit for bit; the host
// (src/rules/runtime.ts) reads and writes these layouts for backups and PATCH.
//
// Records: one per (statement, concrete topic), found through a chained hash table on
// FNV-1a(topic) ^ statement * 0x9e3779b1, and kept per statement in a list from the least to
// the most recently seen (past `maxTopics` the least recent is forgotten and counted).
//   record (REC_HEADER = 32 bytes, then cellCount cells of CELL_SIZE = 32 bytes)
//     +0  next record in the hash chain (0: end)   +4 older record of the statement (0: none)
//     +8  newer record of the statement (0: none)  +12 statement index
//     +16 topic hash   +20 topic length   +24 topic bytes (own copy)   +28 cell count
//   statement list (LIST_SIZE = 16 bytes per statement, array at `lists`)
//     +0 oldest record  +4 newest record  +8 records  +12 reserved
//   value cell (prev/changed/delta): +0 has (0: no message yet)  +4 kind (V_* of values.ts)
//     +8 string bytes (own copy)  +12 string length  +16 f64 number / boolean  +24 string capacity
//   deadband cell: +0 has (a fired message gave a number)  +16 f64 reference
//   window cell: +0 ring of exact samples (RING_ENTRY = 16 bytes: f64 time, f64 value; NaN:
//     not a number)  +4 ring capacity  +8 index of the oldest  +12 samples
//     +16 buckets (BUCKET_CAP entries of BUCKET_SIZE = 56 bytes, allocated on first merge)
//     +20 index of the oldest bucket  +24 buckets in use
//   bucket: +0 key (time: floor(t / span), count: 0)  +8 messages  +16 numbers  +24 sum
//     +32 min  +40 max  +48 newest time
// Past `maxSamples` exact samples the oldest is merged into the newest bucket (one bucket per
// span = ceil(W / 64): milliseconds for time windows, messages for count windows); a bucket
// leaves a time window when its newest sample does, a count window when the messages without
// it still fill the window. Aggregates run over buckets, then exact samples, oldest first.

import { V_UNKNOWN, V_NULL, V_BOOL, V_NUMBER, V_STRING, regPtr, setNumber, setBool, setUnknown, setString, setTri, TRUE, FALSE, UNKNOWN } from "./values";

import { REC_HEADER, CELL_SIZE, BUCKET_SIZE, BUCKET_CAP } from "./layout";
const LIST_SIZE: usize = 16;
const RING_ENTRY: usize = 16;
const BUCKETS: f64 = 64;

let table: usize = 0;
let tableSize: u32 = 0;
let records: u32 = 0;
let lists: usize = 0;
let listCount: i32 = 0;
let maxTopics: i32 = 10000;
let maxSamples: i32 = 1024;

/** Counters: topics held now, forgotten, samples merged (engine.ts copies them out). */
export let memTopics: f64 = 0;
export let memEvicted: f64 = 0;
export let memMerged: f64 = 0;

// The current message
let topicPtr: usize = 0;
let topicLen: usize = 0;
let topicHash: u32 = 0;
let hashed = false;
let now: f64 = 0;
export let currentStatement: i32 = 0;

export function initMemory(statements: i32): void {
  listCount = statements;
  const bytes = (<usize>(statements > 0 ? statements : 1)) * LIST_SIZE;
  lists = heap.alloc(bytes);
  memory.fill(lists, 0, bytes);
  tableSize = 1024;
  table = heap.alloc(<usize>tableSize * 4);
  memory.fill(table, 0, <usize>tableSize * 4);
  records = 0;
}

export function setMemoryLimits(topics: i32, samples: i32): void {
  maxTopics = topics > 0 ? topics : 1;
  maxSamples = samples > 0 ? samples : 1;
}

export function memoryMessage(ptr: usize, len: usize, t: f64): void {
  topicPtr = ptr;
  topicLen = len;
  hashed = false;
  now = t;
}

// @ts-ignore: decorator
@inline export function setStatement(s: i32): void {
  currentStatement = s;
}

function fnv(ptr: usize, len: usize): u32 {
  let h: u32 = 0x811c9dc5;
  for (let i: usize = 0; i < len; i++) h = (h ^ <u32>load<u8>(ptr + i)) * 0x01000193;
  return h;
}

// @ts-ignore: decorator
@inline function bucketOf(hash: u32, s: i32): usize {
  return table + (<usize>((hash ^ (<u32>s * 0x9e3779b1)) & (tableSize - 1))) * 4;
}

function grow(): void {
  const old = table;
  const oldSize = tableSize;
  tableSize = oldSize * 2;
  table = heap.alloc(<usize>tableSize * 4);
  memory.fill(table, 0, <usize>tableSize * 4);
  for (let i: u32 = 0; i < oldSize; i++) {
    let r = <usize>load<u32>(old + <usize>i * 4);
    while (r != 0) {
      const next = <usize>load<u32>(r);
      const b = bucketOf(load<u32>(r, 16), load<i32>(r, 12));
      store<u32>(r, load<u32>(b));
      store<u32>(b, <u32>r);
      r = next;
    }
  }
  heap.free(old);
}

function unlinkList(list: usize, r: usize): void {
  const older = <usize>load<u32>(r, 4);
  const newer = <usize>load<u32>(r, 8);
  if (older != 0) store<u32>(older, <u32>newer, 8);
  else store<u32>(list, <u32>newer);
  if (newer != 0) store<u32>(newer, <u32>older, 4);
  else store<u32>(list, <u32>older, 4);
}

function appendList(list: usize, r: usize): void {
  const newest = <usize>load<u32>(list, 4);
  store<u32>(r, <u32>newest, 4);
  store<u32>(r, 0, 8);
  if (newest != 0) store<u32>(newest, <u32>r, 8);
  else store<u32>(list, <u32>r);
  store<u32>(list, <u32>r, 4);
}

function freeRecord(r: usize): void {
  const cells = load<i32>(r, 28);
  for (let i = 0; i < cells; i++) {
    const c = r + REC_HEADER + (<usize>i) * CELL_SIZE;
    // value cells keep strings at +8; window cells a ring at +0 and buckets at +16: told apart by the host's layout,
    // so each cell records what it owns: +28 bit 0 string (+8), bit 1 ring (+0), bit 2 buckets (+16)
    const owns = load<u32>(c, 28);
    if ((owns & 1) != 0) heap.free(<usize>load<u32>(c, 8));
    if ((owns & 2) != 0) heap.free(<usize>load<u32>(c));
    if ((owns & 4) != 0) heap.free(<usize>load<u32>(c, 16));
  }
  heap.free(<usize>load<u32>(r, 24));
  heap.free(r);
}

function removeFromChain(r: usize): void {
  const b = bucketOf(load<u32>(r, 16), load<i32>(r, 12));
  let p = <usize>load<u32>(b);
  if (p == r) {
    store<u32>(b, load<u32>(r));
    return;
  }
  while (p != 0) {
    const next = <usize>load<u32>(p);
    if (next == r) {
      store<u32>(p, load<u32>(r));
      return;
    }
    p = next;
  }
}

/** Creates a record for statement s on the topic at [ptr, len) as its most recent one. */
export function newRecord(s: i32, cells: i32, ptr: usize, len: usize, hash: u32): usize {
  const list = lists + (<usize>s) * LIST_SIZE;
  if (load<i32>(list, 8) >= maxTopics) {
    const oldest = <usize>load<u32>(list);
    unlinkList(list, oldest);
    removeFromChain(oldest);
    freeRecord(oldest);
    store<i32>(list, load<i32>(list, 8) - 1, 8);
    records--;
    memTopics -= 1;
    memEvicted += 1;
  }
  const size = REC_HEADER + (<usize>cells) * CELL_SIZE;
  const r = heap.alloc(size);
  memory.fill(r, 0, size);
  const t = heap.alloc(len > 0 ? len : 1);
  memory.copy(t, ptr, len);
  store<i32>(r, s, 12);
  store<u32>(r, hash, 16);
  store<u32>(r, <u32>len, 20);
  store<u32>(r, <u32>t, 24);
  store<i32>(r, cells, 28);
  const b = bucketOf(hash, s);
  store<u32>(r, load<u32>(b));
  store<u32>(b, <u32>r);
  appendList(list, r);
  store<i32>(list, load<i32>(list, 8) + 1, 8);
  records++;
  memTopics += 1;
  if (records > tableSize) grow();
  return r;
}

/** The current statement's record on the current topic (created when new), made the most recent. */
export function memRecord(cells: i32): usize {
  if (!hashed) {
    topicHash = fnv(topicPtr, topicLen);
    hashed = true;
  }
  const s = currentStatement;
  let r = <usize>load<u32>(bucketOf(topicHash, s));
  while (r != 0) {
    if (load<i32>(r, 12) == s && load<u32>(r, 16) == topicHash && <usize>load<u32>(r, 20) == topicLen && memory.compare(<usize>load<u32>(r, 24), topicPtr, topicLen) == 0) {
      const list = lists + (<usize>s) * LIST_SIZE;
      if (<usize>load<u32>(list, 4) != r) {
        unlinkList(list, r);
        appendList(list, r);
      }
      return r;
    }
    r = <usize>load<u32>(r);
  }
  return newRecord(s, cells, topicPtr, topicLen, topicHash);
}

// @ts-ignore: decorator
@inline function cellAt(r: usize, c: i32): usize {
  return r + REC_HEADER + (<usize>c) * CELL_SIZE;
}

// Previous values ------------------------------------------------------------------------

/** prev($x): the value cell into register `out` (unknown before the first message). */
export function memPrev(out: i32, r: usize, c: i32): void {
  const p = cellAt(r, c);
  if (load<i32>(p) == 0) {
    setUnknown(out);
    return;
  }
  const kind = load<i32>(p, 4);
  if (kind == V_NUMBER) setNumber(out, load<f64>(p, 16));
  else if (kind == V_STRING) setString(out, <usize>load<u32>(p, 8), load<i32>(p, 12));
  else if (kind == V_BOOL) setBool(out, load<f64>(p, 16) != 0);
  else if (kind == V_NULL) store<i32>(regPtr(out), V_NULL);
  else setUnknown(out);
}

function sameAsCell(p: usize, cur: usize): bool {
  const kind = load<i32>(p, 4);
  if (kind != load<i32>(cur)) return false;
  if (kind == V_NUMBER || kind == V_BOOL) return load<f64>(p, 16) == load<f64>(cur, 16);
  if (kind == V_STRING) {
    const len = load<i32>(p, 12);
    return len == load<i32>(cur, 8) && memory.compare(<usize>load<u32>(p, 8), <usize>load<u32>(cur, 4), <usize>len) == 0;
  }
  return true; // null, unknown
}

/** changed($x), the current value in register `cur`. */
export function memChanged(out: i32, r: usize, c: i32, cur: i32): void {
  const pc = regPtr(cur);
  if (load<i32>(pc) == V_UNKNOWN) {
    setUnknown(out);
    return;
  }
  const p = cellAt(r, c);
  setBool(out, load<i32>(p) == 0 || !sameAsCell(p, pc));
}

/** delta($x) = $x - prev($x), both numbers. */
export function memDelta(out: i32, r: usize, c: i32, cur: i32): void {
  const pc = regPtr(cur);
  const p = cellAt(r, c);
  if (load<i32>(pc) != V_NUMBER || load<i32>(p) == 0 || load<i32>(p, 4) != V_NUMBER) {
    setUnknown(out);
    return;
  }
  setNumber(out, load<f64>(pc, 16) - load<f64>(p, 16));
}

/** After the statement: the current value becomes the previous one. */
export function memStoreValue(r: usize, c: i32, cur: i32): void {
  const pc = regPtr(cur);
  const p = cellAt(r, c);
  const kind = load<i32>(pc);
  store<i32>(p, 1);
  store<i32>(p, kind, 4);
  if (kind == V_STRING) {
    const len = load<i32>(pc, 8);
    let cap = load<i32>(p, 24);
    if (len > cap) {
      if ((load<u32>(p, 28) & 1) != 0) heap.free(<usize>load<u32>(p, 8));
      cap = len < 16 ? 16 : len;
      store<u32>(p, <u32>heap.alloc(<usize>cap), 8);
      store<i32>(p, cap, 24);
      store<u32>(p, load<u32>(p, 28) | 1, 28);
    }
    memory.copy(<usize>load<u32>(p, 8), <usize>load<u32>(pc, 4), <usize>len);
    store<i32>(p, len, 12);
  } else store<f64>(p, load<f64>(pc, 16), 16);
}

// Deadband -------------------------------------------------------------------------------

export function memDeadband(out: i32, r: usize, c: i32, cur: i32, d: f64): void {
  const pc = regPtr(cur);
  if (load<i32>(pc) != V_NUMBER) {
    setUnknown(out);
    return;
  }
  const p = cellAt(r, c);
  setBool(out, load<i32>(p) == 0 || Math.abs(load<f64>(pc, 16) - load<f64>(p, 16)) >= d);
}

/** The statement fired: a number becomes the deadband's reference. */
export function memStoreRef(r: usize, c: i32, cur: i32): void {
  const pc = regPtr(cur);
  if (load<i32>(pc) != V_NUMBER) return;
  const p = cellAt(r, c);
  store<i32>(p, 1);
  store<f64>(p, load<f64>(pc, 16), 16);
}

// Windows --------------------------------------------------------------------------------

function bucketPtr(p: usize, i: i32): usize {
  let k = load<i32>(p, 20) + i;
  if (k >= BUCKET_CAP) k -= BUCKET_CAP;
  return <usize>load<u32>(p, 16) + (<usize>k) * BUCKET_SIZE;
}

function mergeSample(p: usize, isTime: bool, w: f64, t: f64, v: f64): void {
  const span = Math.max(1, Math.ceil(w / BUCKETS));
  const key = isTime ? Math.floor(t / span) : 0;
  if (load<u32>(p, 16) == 0) {
    store<u32>(p, <u32>heap.alloc(<usize>BUCKET_CAP * BUCKET_SIZE), 16);
    store<u32>(p, load<u32>(p, 28) | 4, 28);
    store<i32>(p, 0, 20);
    store<i32>(p, 0, 24);
  }
  const count = load<i32>(p, 24);
  const isNum = !isNaN(v);
  if (count > 0) {
    const b = bucketPtr(p, count - 1);
    const join = count >= BUCKET_CAP || (isTime ? load<f64>(b) == key : load<f64>(b, 8) < span);
    if (join) {
      store<f64>(b, load<f64>(b, 8) + 1, 8);
      if (isNum) {
        if (load<f64>(b, 16) == 0) {
          store<f64>(b, v, 32);
          store<f64>(b, v, 40);
          store<f64>(b, v, 24);
        } else {
          if (v < load<f64>(b, 32)) store<f64>(b, v, 32);
          if (v > load<f64>(b, 40)) store<f64>(b, v, 40);
          store<f64>(b, load<f64>(b, 24) + v, 24);
        }
        store<f64>(b, load<f64>(b, 16) + 1, 16);
      }
      store<f64>(b, t, 48);
      return;
    }
  }
  store<i32>(p, count + 1, 24);
  const b = bucketPtr(p, count);
  store<f64>(b, key);
  store<f64>(b, 1, 8);
  store<f64>(b, isNum ? 1 : 0, 16);
  store<f64>(b, isNum ? v : 0, 24);
  store<f64>(b, v, 32);
  store<f64>(b, v, 40);
  store<f64>(b, t, 48);
}

function dropBucket(p: usize): void {
  let h = load<i32>(p, 20) + 1;
  if (h >= BUCKET_CAP) h = 0;
  store<i32>(p, h, 20);
  store<i32>(p, load<i32>(p, 24) - 1, 24);
}

// @ts-ignore: decorator
@inline function ringAt(p: usize, i: i32): usize {
  let k = load<i32>(p, 8) + i;
  const cap = load<i32>(p, 4);
  if (k >= cap) k -= cap;
  return <usize>load<u32>(p) + (<usize>k) * RING_ENTRY;
}

function dropExact(p: usize): void {
  let h = load<i32>(p, 8) + 1;
  if (h >= load<i32>(p, 4)) h = 0;
  store<i32>(p, h, 8);
  store<i32>(p, load<i32>(p, 12) - 1, 12);
}

/** Makes room for `size` exact samples (oldest first at index 0 afterwards). */
export function ringReserve(p: usize, size: i32): void {
  const cap = load<i32>(p, 4);
  if (size <= cap) return;
  let next = cap < 8 ? 8 : cap * 2;
  if (next < size) next = size;
  const ring = heap.alloc(<usize>next * RING_ENTRY);
  const n = load<i32>(p, 12);
  for (let i = 0; i < n; i++) memory.copy(ring + (<usize>i) * RING_ENTRY, ringAt(p, i), RING_ENTRY);
  if ((load<u32>(p, 28) & 2) != 0) heap.free(<usize>load<u32>(p));
  store<u32>(p, <u32>ring);
  store<i32>(p, next, 4);
  store<i32>(p, 0, 8);
  store<u32>(p, load<u32>(p, 28) | 2, 28);
}

/** The current message's sample (register `cur`: its number, or NaN when it is not one; -1: count() only). */
export function windowPush(r: usize, c: i32, isTime: bool, w: f64, cur: i32): void {
  const p = cellAt(r, c);
  let v: f64 = NaN;
  if (cur >= 0) {
    const pc = regPtr(cur);
    if (load<i32>(pc) == V_NUMBER) v = load<f64>(pc, 16);
  }
  const n = load<i32>(p, 12);
  ringReserve(p, n + 1);
  const e = ringAt(p, n);
  store<f64>(e, now);
  store<f64>(e, v, 8);
  store<i32>(p, n + 1, 12);
  while (load<i32>(p, 12) > maxSamples) {
    const o = ringAt(p, 0);
    mergeSample(p, isTime, w, load<f64>(o), load<f64>(o, 8));
    dropExact(p);
    memMerged += 1;
  }
  if (isTime) {
    while (load<i32>(p, 24) > 0 && now - load<f64>(bucketPtr(p, 0), 48) >= w) dropBucket(p);
    while (load<i32>(p, 12) > 0 && now - load<f64>(ringAt(p, 0)) >= w) dropExact(p);
  } else {
    let total: f64 = <f64>load<i32>(p, 12);
    const nb = load<i32>(p, 24);
    for (let i = 0; i < nb; i++) total += load<f64>(bucketPtr(p, i), 8);
    while (load<i32>(p, 24) > 0 && total - load<f64>(bucketPtr(p, 0), 8) >= w) {
      total -= load<f64>(bucketPtr(p, 0), 8);
      dropBucket(p);
    }
    if (load<i32>(p, 24) == 0) while (<f64>load<i32>(p, 12) > w) dropExact(p);
  }
}

export const AGG_AVG: i32 = 0;
export const AGG_MIN: i32 = 1;
export const AGG_MAX: i32 = 2;
export const AGG_SUM: i32 = 3;
export const AGG_COUNT: i32 = 4;

/** avg/min/max/sum/count of a window into register `out`. */
export function windowAggregate(out: i32, r: usize, c: i32, fn: i32): void {
  const p = cellAt(r, c);
  let n: f64 = 0;
  let k: f64 = 0;
  let sum: f64 = 0;
  let min: f64 = 0;
  let max: f64 = 0;
  const nb = load<i32>(p, 24);
  for (let i = 0; i < nb; i++) {
    const b = bucketPtr(p, i);
    n += load<f64>(b, 8);
    const bc = load<f64>(b, 16);
    if (bc == 0) continue;
    const bmin = load<f64>(b, 32);
    const bmax = load<f64>(b, 40);
    if (k == 0) {
      min = bmin;
      max = bmax;
    } else {
      if (bmin < min) min = bmin;
      if (bmax > max) max = bmax;
    }
    sum += load<f64>(b, 24);
    k += bc;
  }
  // the exact samples, oldest first: the ring from its head to the end of its array, then
  // from the start (the same order as one index at a time, so the same sum); count() needs
  // only how many there are, avg() and sum() no minimum or maximum
  const ne = load<i32>(p, 12);
  n += <f64>ne;
  if (fn != AGG_COUNT && ne > 0) {
    const ring = <usize>load<u32>(p);
    const head = load<i32>(p, 8);
    let first = load<i32>(p, 4) - head;
    if (first > ne) first = ne;
    let e = ring + (<usize>head) * RING_ENTRY;
    let stop = e + (<usize>first) * RING_ENTRY;
    let left = ne - first;
    const extremes = fn == AGG_MIN || fn == AGG_MAX;
    for (;;) {
      if (extremes) {
        for (; e < stop; e += RING_ENTRY) {
          const v = load<f64>(e, 8);
          if (isNaN(v)) continue;
          if (k == 0) {
            min = v;
            max = v;
          } else {
            if (v < min) min = v;
            if (v > max) max = v;
          }
          k += 1;
        }
      } else {
        for (; e < stop; e += RING_ENTRY) {
          const v = load<f64>(e, 8);
          if (isNaN(v)) continue;
          sum += v;
          k += 1;
        }
      }
      if (left == 0) break;
      e = ring;
      stop = ring + (<usize>left) * RING_ENTRY;
      left = 0;
    }
  }
  if (fn == AGG_COUNT) setNumber(out, n);
  else if (fn == AGG_SUM) setNumber(out, sum);
  else if (k == 0) setUnknown(out);
  else if (fn == AGG_AVG) setNumber(out, sum / k);
  else setNumber(out, fn == AGG_MIN ? min : max);
}

// Host access (backup, PATCH) --------------------------------------------------------------

/** The least recently seen record of statement s (0: none); records link to newer ones at +8. */
export function memoryOldest(s: i32): usize {
  if (s < 0 || s >= listCount) return 0;
  return <usize>load<u32>(lists + (<usize>s) * LIST_SIZE);
}

/** Allocates `size` bytes for the host (strings of restored value cells, rings, buckets). */
export function memoryAlloc(size: i32): usize {
  return heap.alloc(<usize>(size > 0 ? size : 1));
}

/** Restores a record of statement s for the topic in [ptr, len), as the most recent one. */
export function memoryRestore(s: i32, cells: i32, ptr: usize, len: i32): usize {
  if (s < 0 || s >= listCount) return 0;
  return newRecord(s, cells, ptr, <usize>len, fnv(ptr, <usize>len));
}

/** Empties every statement's memory. */
export function memoryClear(): void {
  for (let s = 0; s < listCount; s++) {
    const list = lists + (<usize>s) * LIST_SIZE;
    let r = <usize>load<u32>(list);
    while (r != 0) {
      const next = <usize>load<u32>(r, 8);
      freeRecord(r);
      r = next;
    }
    memory.fill(list, 0, LIST_SIZE);
  }
  memory.fill(table, 0, <usize>tableSize * 4);
  records = 0;
  memTopics = 0;
}

// unused imports kept for the generated code's sake
export { TRUE, FALSE, UNKNOWN, setTri };
