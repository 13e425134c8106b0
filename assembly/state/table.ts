// The state store's hash table, in WebAssembly linear memory.
//
// This module manages its own memory: it must run in an instance of edb.wasm of its own
// (src/state/table.ts does that), and nothing else may allocate in that instance.
//
// ## Layout
//
//   [0, __heap_base)          static data: META (64 bytes), the free-list heads
//   [arenaBase, arenaTop)     the arena: a sequence of blocks, walkable by their size
//   [arenaTop, memory end)    untouched; memory grows in steps as arenaTop needs it
//
// Every block starts with `u32 sizeKind`: its size in bytes (a multiple of 8, at least 16)
// with the kind in the low 3 bits. Kinds:
//
//   FREE  (0)  +4 u32 next free block of the same list (0 = end)
//   ENTRY (1)  one key-value entry:
//                0  u32 sizeKind
//                4  u32 hash of the key
//                8  u32 keyLen
//               12  u32 valLen
//               16  f64 version wall clock (ms)      \
//               24  u32 version counter               |  identical to a snapshot record
//               28  u32 ftLen (0 = no fencing token)  |  header (codes.ts RECORD_HEADER),
//               32  f64 expiresAt (ms, 0 = never)     /   so export/import is a memcpy
//               40  key bytes | value bytes | [f64 ft wall, u32 ft counter, ft node id bytes]
//   SLOTS (2)  a slot array: +8 then `cap` slots of 8 bytes: u32 hash, u32 entry address
//              (0 = empty, 1 = tombstone; tombstones only in a table being migrated away)
//   IO    (3)  the IO region: JS copies keys, values and tokens in and out of it
//
// The version's node id is not stored per entry: every version is issued by the store's own
// clock, and the service keeps its node id (and saves it in the snapshot).
//
// ## The table
//
// Open addressing with linear probing over a power-of-two slot array, at most 3/4 full;
// deletes shift the following entries back (no tombstones), so a delete gives its slot
// back at once and its block goes to a free list.
//
// Growth (and shrinking below 1/8 full) never rehashes everything at once: a new slot array
// is allocated and each write moves MIGRATE_STEP slots of the old one (stateMaintain moves
// more when the broker is idle). While that runs, lookups try the new array, then the old
// one; the old array's slots below `migrateIndex` are already moved and are skipped.
//
// ## Memory accounting
//
// dataBytes: sum of key + value lengths (what the max-bytes quota counts);
// entryBytes: arena bytes in entry blocks; slotBytes: slot arrays; freeBytes: blocks on
// free lists; memoryBytes: the linear memory's size.
//
// Free blocks of up to 4 KiB live in exact-size lists (one per 8 bytes); bigger ones in one
// first-fit list, split on reuse. A block freed at the top of the arena lowers the top.

import {
  RESULT_OK, RESULT_NONE, RESULT_MISMATCH, ERR_FENCING_REQUIRED, ERR_FENCING_STALE, ERR_QUOTA,
  ERR_NO_MEMORY, ERR_CORRUPT, SET_NX, SET_NEX, FLAG_FENCING, DEL_VALUE, META_EXPIRED, SWEEP_FOUND,
  SWEEP_BUDGET, SWEEP_END, META_VER_WALL, META_EXPIRES_AT, META_FT_WALL, META_VER_COUNTER,
  META_FT_COUNTER, META_KEY_LEN, META_VAL_LEN, META_FT_NODE_LEN, META_IO_PTR, META_FLAGS,
  META_WRITTEN, META_IO_CAP, META_SIZE, NO_FENCING_TOKEN, RECORD_HEADER,
} from './codes';

const KIND_FREE: u32 = 0;
const KIND_ENTRY: u32 = 1;
const KIND_SLOTS: u32 = 2;
const KIND_IO: u32 = 3;
const KIND_MASK: u32 = 7;

const ENTRY_HEADER: u32 = 8 + <u32>RECORD_HEADER; // sizeKind, hash, then the record header
const SLOTS_HEADER: u32 = 8;
const EMPTY: u32 = 0;
const TOMBSTONE: u32 = 1;

const SMALL_LIMIT: u32 = 4096;
const SMALL_CLASSES: u32 = SMALL_LIMIT >> 3; // class = size >> 3, sizes 16..4096
const MIN_CAP: u32 = 16;
const MIGRATE_STEP: u32 = 64;
const IO_MIN: u32 = 65536;

const META: usize = memory.data(<i32>META_SIZE, 16);
const FREE_HEADS: usize = memory.data(<i32>((SMALL_CLASSES + 1) << 2), 16);

let initialized = false;
let arenaBase: usize = 0;
let arenaTop: usize = 0;
let memoryEnd: usize = 0; // bytes of linear memory, as last seen
let largeFree: usize = 0;

let io: usize = 0;
let ioCap: u32 = 0;

let slots: usize = 0; // address of slot 0
let cap: u32 = 0;
let mask: u32 = 0;
let used: u32 = 0; // occupied slots in `slots`

let oldSlots: usize = 0; // 0 = no migration
let oldCap: u32 = 0;
let oldMask: u32 = 0;
let migrateIndex: u32 = 0;

let count: u32 = 0;
let expiring: u32 = 0; // entries with an expiry
let dataBytes: f64 = 0;
let entryBytes: f64 = 0;
let slotBytes: f64 = 0;
let freeBytes: f64 = 0;

let maxKeys: u32 = 0xffffffff;
let maxBytes: f64 = Infinity;

let sweepCursor: usize = 0;

// ---------------------------------------------------------------- memory

@inline function blockSize(b: usize): u32 {
  return load<u32>(b) & ~KIND_MASK;
}

@inline function blockKind(b: usize): u32 {
  return load<u32>(b) & KIND_MASK;
}

function ensureMemory(end: usize): bool {
  const have = (<usize>memory.size()) << 16;
  if (end <= have) return true;
  const needPages = <i32>(((end - have) + 0xffff) >> 16);
  // grow by at least 1/8 of the current size so growth is amortized
  const step = max(needPages, max(memory.size() >> 3, 16));
  if (memory.grow(step) >= 0) return true;
  return memory.grow(needPages) >= 0;
}

function pushFree(b: usize, size: u32): void {
  store<u32>(b, size | KIND_FREE);
  if (size <= SMALL_LIMIT) {
    const head = FREE_HEADS + ((<usize>(size >> 3)) << 2);
    store<u32>(b, load<u32>(head), 4);
    store<u32>(head, <u32>b);
  } else {
    store<u32>(b, <u32>largeFree, 4);
    largeFree = b;
  }
  freeBytes += <f64>size;
}

/** A block of at least `size` bytes (rounded up to 8), or 0 when memory cannot grow. */
function alloc(request: u32, kind: u32): usize {
  let size = (request + 7) & ~7;
  if (size < 16) size = 16;
  let b: usize = 0;
  if (size <= SMALL_LIMIT) {
    const head = FREE_HEADS + ((<usize>(size >> 3)) << 2);
    b = <usize>load<u32>(head);
    if (b != 0) {
      store<u32>(head, load<u32>(b, 4));
      freeBytes -= <f64>size;
    }
  }
  if (b == 0 && largeFree != 0) {
    // first fit in the large list; split off the rest when it is worth a block
    let prev: usize = 0;
    let cur = largeFree;
    while (cur != 0) {
      const s = blockSize(cur);
      if (s >= size) {
        const next = <usize>load<u32>(cur, 4);
        if (prev == 0) largeFree = next;
        else store<u32>(prev, <u32>next, 4);
        freeBytes -= <f64>s;
        b = cur;
        if (s - size >= 16) pushFree(cur + size, s - size);
        else size = s;
        break;
      }
      prev = cur;
      cur = <usize>load<u32>(cur, 4);
    }
  }
  if (b == 0) {
    if (arenaTop + size > memoryEnd) {
      if (!ensureMemory(arenaTop + size)) return 0;
      memoryEnd = (<usize>memory.size()) << 16;
    }
    b = arenaTop;
    arenaTop += size;
  }
  store<u32>(b, size | kind);
  return b;
}

function release(b: usize): void {
  const size = blockSize(b);
  if (b + size == arenaTop) {
    arenaTop = b;
    store<u32>(b, 0);
    return;
  }
  pushFree(b, size);
}

// ---------------------------------------------------------------- bytes

// murmur3 (x86, 32-bit) over 4-byte words, then the tail
function hashBytes(p: usize, n: u32): u32 {
  let h: u32 = 0x9747b28c ^ n;
  let i: u32 = 0;
  while (i + 4 <= n) {
    let k = load<u32>(p + i);
    k *= 0xcc9e2d51;
    k = rotl<u32>(k, 15);
    k *= 0x1b873593;
    h ^= k;
    h = rotl<u32>(h, 13);
    h = h * 5 + 0xe6546b64;
    i += 4;
  }
  let k: u32 = 0;
  const rest = n - i;
  if (rest == 3) k ^= (<u32>load<u8>(p + i + 2)) << 16;
  if (rest >= 2) k ^= (<u32>load<u8>(p + i + 1)) << 8;
  if (rest >= 1) {
    k ^= <u32>load<u8>(p + i);
    k *= 0xcc9e2d51;
    k = rotl<u32>(k, 15);
    k *= 0x1b873593;
    h ^= k;
  }
  h ^= h >> 16;
  h *= 0x85ebca6b;
  h ^= h >> 13;
  h *= 0xc2b2ae35;
  h ^= h >> 16;
  return h;
}

function bytesEqual(a: usize, b: usize, n: u32): bool {
  let i: u32 = 0;
  while (i + 8 <= n) {
    if (load<u64>(a + i) != load<u64>(b + i)) return false;
    i += 8;
  }
  while (i < n) {
    if (load<u8>(a + i) != load<u8>(b + i)) return false;
    i++;
  }
  return true;
}

/** <0, 0, >0 like memcmp, then shorter first. */
function bytesCompare(a: usize, an: u32, b: usize, bn: u32): i32 {
  const n = min(an, bn);
  for (let i: u32 = 0; i < n; i++) {
    const x = <i32>load<u8>(a + i);
    const y = <i32>load<u8>(b + i);
    if (x != y) return x - y;
  }
  return <i32>an - <i32>bn;
}

// ---------------------------------------------------------------- entries

@inline function entryKeyLen(e: usize): u32 { return load<u32>(e, 8); }
@inline function entryValLen(e: usize): u32 { return load<u32>(e, 12); }
@inline function entryFtLen(e: usize): u32 { return load<u32>(e, 28); }
@inline function entryExpiresAt(e: usize): f64 { return load<f64>(e, 32); }
@inline function entryKey(e: usize): usize { return e + ENTRY_HEADER; }
@inline function entryValue(e: usize): usize { return e + ENTRY_HEADER + entryKeyLen(e); }
@inline function entryFt(e: usize): usize { return e + ENTRY_HEADER + entryKeyLen(e) + entryValLen(e); }

@inline function isExpired(e: usize, now: f64): bool {
  const x = entryExpiresAt(e);
  return x != 0 && x <= now;
}

/** Compare a request's fencing token with the entry's: <0 when the request's is older. */
function compareFencing(e: usize, wall: f64, counter: u32, node: usize, nodeLen: u32): i32 {
  const t = entryFt(e);
  const ew = load<f64>(t);
  if (wall != ew) return wall < ew ? -1 : 1;
  const ec = load<u32>(t, 8);
  if (counter != ec) return counter < ec ? -1 : 1;
  return bytesCompare(node, nodeLen, t + 12, entryFtLen(e) - 12);
}

// ---------------------------------------------------------------- slots

@inline function slotHash(table: usize, i: u32): u32 { return load<u32>(table + ((<usize>i) << 3)); }
@inline function slotPtr(table: usize, i: u32): u32 { return load<u32>(table + ((<usize>i) << 3), 4); }
@inline function setSlot(table: usize, i: u32, h: u32, p: u32): void {
  const a = table + ((<usize>i) << 3);
  store<u32>(a, h);
  store<u32>(a, p, 4);
}

function allocSlots(n: u32): usize {
  const bytes = SLOTS_HEADER + (n << 3);
  const b = alloc(bytes, KIND_SLOTS);
  if (b == 0) return 0;
  memory.fill(b + SLOTS_HEADER, 0, <usize>(n << 3));
  slotBytes += <f64>blockSize(b);
  return b + SLOTS_HEADER;
}

function freeSlots(table: usize): void {
  const b = table - SLOTS_HEADER;
  slotBytes -= <f64>blockSize(b);
  release(b);
}

// Where the last lookup found its key: which table and which slot.
let foundOld = false;
let foundSlot: u32 = 0;

/** The entry holding key [kp, kp+kl) with hash h, or 0. Sets foundOld/foundSlot. */
function lookup(h: u32, kp: usize, kl: u32): usize {
  let i = h & mask;
  while (true) {
    const p = slotPtr(slots, i);
    if (p == EMPTY) break;
    if (slotHash(slots, i) == h && entryKeyLen(<usize>p) == kl && bytesEqual(entryKey(<usize>p), kp, kl)) {
      foundOld = false;
      foundSlot = i;
      return <usize>p;
    }
    i = (i + 1) & mask;
  }
  if (oldSlots == 0) return 0;
  // The old array's slots below migrateIndex have moved: skip them; a probe that wraps
  // around re-enters at migrateIndex. At most oldCap - migrateIndex live slots to visit.
  i = h & oldMask;
  let budget = oldCap - migrateIndex;
  while (budget > 0) {
    if (i < migrateIndex) i = migrateIndex;
    if (i >= oldCap) return 0;
    const p = slotPtr(oldSlots, i);
    if (p == EMPTY) return 0;
    if (p != TOMBSTONE && slotHash(oldSlots, i) == h && entryKeyLen(<usize>p) == kl && bytesEqual(entryKey(<usize>p), kp, kl)) {
      foundOld = true;
      foundSlot = i;
      return <usize>p;
    }
    i = (i + 1) & oldMask;
    budget--;
  }
  return 0;
}

/** Put (h, p) into the current array; the key must not be there. */
function insertSlot(h: u32, p: u32): void {
  let i = h & mask;
  while (slotPtr(slots, i) != EMPTY) i = (i + 1) & mask;
  setSlot(slots, i, h, p);
  used++;
}

/** Remove slot i of the current array, shifting the following run back. */
function removeSlot(i: u32): void {
  let hole = i;
  let j = i;
  while (true) {
    j = (j + 1) & mask;
    const p = slotPtr(slots, j);
    if (p == EMPTY) break;
    const home = slotHash(slots, j) & mask;
    // the entry at j may move to the hole unless its home lies cyclically in (hole, j]
    const stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!stays) {
      setSlot(slots, hole, slotHash(slots, j), p);
      hole = j;
    }
  }
  setSlot(slots, hole, 0, EMPTY);
  used--;
}

function removeFound(): void {
  if (foundOld) setSlot(oldSlots, foundSlot, 0, TOMBSTONE);
  else removeSlot(foundSlot);
}

function replaceFound(p: usize): void {
  if (foundOld) store<u32>(oldSlots + ((<usize>foundSlot) << 3), <u32>p, 4);
  else store<u32>(slots + ((<usize>foundSlot) << 3), <u32>p, 4);
}

/** Move up to n old slots into the current array. Returns true when no migration is left. */
function migrate(n: u32): bool {
  if (oldSlots == 0) return true;
  while (n > 0 && migrateIndex < oldCap) {
    const p = slotPtr(oldSlots, migrateIndex);
    if (p > TOMBSTONE) insertSlot(slotHash(oldSlots, migrateIndex), p);
    migrateIndex++;
    n--;
  }
  if (migrateIndex >= oldCap) {
    freeSlots(oldSlots);
    oldSlots = 0;
    oldCap = 0;
    oldMask = 0;
    migrateIndex = 0;
    return true;
  }
  return false;
}

/** Start moving to an array of newCap slots. False when memory cannot grow. */
function startResize(newCap: u32): bool {
  if (oldSlots != 0) migrate(0xffffffff);
  const fresh = allocSlots(newCap);
  if (fresh == 0) return false;
  oldSlots = slots;
  oldCap = cap;
  oldMask = mask;
  migrateIndex = 0;
  slots = fresh;
  cap = newCap;
  mask = newCap - 1;
  used = 0;
  return true;
}

/** Called after writes: advance a migration, or start one when too full or too empty. */
function rebalance(): void {
  if (oldSlots != 0) {
    migrate(MIGRATE_STEP);
    // a migration always finishes before the new array is 3/4 full; if not, finish it now
    if (oldSlots != 0 && used * 4 >= cap * 3) migrate(0xffffffff);
    return;
  }
  if (used * 4 >= cap * 3) startResize(cap << 1);
  else if (cap > MIN_CAP && count * 8 < cap) startResize(cap >> 1);
}

// ---------------------------------------------------------------- helpers for the API

function setMetaFromEntry(e: usize): void {
  store<f64>(META, load<f64>(e, 16), META_VER_WALL);
  store<u32>(META, load<u32>(e, 24), META_VER_COUNTER);
  store<f64>(META, entryExpiresAt(e), META_EXPIRES_AT);
  store<u32>(META, entryKeyLen(e), META_KEY_LEN);
  store<u32>(META, entryValLen(e), META_VAL_LEN);
  const ftLen = entryFtLen(e);
  if (ftLen == 0) {
    store<u32>(META, NO_FENCING_TOKEN, META_FT_NODE_LEN);
  } else {
    const t = entryFt(e);
    store<f64>(META, load<f64>(t), META_FT_WALL);
    store<u32>(META, load<u32>(t, 8), META_FT_COUNTER);
    store<u32>(META, ftLen - 12, META_FT_NODE_LEN);
  }
}

function reserveIo(n: u32): bool {
  if (n <= ioCap) return true;
  let want = max(n + (n >> 1), IO_MIN);
  want = (want + 7) & ~7;
  const b = alloc(want + 8, KIND_IO);
  if (b == 0) return false;
  if (io != 0) release(io - 8);
  io = b + 8;
  ioCap = blockSize(b) - 8;
  store<u32>(META, <u32>io, META_IO_PTR);
  store<u32>(META, ioCap, META_IO_CAP);
  return true;
}

/** Remove entry e (found by the last lookup) from the table and free its block. */
function dropEntry(e: usize): void {
  removeFound();
  count--;
  if (entryExpiresAt(e) != 0) expiring--;
  dataBytes -= <f64>(entryKeyLen(e) + entryValLen(e));
  entryBytes -= <f64>blockSize(e);
  release(e);
}

/** Write an entry's fields after its key; the key is already in place. */
@inline function writeEntry(
  e: usize, h: u32, kl: u32, vl: u32, value: usize, verWall: f64, verCounter: u32, expiresAt: f64,
  ftLen: u32, ftWall: f64, ftCounter: u32, ftNode: usize,
): void {
  store<u32>(e, h, 4);
  store<u32>(e, kl, 8);
  store<u32>(e, vl, 12);
  store<f64>(e, verWall, 16);
  store<u32>(e, verCounter, 24);
  store<u32>(e, ftLen, 28);
  store<f64>(e, expiresAt, 32);
  memory.copy(e + ENTRY_HEADER + kl, value, vl);
  if (ftLen != 0) {
    const t = e + ENTRY_HEADER + kl + vl;
    store<f64>(t, ftWall);
    store<u32>(t, ftCounter, 8);
    memory.copy(t + 12, ftNode, ftLen - 12);
  }
}

// ---------------------------------------------------------------- exported API

/** Set up an empty table with room for about `initialKeys` keys. Idempotent reset. */
export function stateInit(initialKeys: u32): i32 {
  if (!initialized) {
    // Start after anything the module's start function allocated (stub runtime bump).
    arenaBase = (heap.alloc(16) + 16 + 7) & ~(<usize>7);
    initialized = true;
  }
  arenaTop = arenaBase;
  largeFree = 0;
  memory.fill(FREE_HEADS, 0, <usize>((SMALL_CLASSES + 1) << 2));
  io = 0;
  ioCap = 0;
  count = 0;
  expiring = 0;
  dataBytes = 0;
  entryBytes = 0;
  slotBytes = 0;
  freeBytes = 0;
  oldSlots = 0;
  oldCap = 0;
  oldMask = 0;
  migrateIndex = 0;
  sweepCursor = 0;
  let c = MIN_CAP;
  const want = <u64>initialKeys * 4 / 3 + 1;
  while (<u64>c < want && c < 0x40000000) c <<= 1;
  if (!reserveIo(IO_MIN)) return ERR_NO_MEMORY;
  slots = allocSlots(c);
  if (slots == 0) return ERR_NO_MEMORY;
  cap = c;
  mask = c - 1;
  used = 0;
  return RESULT_OK;
}

export function stateMeta(): usize { return META; }
export function stateIo(): usize { return io; }
export function stateIoCapacity(): u32 { return ioCap; }

/** Make the IO region at least n bytes; returns its (possibly new) address, 0 if no memory. */
export function stateIoReserve(n: u32): usize {
  return reserveIo(n) ? io : 0;
}

export function stateSetLimits(keys: u32, bytes: f64): void {
  maxKeys = keys;
  maxBytes = bytes;
}

/**
 * GET: key in IO[0, keyLen). On a hit the value is copied to IO[0, valLen) and META holds the
 * entry's fields. An expired entry is removed (META_FLAGS has META_EXPIRED) and is a miss.
 */
export function stateGet(keyLen: u32, now: f64): i32 {
  store<u32>(META, 0, META_FLAGS);
  const h = hashBytes(io, keyLen);
  const e = lookup(h, io, keyLen);
  if (e == 0) return RESULT_NONE;
  if (isExpired(e, now)) {
    dropEntry(e);
    store<u32>(META, META_EXPIRED, META_FLAGS);
    rebalance();
    return RESULT_NONE;
  }
  setMetaFromEntry(e);
  const vl = entryValLen(e);
  if (!reserveIo(vl)) return ERR_NO_MEMORY;
  memory.copy(io, entryValue(e), vl);
  return RESULT_OK;
}

/**
 * SET: IO holds key | value | fencing token node id. Flags: SET_NX, SET_NEX, FLAG_FENCING.
 * The entry gets version (verWall, verCounter) and expiresAt (0 = never). Returns RESULT_OK
 * (applied), RESULT_NONE (NX/NEX not met; META describes the existing entry), or an error.
 */
export function stateSet(
  keyLen: u32, valLen: u32, flags: u32, verWall: f64, verCounter: u32, expiresAt: f64,
  ftWall: f64, ftCounter: u32, ftNodeLen: u32, now: f64,
): i32 {
  store<u32>(META, 0, META_FLAGS);
  const kp = io;
  const vp = io + keyLen;
  const np = vp + valLen;
  const h = hashBytes(kp, keyLen);
  let e = lookup(h, kp, keyLen);
  if (e != 0 && isExpired(e, now)) {
    dropEntry(e);
    store<u32>(META, META_EXPIRED, META_FLAGS);
    e = 0;
  }
  const hasFt = (flags & FLAG_FENCING) != 0;
  let ftLen: u32 = hasFt ? 12 + ftNodeLen : 0;
  if (e != 0) {
    const stored = entryFtLen(e);
    if (stored != 0) {
      if (!hasFt) return ERR_FENCING_REQUIRED;
      const c = compareFencing(e, ftWall, ftCounter, np, ftNodeLen);
      if (c < 0) return ERR_FENCING_STALE;
    }
    if ((flags & SET_NX) != 0 || ((flags & SET_NEX) != 0 && !(entryValLen(e) == valLen && bytesEqual(entryValue(e), vp, valLen)))) {
      setMetaFromEntry(e);
      return RESULT_NONE;
    }
    const oldData = <f64>(keyLen + entryValLen(e));
    if (dataBytes - oldData + <f64>(keyLen + valLen) > maxBytes) return ERR_QUOTA;
    const need = ENTRY_HEADER + keyLen + valLen + ftLen;
    const have = blockSize(e);
    const hadExpiry = entryExpiresAt(e) != 0;
    if (need <= have && need * 2 > have) {
      writeEntry(e, h, keyLen, valLen, vp, verWall, verCounter, expiresAt, ftLen, ftWall, ftCounter, np);
    } else {
      const b = alloc(need, KIND_ENTRY);
      if (b == 0) return ERR_NO_MEMORY;
      memory.copy(b + ENTRY_HEADER, kp, keyLen);
      writeEntry(b, h, keyLen, valLen, vp, verWall, verCounter, expiresAt, ftLen, ftWall, ftCounter, np);
      replaceFound(b);
      entryBytes += <f64>blockSize(b) - <f64>have;
      release(e);
    }
    dataBytes += <f64>(keyLen + valLen) - oldData;
    if (hadExpiry) expiring--;
    if (expiresAt != 0) expiring++;
    rebalance();
    return RESULT_OK;
  }
  if (count >= maxKeys || dataBytes + <f64>(keyLen + valLen) > maxBytes) {
    if ((load<u32>(META, META_FLAGS) & META_EXPIRED) != 0) rebalance();
    return ERR_QUOTA;
  }
  const b = alloc(ENTRY_HEADER + keyLen + valLen + ftLen, KIND_ENTRY);
  if (b == 0) return ERR_NO_MEMORY;
  memory.copy(b + ENTRY_HEADER, kp, keyLen);
  writeEntry(b, h, keyLen, valLen, vp, verWall, verCounter, expiresAt, ftLen, ftWall, ftCounter, np);
  insertSlot(h, <u32>b);
  count++;
  if (expiresAt != 0) expiring++;
  dataBytes += <f64>(keyLen + valLen);
  entryBytes += <f64>blockSize(b);
  rebalance();
  return RESULT_OK;
}

/**
 * DEL / VDEL: IO holds key | [value when DEL_VALUE] | fencing token node id.
 * Returns RESULT_OK (deleted), RESULT_NONE (absent), RESULT_MISMATCH (VDEL, other value;
 * META describes the entry), or a fencing error.
 */
export function stateDelete(keyLen: u32, valLen: u32, flags: u32, ftWall: f64, ftCounter: u32, ftNodeLen: u32, now: f64): i32 {
  store<u32>(META, 0, META_FLAGS);
  const kp = io;
  const vp = io + keyLen;
  const vl = (flags & DEL_VALUE) != 0 ? valLen : 0;
  const np = vp + vl;
  const h = hashBytes(kp, keyLen);
  const e = lookup(h, kp, keyLen);
  if (e == 0) return RESULT_NONE;
  if (isExpired(e, now)) {
    dropEntry(e);
    store<u32>(META, META_EXPIRED, META_FLAGS);
    rebalance();
    return RESULT_NONE;
  }
  if (entryFtLen(e) != 0) {
    if ((flags & FLAG_FENCING) == 0) return ERR_FENCING_REQUIRED;
    if (compareFencing(e, ftWall, ftCounter, np, ftNodeLen) < 0) return ERR_FENCING_STALE;
  }
  if ((flags & DEL_VALUE) != 0 && !(entryValLen(e) == vl && bytesEqual(entryValue(e), vp, vl))) {
    setMetaFromEntry(e);
    return RESULT_MISMATCH;
  }
  setMetaFromEntry(e);
  dropEntry(e);
  rebalance();
  return RESULT_OK;
}

/**
 * The periodic expiry sweep: walk the arena from where the last call stopped, looking at up to
 * `budget` blocks. The first expired entry found is removed and its key copied to IO
 * (length in META_KEY_LEN): SWEEP_FOUND. SWEEP_BUDGET when the budget ran out, SWEEP_END
 * when the walk reached the end of the arena (the next call starts over).
 */
export function stateSweep(now: f64, budget: u32): i32 {
  if (expiring == 0) {
    sweepCursor = 0;
    return SWEEP_END;
  }
  let b = sweepCursor == 0 ? arenaBase : sweepCursor;
  while (budget > 0) {
    if (b >= arenaTop) {
      sweepCursor = 0;
      return SWEEP_END;
    }
    const size = blockSize(b);
    if (blockKind(b) == KIND_ENTRY && isExpired(b, now)) {
      const kl = entryKeyLen(b);
      if (!reserveIo(kl)) return ERR_NO_MEMORY;
      memory.copy(io, entryKey(b), kl);
      store<u32>(META, kl, META_KEY_LEN);
      setMetaFromEntry(b);
      const found = lookup(load<u32>(b, 4), io, kl);
      sweepCursor = b + size;
      if (found == b) {
        dropEntry(b);
        rebalance();
      }
      // the freed block may have lowered the arena top below the cursor
      if (sweepCursor > arenaTop) sweepCursor = 0;
      return SWEEP_FOUND;
    }
    b += size;
    budget--;
  }
  sweepCursor = b;
  return SWEEP_BUDGET;
}

/** Address of the first block, to start stateExport. */
export function stateFirst(): usize { return arenaBase; }

/**
 * Copy snapshot records (codes.ts RECORD_HEADER) of the entries from block `cursor` on into
 * IO, as many as fit (at least one: IO grows for a big entry). Expired entries are skipped.
 * META_WRITTEN holds the bytes written; returns the cursor to continue from, 0 at the end.
 */
export function stateExport(cursor: usize, now: f64): usize {
  let b = cursor;
  let w: u32 = 0;
  while (b < arenaTop) {
    const size = blockSize(b);
    if (blockKind(b) == KIND_ENTRY && !isExpired(b, now)) {
      const len = <u32>RECORD_HEADER + entryKeyLen(b) + entryValLen(b) + entryFtLen(b);
      if (w + len > ioCap) {
        if (w > 0) break;
        if (!reserveIo(len)) return 0;
      }
      memory.copy(io + w, b + 8, len);
      w += len;
    }
    b += size;
  }
  store<u32>(META, w, META_WRITTEN);
  return b < arenaTop ? b : 0;
}

/**
 * Load `len` bytes of snapshot records from IO (as written by stateExport). No quota check;
 * records already expired at `now` are skipped; a key seen twice keeps the later record.
 * Returns the number of entries loaded, or ERR_CORRUPT / ERR_NO_MEMORY.
 */
export function stateImport(len: u32, now: f64): i32 {
  if (oldSlots != 0) migrate(0xffffffff);
  let r: u32 = 0;
  let loaded: i32 = 0;
  while (r < len) {
    if (len - r < <u32>RECORD_HEADER) return ERR_CORRUPT;
    const p = io + r;
    const kl = load<u32>(p);
    const vl = load<u32>(p, 4);
    const ftLen = load<u32>(p, 20);
    if (kl == 0 || (ftLen != 0 && ftLen < 12)) return ERR_CORRUPT;
    const total = <u64>RECORD_HEADER + <u64>kl + <u64>vl + <u64>ftLen;
    if (total > <u64>(len - r)) return ERR_CORRUPT;
    const t = <u32>total;
    const x = load<f64>(p, 24);
    if (!(x != 0 && x <= now)) {
      // bulk load: no migration runs (finished at once below), so one probe of the current
      // array finds either the key (a duplicate record: the later one wins) or its free slot
      const kp = p + RECORD_HEADER;
      const h = hashBytes(kp, kl);
      let i = h & mask;
      let found: usize = 0;
      while (true) {
        const q = slotPtr(slots, i);
        if (q == EMPTY) break;
        if (slotHash(slots, i) == h && entryKeyLen(<usize>q) == kl && bytesEqual(entryKey(<usize>q), kp, kl)) {
          found = <usize>q;
          break;
        }
        i = (i + 1) & mask;
      }
      const b = alloc(8 + t, KIND_ENTRY);
      if (b == 0) return ERR_NO_MEMORY;
      store<u32>(b, h, 4);
      memory.copy(b + 8, p, t);
      if (found != 0) {
        // replace in place: same slot, the old entry's block goes back
        store<u32>(slots + ((<usize>i) << 3), <u32>b, 4);
        count--;
        if (entryExpiresAt(found) != 0) expiring--;
        dataBytes -= <f64>(entryKeyLen(found) + entryValLen(found));
        entryBytes -= <f64>blockSize(found);
        release(found);
      } else {
        setSlot(slots, i, h, <u32>b);
        used++;
      }
      count++;
      if (x != 0) expiring++;
      dataBytes += <f64>(kl + vl);
      entryBytes += <f64>blockSize(b);
      loaded++;
      if (used * 4 >= cap * 3) {
        if (!startResize(cap << 1)) return ERR_NO_MEMORY;
        migrate(0xffffffff);
      }
    }
    r += t;
  }
  return loaded;
}

/** Advance a migration by up to `budget` slots (idle-time work). Returns 1 while one is left. */
export function stateMaintain(budget: u32): i32 {
  return migrate(budget) ? 0 : 1;
}

export function stateCount(): u32 { return count; }
export function stateExpiring(): u32 { return expiring; }
export function stateDataBytes(): f64 { return dataBytes; }
export function stateEntryBytes(): f64 { return entryBytes; }
export function stateSlotBytes(): f64 { return slotBytes; }
export function stateFreeBytes(): f64 { return freeBytes; }
export function stateArenaBytes(): f64 { return <f64>(arenaTop - arenaBase); }
export function stateMemoryBytes(): f64 { return <f64>((<u64>memory.size()) << 16); }
export function stateCapacity(): u32 { return cap; }
export function stateMigrating(): i32 { return oldSlots != 0 ? 1 : 0; }
