// The rule buffer: per rule statement and concrete topic, whether the latest message on that
// topic satisfied the statement, and the latest satisfying payload per topic (for the JSON
// output). A statement is true while at least one topic's latest message satisfies it.
//
// Only topics whose latest message satisfies at least one statement have an entry; an entry
// whose bits all clear is freed. Entries are in a chained hash table (BUCKETS heads) and in a
// list in insertion order (the order of keys in the JSON output). Memory comes from the
// module's heap (TLSF, --runtime minimal); nothing here is a managed object.
//
//   entry (ENTRY_HEADER + 4 * words + topicLen bytes, heap.alloc)
//     +0  chain     next entry in the same bucket, or 0
//     +4  hash      FNV-1a of the topic
//     +8  prev      previous entry in insertion order, or 0
//     +12 next      next entry in insertion order, or 0
//     +16 payload   heap block with the latest satisfying payload, or 0
//     +20 payloadLen
//     +24 payloadCap
//     +28 topicLen
//     +32 bits      `words` u32: bit s set when the latest message satisfied rule statement s
//     then the topic bytes
//
//   counts    u32 per rule statement: entries with its bit set

import { ENTRY_HEADER } from "./layout";
const BUCKETS: u32 = 4096;
/** Entries beyond this are not stored (counted as bufferFull). */
const MAX_ENTRIES: i32 = 65536;

let statementCount: i32 = 0;
let words: i32 = 0;
let buckets: usize = 0;
let counts: usize = 0;
let head: usize = 0;
let tail: usize = 0;
let entries: i32 = 0;
export let bufferFull: f64 = 0;

// The current message's entry (0 when none), found or created lazily.
let current: usize = 0;
let currentLooked = false;
let curTopic: usize = 0;
let curTopicLen: usize = 0;
let curHash: u32 = 0;

export function initBuffer(ruleStatements: i32): void {
  statementCount = ruleStatements;
  words = (ruleStatements + 31) >> 5;
  buckets = heap.alloc(<usize>BUCKETS * 4);
  memory.fill(buckets, 0, <usize>BUCKETS * 4);
  const n = (<usize>(ruleStatements > 0 ? ruleStatements : 1)) * 4;
  counts = heap.alloc(n);
  memory.fill(counts, 0, n);
}

function fnv(ptr: usize, len: usize): u32 {
  let h: u32 = 0x811c9dc5;
  for (let i: usize = 0; i < len; i++) h = (h ^ <u32>load<u8>(ptr + i)) * 0x01000193;
  return h;
}

/** Called at the start of every message that touches a rule statement. */
export function beginTopic(topic: usize, len: usize): void {
  curTopic = topic;
  curTopicLen = len;
  current = 0;
  currentLooked = false;
}

function find(): usize {
  if (!currentLooked) {
    currentLooked = true;
    curHash = fnv(curTopic, curTopicLen);
    let e = <usize>load<u32>(buckets + <usize>(curHash & (BUCKETS - 1)) * 4);
    while (e != 0) {
      if (load<u32>(e, 4) == curHash && <usize>load<u32>(e, 28) == curTopicLen && memory.compare(e + ENTRY_HEADER + <usize>words * 4, curTopic, curTopicLen) == 0) break;
      e = <usize>load<u32>(e);
    }
    current = e;
  }
  return current;
}

function create(): usize {
  if (entries >= MAX_ENTRIES) {
    bufferFull += 1;
    return 0;
  }
  const size = ENTRY_HEADER + <usize>words * 4 + curTopicLen;
  const e = heap.alloc(size);
  memory.fill(e, 0, ENTRY_HEADER + <usize>words * 4);
  memory.copy(e + ENTRY_HEADER + <usize>words * 4, curTopic, curTopicLen);
  store<u32>(e, curHash, 4);
  store<u32>(e, <u32>curTopicLen, 28);
  const bucket = buckets + <usize>(curHash & (BUCKETS - 1)) * 4;
  store<u32>(e, load<u32>(bucket));
  store<u32>(bucket, <u32>e);
  store<u32>(e, <u32>tail, 8);
  if (tail != 0) store<u32>(tail, <u32>e, 12);
  else head = e;
  tail = e;
  entries++;
  current = e;
  return e;
}

/** Records whether the current message satisfied rule statement s. */
export function ruleResult(s: i32, satisfied: bool): void {
  let e = find();
  if (e == 0) {
    if (!satisfied) return;
    e = create();
    if (e == 0) return;
  }
  const w = e + ENTRY_HEADER + (<usize>(s >> 5)) * 4;
  const bit: u32 = 1 << (<u32>s & 31);
  const had = (load<u32>(w) & bit) != 0;
  if (satisfied == had) return;
  const c = counts + <usize>s * 4;
  if (satisfied) {
    store<u32>(w, load<u32>(w) | bit);
    store<u32>(c, load<u32>(c) + 1);
  } else {
    store<u32>(w, load<u32>(w) & ~bit);
    store<u32>(c, load<u32>(c) - 1);
  }
}

function unlink(e: usize): void {
  const bucket = buckets + <usize>(load<u32>(e, 4) & (BUCKETS - 1)) * 4;
  let p = bucket;
  while (<usize>load<u32>(p) != e) p = <usize>load<u32>(p); // chain field is at offset 0
  store<u32>(p, load<u32>(e));
  const prev = <usize>load<u32>(e, 8);
  const next = <usize>load<u32>(e, 12);
  if (prev != 0) store<u32>(prev, <u32>next, 12);
  else head = next;
  if (next != 0) store<u32>(next, <u32>prev, 8);
  else tail = prev;
  const payload = <usize>load<u32>(e, 16);
  if (payload != 0) heap.free(payload);
  heap.free(e);
  entries--;
}

/** After all statements saw the message: keep its payload, or drop an entry nothing satisfies. */
export function commitTopic(payload: usize, len: usize): void {
  const e = current;
  if (e == 0) return;
  let any: u32 = 0;
  const bits = e + ENTRY_HEADER;
  for (let i = 0; i < words; i++) any |= load<u32>(bits + <usize>i * 4);
  if (any == 0) {
    unlink(e);
    current = 0;
    return;
  }
  let block = <usize>load<u32>(e, 16);
  if (<usize>load<u32>(e, 24) < len || block == 0) {
    if (block != 0) heap.free(block);
    block = heap.alloc(len > 0 ? len : 1);
    store<u32>(e, <u32>block, 16);
    store<u32>(e, <u32>len, 24);
  }
  memory.copy(block, payload, len);
  store<u32>(e, <u32>len, 20);
}

// @ts-ignore: decorator
@inline export function statementTrue(s: i32): bool {
  return load<u32>(counts + <usize>s * 4) != 0;
}

/** Empties the buffer for all rules (after any logic entry fired, and on POST/DELETE). */
export function clearBuffer(): void {
  let e = head;
  while (e != 0) {
    const next = <usize>load<u32>(e, 12);
    const payload = <usize>load<u32>(e, 16);
    if (payload != 0) heap.free(payload);
    heap.free(e);
    e = next;
  }
  head = 0;
  tail = 0;
  entries = 0;
  current = 0;
  memory.fill(buckets, 0, <usize>BUCKETS * 4);
  memory.fill(counts, 0, (<usize>(statementCount > 0 ? statementCount : 1)) * 4);
}

// Output -----------------------------------------------------------------------------------

let out: usize = 0;
let outLen: usize = 0;
let outCap: usize = 0;

function reserve(n: usize): void {
  if (outLen + n <= outCap) return;
  let cap = outCap == 0 ? <usize>4096 : outCap * 2;
  while (cap < outLen + n) cap *= 2;
  out = out == 0 ? heap.alloc(cap) : heap.realloc(out, cap);
  outCap = cap;
}

export function outputJsonReset(): void {
  outLen = 0;
}

export function outputJsonPtr(): usize {
  return out;
}

// @ts-ignore: decorator
@inline function put(b: u32): void {
  store<u8>(out + outLen, <u8>b);
  outLen++;
}

const HEX = memory.data<u8>([0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66]);

/** A topic as a JSON string, escaped exactly as JSON.stringify does. */
function putTopic(ptr: usize, len: usize): void {
  reserve(len * 6 + 2);
  put(0x22);
  for (let i: usize = 0; i < len; i++) {
    const c = <u32>load<u8>(ptr + i);
    if (c == 0x22 || c == 0x5c) {
      put(0x5c);
      put(c);
    } else if (c >= 0x20) put(c);
    else if (c == 0x08) { put(0x5c); put(0x62); }
    else if (c == 0x0c) { put(0x5c); put(0x66); }
    else if (c == 0x0a) { put(0x5c); put(0x6e); }
    else if (c == 0x0d) { put(0x5c); put(0x72); }
    else if (c == 0x09) { put(0x5c); put(0x74); }
    else {
      put(0x5c); put(0x75); put(0x30); put(0x30);
      put(<u32>load<u8>(HEX + (c >> 4)));
      put(<u32>load<u8>(HEX + (c & 15)));
    }
  }
  put(0x22);
}

/**
 * Appends `{"topic":payload,...}` for every entry with a bit of `mask` (words u32) set, in
 * insertion order; returns [start, end) packed as start | end << 32... as two calls instead:
 * the caller reads the start before and the length after.
 */
export function appendBufferJson(mask: usize): usize {
  const start = outLen;
  reserve(1);
  put(0x7b);
  let first = true;
  let e = head;
  while (e != 0) {
    let hit: u32 = 0;
    for (let i = 0; i < words; i++) hit |= load<u32>(e + ENTRY_HEADER + <usize>i * 4) & load<u32>(mask + <usize>i * 4);
    if (hit != 0) {
      if (!first) {
        reserve(1);
        put(0x2c);
      }
      first = false;
      putTopic(e + ENTRY_HEADER + <usize>words * 4, <usize>load<u32>(e, 28));
      const plen = <usize>load<u32>(e, 20);
      reserve(plen + 1);
      put(0x3a);
      memory.copy(out + outLen, <usize>load<u32>(e, 16), plen);
      outLen += plen;
    }
    e = <usize>load<u32>(e, 12);
  }
  reserve(1);
  put(0x7d);
  return start;
}

export function outputJsonLength(): usize {
  return outLen;
}

// Transfer across documents (PATCH keeps the entries of statements it does not replace) ----

/** Number of entries; the host walks them with bufferEntry(i) in insertion order. */
export function bufferEntries(): i32 {
  return entries;
}

let walk: usize = 0;
let walkIndex: i32 = -1;

/** Pointer to the i-th entry (sequential access is O(1)). */
export function bufferEntry(i: i32): usize {
  if (i == 0 || i != walkIndex + 1) {
    walk = head;
    for (let k = 0; k < i; k++) walk = <usize>load<u32>(walk, 12);
  } else walk = <usize>load<u32>(walk, 12);
  walkIndex = i;
  return walk;
}

export function bufferWords(): i32 {
  return words;
}
