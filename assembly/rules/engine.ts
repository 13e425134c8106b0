// The rules engine's fixed parts: the tables blob, the topic matcher, per-message state,
// output records and counters. The generated program (src/rules/codegen.ts) imports this
// and exports `process`.
//
// The sizes and positions below are defined once, in ./layout.ts, which the host side
// (src/rules/codegen.ts, src/rules/runtime.ts) imports too.
//
// Tables blob (written once by the host at tablesPtr(size), then loadTables()), built by
// src/rules/codegen.ts; u32 words, offsets relative to the blob:
//   header (HEADER_WORDS = 20 u32, indices H_*)
//     [0] magic 0x33545246 ("FRT3")  [1] targets  [2] filter targets (targets below are filters)
//     [3] topic nodes  [4] topic node offset  [5] topic edge offset  [6] target list offset
//     [7] key nodes    [8] key node offset    [9] key edge offset    [10] string pool offset
//     [11] slots       [12] target table offset
//     [13] statements  [14] statement table offset  [15] filter statements (listed first)
//     [16] logic entries  [17] logic table offset  [18] mask words per logic entry  [19] 0
//   (magic "FRT3" since logic entries carry templates)
//   topic node (TOPIC_NODE_SIZE = 32 bytes)
//     +0 edgeStart  +4 edgeCount (edges sorted by (length, bytes))  +8 `+` child or -1
//     +12 `#` child or -1  +16 first target in the target list  +20 target count
//     +24 offset of the node's level hash table, or 0 (nodes with few edges: binary search)
//     +28 hash table mask (size - 1; the size is a power of two, at least twice the edges)
//   level hash table: u32 per bucket, 0 empty, else edge index + 1; FNV-1a of the level
//     bytes, linear probing
//   topic edge (EDGE_SIZE = 12 bytes, edges.ts): +0 level offset in the string pool, +4 level length, +8 child
//   target (12 bytes): +0 1 for a filter, 0 for a rule statement  +4 first statement  +8 statements
//   statement (8 bytes): +0 shape (compiled condition function)  +4 offset of its parameters
//   logic entry (LOGIC_SIZE = 20 bytes): +0 shape  +4 offset of its parameters  +8 offset of its mask
//     (u32 words: the statements whose messages form the JSON payload), -1 for a fixed payload
//     +12 template function (its {{ }} values), -1 for none  +16 offset of the template's parameters
//   parameters: 8-byte cells, an i32 slot / statement index or an f64 constant each
//   key nodes and edges: see json.ts
//
// Input region (inputPtr): the topic bytes for learnTopic / restoreEntry, the payload bytes
//   for process.
// Topic slots (topicCache(slots)), TOPIC_SLOT_SIZE = 12 bytes each, one per topic the host
//   has seen (src/rules/runtime.ts numbers them; it reuses slots from 0 after it forgets):
//   +0 block address (0: empty)  +4 matched target count  +8 topic length
//   block: the matched targets (i32 each, ascending), then the topic bytes. A topic is
//   matched against the tree once, when it is learnt; its messages reuse the list.
// Output records (outputPtr), one per statement or logic entry that fired, OUTPUT_SIZE = 24 bytes:
//   +0 kind (OUT_FILTER: filter statement, OUT_RULE: logic entry)  +4 index
//   +8 JSON start in outputJsonPtr() (OUT_RULE with an empty new_payload), else -1  +12 JSON length
//   +16 first template value (byte offset in the values arena)  +20 template values
// Template values arena (a statement's {{ }} expressions when it fires, in order), per value
//   VALUE_SIZE = 16 bytes: +0 kind (V_* of values.ts)  +4 string length  +8 f64 number / boolean;
//   a string's bytes follow, padded to 8 bytes.
// Counters (countersPtr), f64 each, cumulative:
//   [0] messages  [1] topic matches (targets matched)  [2] evaluations (conditions run)
//   [3] fires (records output)  [4] unknown: missing variable  [5] unknown: kind mismatch
//   [6] payloads not a JSON object  [7] buffer full (entries not stored)
//   [8] topics held in statements' memory  [9] topics forgotten  [10] window samples merged
//   then three u32 at countersPtr() + 88: the current output records, output JSON and template
//   values addresses (they move when those buffers grow), so the host reads them without a call
//   +100 u32 timing flag: the host sets it to time the next message (cleared by it)
//   +104 u32 timing records address  +108 i32 timing records of the last timed message
//   +112 f64 the last timed message's whole time (ms)
//   +120 u32 RULES_SKIPPED: 1 when the last message matched rule statements its mode did not run
// Timing records (a timed message only; metrics per filter and per rule), TIMING_SIZE = 16 bytes:
//   +0 i32 part: a statement index, or statements + a logic entry index  +8 f64 ms from the
//   start of that statement (or logic entry) to the start of the next one or the message's end
// Statement counters (statementCountersPtr), f64 each, per statement (filter statements, then
//   rule statements): +0 evaluations  +8 true  +16 unknown; then per logic entry: +0 fires.

import { setKeyTables, setScratch, scanObject } from "./json";
import { setRegisters, missingCount, kindCount, resetUnknownCounts } from "./values";
import { EDGE_SIZE, searchEdges } from "./edges";
import { initBuffer, beginTopic, commitTopic, clearBuffer, outputJsonReset, appendBufferJson, outputJsonLength, outputJsonPtr, bufferFull, ruleResult } from "./buffer";
import { invalidateSlots } from "./json";
import { initMemory, memoryMessage, memTopics, memEvicted, memMerged, currentStatement, setStatement as setMemoryStatement } from "./memory";
import { regPtr, setString, setUnknown, setNumber, setBool, setNull, V_NUMBER, V_STRING, V_BOOL, V_NULL, V_UNKNOWN, FALSE, TRUE } from "./values";
import { hostStateRead, hostClock } from "./host";
import {
  TABLES_MAGIC, H_MAGIC, H_TARGETS, H_FILTER_TARGETS, H_TOPIC_NODES, H_TOPIC_NODE_AT, H_TOPIC_EDGE_AT,
  H_TARGET_LIST_AT, H_KEY_NODES, H_KEY_NODE_AT, H_KEY_EDGE_AT, H_STRINGS_AT, H_SLOTS, H_TARGET_TABLE_AT,
  H_STATEMENTS, H_STATEMENT_TABLE_AT, H_LOGIC_ENTRIES, H_LOGIC_TABLE_AT, TOPIC_NODE_SIZE, TARGET_SIZE,
  STATEMENT_SIZE, LOGIC_SIZE, OUTPUT_SIZE, VALUE_SIZE, COUNTERS_SIZE, PTRS, TIMING, TIMING_SIZE,
  STATEMENT_COUNTERS_SIZE, LOGIC_COUNTERS_SIZE, OUT_FILTER, OUT_RULE, RULES_SKIPPED, RUN_FILTERS, RUN_RULES,
} from "./layout";

export {
  memoryOldest, memoryAlloc, memoryRestore, memoryClear, ringReserve, setMemoryLimits,
} from "./memory";

export { outputJsonPtr, bufferEntries, bufferEntry, bufferWords } from "./buffer";

const SLOT_SIZE: usize = 32;

const counters = memory.data(COUNTERS_SIZE, 8);
let statementCounters: usize = 0;
let logicCounters: usize = 0;
let statementTotal: i32 = 0;

let tables: usize = 0;
let targetTotal: i32 = 0;
let filterTargets: i32 = 0;
let topicNodes: usize = 0;
let topicEdges: usize = 0;
let targetLists: usize = 0;
let strings: usize = 0;
let topicNodeCount: i32 = 0;
let slotCount: i32 = 0;
let targetTable: usize = 0;
let statementTable: usize = 0;
let logicTable: usize = 0;
let logicEntries: i32 = 0;

let input: usize = 0;
let inputCap: usize = 0;
let scratch: usize = 0;
let scratchCap: usize = 0;
let registerCount: i32 = 0;

let matched: usize = 0;
let matchedCount: i32 = 0;
/** The current message's targets (a topic slot's block). */
let matchedList: usize = 0;
const TOPIC_SLOT_SIZE: usize = 12;
let topicSlots: usize = 0;
let outputs: usize = 0;
let outputCount: i32 = 0;

// The current message
let topicPtr: usize = 0;
let topicLen: usize = 0;
let payloadPtr: usize = 0;
let payloadLen: usize = 0;
let scanned = false;
let isObject = false;
let ruleTouched = false;

/** Called by the generated program's top level. */
export function configure(registers: i32): void {
  registerCount = registers;
  setRegisters(heap.alloc((<usize>(registers > 0 ? registers : 1)) * 24));
}

export function countersPtr(): usize {
  return counters;
}

export function tablesPtr(size: usize): usize {
  tables = heap.alloc(size);
  return tables;
}

// @ts-ignore: decorator
@inline function word(i: usize): u32 {
  return load<u32>(tables + i * 4);
}

/** Reads the blob's header; returns 0 when it is not a tables blob. */
export function loadTables(ruleStatements: i32): i32 {
  if (word(H_MAGIC) != TABLES_MAGIC) return 0;
  targetTotal = <i32>word(H_TARGETS);
  filterTargets = <i32>word(H_FILTER_TARGETS);
  topicNodeCount = <i32>word(H_TOPIC_NODES);
  topicNodes = tables + <usize>word(H_TOPIC_NODE_AT);
  topicEdges = tables + <usize>word(H_TOPIC_EDGE_AT);
  targetLists = tables + <usize>word(H_TARGET_LIST_AT);
  strings = tables + <usize>word(H_STRINGS_AT);
  slotCount = <i32>word(H_SLOTS);
  targetTable = tables + <usize>word(H_TARGET_TABLE_AT);
  statementTable = tables + <usize>word(H_STATEMENT_TABLE_AT);
  logicEntries = <i32>word(H_LOGIC_ENTRIES);
  logicTable = tables + <usize>word(H_LOGIC_TABLE_AT);
  statementTotal = <i32>word(H_STATEMENTS);
  initMemory(statementTotal);
  const sc = (<usize>(statementTotal > 0 ? statementTotal : 1)) * STATEMENT_COUNTERS_SIZE + (<usize>(logicEntries > 0 ? logicEntries : 1)) * LOGIC_COUNTERS_SIZE;
  statementCounters = heap.alloc(sc);
  memory.fill(statementCounters, 0, sc);
  logicCounters = statementCounters + (<usize>statementTotal) * STATEMENT_COUNTERS_SIZE;
  values = heap.alloc(1024);
  valuesCap = 1024;
  store<u32>(counters, <u32>values, PTRS + 8);
  stateArena = heap.alloc(256);
  stateCap = 256;
  const slotBytes = (<usize>(slotCount > 0 ? slotCount : 1)) * SLOT_SIZE;
  const slots = heap.alloc(slotBytes);
  memory.fill(slots, 0, slotBytes);
  setKeyTables(tables + <usize>word(H_KEY_NODE_AT), tables + <usize>word(H_KEY_EDGE_AT), strings, <i32>word(H_KEY_NODES), slots, slotCount);
  matched = heap.alloc((<usize>(targetTotal > 0 ? targetTotal : 1)) * 4);
  outputs = heap.alloc(64 * OUTPUT_SIZE);
  outputCap = 64;
  store<u32>(counters, <u32>outputs, PTRS);
  initBuffer(ruleStatements);
  timingRecords = heap.alloc((<usize>(statementTotal + logicEntries + 1)) * TIMING_SIZE);
  store<u32>(counters, <u32>timingRecords, TIMING + 4);
  return 1;
}

let outputCap: i32 = 0;

/** Ensures the input region holds `size` bytes; returns its address. */
export function inputPtr(size: usize): usize {
  if (size > inputCap) {
    input = input == 0 ? heap.alloc(size) : heap.realloc(input, size);
    inputCap = size;
  }
  return input;
}

export function outputPtr(): usize {
  return outputs;
}

/** Allocates `slots` empty topic slots (once, after loadTables). */
export function topicCache(slots: i32): void {
  const bytes = (<usize>slots) * TOPIC_SLOT_SIZE;
  topicSlots = heap.alloc(bytes);
  memory.fill(topicSlots, 0, bytes);
}

/**
 * Learns the topic in the input region (`tlen` bytes) as `slot`: walks the topic tree once and
 * keeps the matched targets, in document order, with a copy of the topic bytes.
 */
export function learnTopic(slot: i32, tlen: i32): void {
  const s = topicSlots + (<usize>slot) * TOPIC_SLOT_SIZE;
  const old = load<u32>(s);
  if (old != 0) heap.free(<usize>old);
  topicPtr = input;
  topicLen = <usize>tlen;
  matchedCount = 0;
  if (topicNodeCount > 0 && tlen > 0) walk(0, topicPtr, true);
  // ascending target order = document order (insertion sort: lists are short)
  for (let i = 1; i < matchedCount; i++) {
    const v = load<i32>(matched + (<usize>i) * 4);
    let j = i - 1;
    while (j >= 0 && load<i32>(matched + (<usize>j) * 4) > v) {
      store<i32>(matched + (<usize>(j + 1)) * 4, load<i32>(matched + (<usize>j) * 4));
      j--;
    }
    store<i32>(matched + (<usize>(j + 1)) * 4, v);
  }
  const listBytes = (<usize>matchedCount) * 4;
  const block = heap.alloc(listBytes + <usize>tlen + 1);
  memory.copy(block, matched, listBytes);
  memory.copy(block + listBytes, input, <usize>tlen);
  store<u32>(s, <u32>block);
  store<i32>(s, matchedCount, 4);
  store<i32>(s, tlen, 8);
}

// Topic matching ---------------------------------------------------------------------------

function addTargets(node: i32): void {
  const n = topicNodes + (<usize>node) * TOPIC_NODE_SIZE;
  const start = load<u32>(n, 16);
  const count = load<i32>(n, 20);
  for (let i = 0; i < count; i++) {
    store<i32>(matched + (<usize>matchedCount) * 4, load<i32>(targetLists + (<usize>(start + <u32>i)) * 4));
    matchedCount++;
  }
}

function findLevel(node: i32, ptr: usize, len: usize): i32 {
  const n = topicNodes + (<usize>node) * TOPIC_NODE_SIZE;
  const table = load<u32>(n, 24);
  if (table != 0) {
    // many literal levels: one hash and usually one comparison
    const mask = load<u32>(n, 28);
    let h: u32 = 0x811c9dc5;
    for (let i: usize = 0; i < len; i++) h = (h ^ <u32>load<u8>(ptr + i)) * 0x01000193;
    const buckets = tables + <usize>table;
    for (;;) {
      const slot = load<u32>(buckets + (<usize>(h & mask)) * 4);
      if (slot == 0) return -1;
      const e = topicEdges + (<usize>(slot - 1)) * EDGE_SIZE;
      if (<usize>load<u32>(e, 4) == len && memory.compare(strings + <usize>load<u32>(e), ptr, len) == 0) return load<i32>(e, 8);
      h++;
    }
  }
  return searchEdges(topicEdges, load<i32>(n), load<i32>(n, 4), strings, ptr, len);
}

/**
 * A decision tree over topic levels: at each level one binary search among the literal
 * levels, plus the `+` and `#` branches, so the cost does not grow with the number of filters.
 * `start` is where the current level begins.
 */
function walk(node: i32, start: usize, first: bool): void {
  const n = topicNodes + (<usize>node) * TOPIC_NODE_SIZE;
  // [MQTT-5-4.7.2-1] wildcards in the first level do not match topics starting with $
  const wild = !(first && topicLen > 0 && load<u8>(topicPtr) == 0x24);
  const hash = load<i32>(n, 12);
  if (hash >= 0 && wild) addTargets(hash);
  let end = start;
  const stop = topicPtr + topicLen;
  while (end < stop && load<u8>(end) != 0x2f) end++;
  const literal = findLevel(node, start, end - start);
  if (literal >= 0) step(literal, end, stop);
  const plus = load<i32>(n, 8);
  if (plus >= 0 && wild) step(plus, end, stop);
}

function step(child: i32, end: usize, stop: usize): void {
  if (end >= stop) {
    addTargets(child);
    // [MQTT-5-4.7.1-2] "a/#" also matches "a"
    const hash = load<i32>(topicNodes + (<usize>child) * TOPIC_NODE_SIZE, 12);
    if (hash >= 0) addTargets(hash);
  } else walk(child, end + 1, false);
}

// Tables for the generated code ----------------------------------------------------------

// @ts-ignore: decorator
@inline export function targetIsFilter(t: i32): bool {
  return load<u32>(targetTable + (<usize>t) * TARGET_SIZE) != 0;
}

// @ts-ignore: decorator
@inline export function targetFirst(t: i32): i32 {
  return load<i32>(targetTable + (<usize>t) * TARGET_SIZE, 4);
}

// @ts-ignore: decorator
@inline export function targetCount(t: i32): i32 {
  return load<i32>(targetTable + (<usize>t) * TARGET_SIZE, 8);
}

// @ts-ignore: decorator
@inline export function statementShape(s: i32): i32 {
  return load<i32>(statementTable + (<usize>s) * STATEMENT_SIZE);
}

// @ts-ignore: decorator
@inline export function statementParams(s: i32): usize {
  return tables + <usize>load<u32>(statementTable + (<usize>s) * STATEMENT_SIZE, 4);
}


/** The logic entry's template function, or -1 when it has no templates. */
// @ts-ignore: decorator
@inline export function logicTemplate(j: i32): i32 {
  return load<i32>(logicTable + (<usize>j) * LOGIC_SIZE, 12);
}

// @ts-ignore: decorator
@inline export function logicTemplateParams(j: i32): usize {
  return tables + <usize>load<u32>(logicTable + (<usize>j) * LOGIC_SIZE, 16);
}

// @ts-ignore: decorator
@inline export function logicCount(): i32 {
  return logicEntries;
}

// @ts-ignore: decorator
@inline export function logicShape(j: i32): i32 {
  return load<i32>(logicTable + (<usize>j) * LOGIC_SIZE);
}

// @ts-ignore: decorator
@inline export function logicParams(j: i32): usize {
  // the generated evalLogic reads its parameters first: where a timed logic entry starts
  if (timing) timingMark(statementTotal + j);
  return tables + <usize>load<u32>(logicTable + (<usize>j) * LOGIC_SIZE, 4);
}

/** The logic entry's mask, or 0 when its new_payload is fixed. */
// @ts-ignore: decorator
@inline export function logicMask(j: i32): usize {
  const at = load<i32>(logicTable + (<usize>j) * LOGIC_SIZE, 8);
  return at < 0 ? 0 : tables + <usize>at;
}

// Per-message flow -------------------------------------------------------------------------

/** Starts a message on a learnt topic slot; returns how many targets its topic matched. */
export function beginMessage(slot: i32, plen: i32, now: f64): i32 {
  if (load<u32>(counters, TIMING) != 0) timingBegin();
  store<f64>(counters, load<f64>(counters) + 1);
  const s = topicSlots + (<usize>slot) * TOPIC_SLOT_SIZE;
  matchedList = <usize>load<u32>(s);
  matchedCount = load<i32>(s, 4);
  topicPtr = matchedList + (<usize>matchedCount) * 4;
  topicLen = <usize>load<i32>(s, 8);
  payloadPtr = input;
  payloadLen = <usize>plen;
  outputCount = 0;
  scanned = false;
  isObject = false;
  ruleTouched = false;
  store<u32>(counters, 0, RULES_SKIPPED);
  outputJsonReset();
  valuesUsed = 0;
  valueCount = 0;
  memoryMessage(topicPtr, topicLen, now);
  store<f64>(counters, load<f64>(counters, 8) + <f64>matchedCount, 8);
  return matchedCount;
}

// @ts-ignore: decorator
@inline export function matchedTarget(i: i32): i32 {
  return load<i32>(matchedList + (<usize>i) * 4);
}

/** Whether a matched target runs in `mode` (RUN_* bits); a rule statement left out is noted (RULES_SKIPPED). */
export function targetRuns(t: i32, mode: i32): bool {
  if (targetIsFilter(t)) return (mode & RUN_FILTERS) != 0;
  if ((mode & RUN_RULES) != 0) return true;
  store<u32>(counters, 1, RULES_SKIPPED);
  return false;
}

/** Whether the payload is a JSON object (scanned once per message, on first use). */
export function payloadIsObject(): bool {
  if (!scanned) {
    scanned = true;
    const need = payloadLen + <usize>slotCount * 32 + 64;
    if (need > scratchCap) {
      scratch = scratch == 0 ? heap.alloc(need) : heap.realloc(scratch, need);
      scratchCap = need;
    }
    setScratch(scratch);
    isObject = scanObject(payloadPtr, payloadLen);
    if (!isObject) {
      store<f64>(counters, load<f64>(counters, 48) + 1, 48);
      invalidateSlots();
    }
  }
  return isObject;
}

// @ts-ignore: decorator
@inline export function evaluated(): void {
  store<f64>(counters, load<f64>(counters, 16) + 1, 16);
  const p = statementCounters + (<usize>currentStatement) * STATEMENT_COUNTERS_SIZE;
  store<f64>(p, load<f64>(p) + 1);
}

/** Per-statement counts of a condition's result (metrics per filter and rule). */
// @ts-ignore: decorator
@inline export function statementResult(r: i32): void {
  if (r == FALSE) return;
  const p = statementCounters + (<usize>currentStatement) * STATEMENT_COUNTERS_SIZE + (r == TRUE ? 8 : 16);
  store<f64>(p, load<f64>(p) + 1);
}

export function statementCountersPtr(): usize {
  return statementCounters;
}

/** Which statement runs now (its memory record and counters). */
// @ts-ignore: decorator
@inline export function setStatement(s: i32): void {
  if (timing) timingMark(s);
  setMemoryStatement(s);
  stateUsed = 0;
}

// Template values --------------------------------------------------------------------------

let values: usize = 0;
let valuesCap: usize = 0;
let valuesUsed: usize = 0;
let valueStart: usize = 0;
let valueCount: i32 = 0;

function reserveValues(size: usize): void {
  if (valuesUsed + size <= valuesCap) return;
  let cap = valuesCap * 2;
  while (cap < valuesUsed + size) cap *= 2;
  values = heap.realloc(values, cap);
  valuesCap = cap;
  store<u32>(counters, <u32>values, PTRS + 8);
}

/** A statement fired: its template values follow. */
export function tplBegin(): void {
  valueStart = valuesUsed;
  valueCount = 0;
}

/** Appends register r's value to the current output's template values. */
export function valuePush(r: i32): void {
  const p = regPtr(r);
  const kind = load<i32>(p);
  const len: usize = kind == V_STRING ? <usize>load<i32>(p, 8) : 0;
  const size = VALUE_SIZE + ((len + 7) & ~7);
  reserveValues(size);
  const v = values + valuesUsed;
  store<i32>(v, kind);
  store<i32>(v, <i32>len, 4);
  store<f64>(v, kind == V_STRING ? 0 : load<f64>(p, 16), 8);
  if (len > 0) memory.copy(v + VALUE_SIZE, <usize>load<u32>(p, 4), len);
  valuesUsed += size;
  valueCount++;
}

// Functions of the message ---------------------------------------------------------------

/** topic(n): level n (from 1) of the current topic. */
export function topicLevel(r: i32, n: i32): void {
  let start = topicPtr;
  const stop = topicPtr + topicLen;
  let level = 1;
  let p = start;
  while (level < n) {
    while (p < stop && load<u8>(p) != 0x2f) p++;
    if (p >= stop) {
      setUnknown(r);
      return;
    }
    p++;
    start = p;
    level++;
  }
  let e = start;
  while (e < stop && load<u8>(e) != 0x2f) e++;
  setString(r, start, <i32>(e - start));
}

// state(): values read from the host into an arena reset per statement
let stateArena: usize = 0;
let stateCap: usize = 0;
let stateUsed: usize = 0;

/** state(key template `key`) into register r. */
export function loadState(r: i32, key: i32): void {
  for (;;) {
    if (stateCap - stateUsed < 8) growState(8);
    const dst = stateArena + stateUsed;
    const res = hostStateRead(key, dst, <i32>(stateCap - stateUsed));
    if (res < 0) {
      setUnknown(r);
      return;
    }
    const kind = res & 7;
    const len = <usize>(res >>> 3);
    if (kind == 6) {
      growState(len);
      continue;
    }
    if (kind == 1) setNull(r);
    else if (kind == 2 || kind == 3) setBool(r, kind == 3);
    else if (kind == 4) setNumber(r, load<f64>(dst));
    else {
      setString(r, dst, <i32>len);
      stateUsed += (len + 7) & ~7;
    }
    return;
  }
}

function growState(need: usize): void {
  // values already read in this statement keep their bytes: the old arena is left as it is
  // (a statement reading more than the arena holds is rare), a new one takes its place
  let cap = stateCap * 2;
  while (cap < need + 8) cap *= 2;
  if (stateUsed == 0) heap.free(stateArena);
  stateArena = heap.alloc(cap);
  stateCap = cap;
  stateUsed = 0;
}

function pushOutput(kind: i32, index: i32, jsonStart: i32, jsonLen: i32): void {
  if (outputCount >= outputCap) {
    outputCap *= 2;
    outputs = heap.realloc(outputs, <usize>outputCap * OUTPUT_SIZE);
    store<u32>(counters, <u32>outputs, PTRS);
  }
  const p = outputs + (<usize>outputCount) * OUTPUT_SIZE;
  store<i32>(p, kind);
  store<i32>(p, index, 4);
  store<i32>(p, jsonStart, 8);
  store<i32>(p, jsonLen, 12);
  store<i32>(p, <i32>valueStart, 16);
  store<i32>(p, valueCount, 20);
  valueCount = 0;
  outputCount++;
  store<f64>(counters, load<f64>(counters, 24) + 1, 24);
  if (kind == OUT_RULE) {
    const l = logicCounters + (<usize>index) * LOGIC_COUNTERS_SIZE;
    store<f64>(l, load<f64>(l) + 1);
  }
}

export function emitFilter(statement: i32): void {
  pushOutput(OUT_FILTER, statement, -1, 0);
}

/** A logic entry fired; `mask` (0 for a fixed new_payload) selects the statements whose messages form the JSON. */
export function emitRule(logic: i32, mask: usize): void {
  if (mask == 0) {
    pushOutput(OUT_RULE, logic, -1, 0);
    return;
  }
  const start = appendBufferJson(mask);
  store<u32>(counters, <u32>outputJsonPtr(), PTRS + 4);
  pushOutput(OUT_RULE, logic, <i32>start, <i32>(outputJsonLength() - start));
}

/** A rule statement's result for the current message. */
export function ruleStatement(s: i32, satisfied: bool): void {
  if (!ruleTouched) {
    ruleTouched = true;
    beginTopic(topicPtr, topicLen);
  }
  ruleResult(s, satisfied);
}

/** After the targets: whether rule logic must run (a rule statement's topic matched). */
export function ruleLogicDue(): bool {
  if (timing) timingMark(-1);
  if (!ruleTouched) return false;
  commitTopic(payloadPtr, payloadLen);
  return true;
}

export function finishMessage(fired: bool): i32 {
  if (timing) timingEnd();
  if (fired) clearBuffer();
  store<f64>(counters, load<f64>(counters, 32) + missingCount, 32);
  store<f64>(counters, load<f64>(counters, 40) + kindCount, 40);
  store<f64>(counters, bufferFull, 56);
  store<f64>(counters, memTopics, 64);
  store<f64>(counters, memEvicted, 72);
  store<f64>(counters, memMerged, 80);
  resetUnknownCounts();
  return outputCount;
}


// Timing ------------------------------------------------------------------------------------
// One message in many (the host picks it) is timed: a clock read where each statement and
// logic entry starts and where the message ends. The others pay one load and branch per
// statement; nothing is allocated.

let timing = false;
let timingRecords: usize = 0;
let timingCount: i32 = 0;
let timingPart: i32 = -1;
let timingAt: f64 = 0;
let timingStart: f64 = 0;

function timingBegin(): void {
  store<u32>(counters, 0, TIMING);
  timing = true;
  timingCount = 0;
  timingPart = -1;
  timingStart = hostClock();
  timingAt = timingStart;
}

/** The part running until now ends; `next` (-1: none) starts. */
function timingMark(next: i32): void {
  const t = hostClock();
  if (timingPart >= 0 && timingCount <= statementTotal + logicEntries) {
    const r = timingRecords + (<usize>timingCount) * TIMING_SIZE;
    store<i32>(r, timingPart);
    store<f64>(r, t - timingAt, 8);
    timingCount++;
  }
  timingPart = next;
  timingAt = t;
}

function timingEnd(): void {
  timingMark(-1);
  timing = false;
  store<i32>(counters, timingCount, TIMING + 8);
  store<f64>(counters, timingAt - timingStart, TIMING + 12);
}

/** POST/DELETE empty the buffer: a fresh module does. PATCH restores entries through this. */
export function restoreEntry(tlen: i32, plen: i32, statement: i32): void {
  topicPtr = input;
  topicLen = <usize>tlen;
  beginTopic(input, <usize>tlen);
  ruleResult(statement, true);
  commitTopic(input + <usize>tlen, <usize>plen);
}

export function clearRuleBuffer(): void {
  clearBuffer();
}
