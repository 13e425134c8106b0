// The one place that defines the numbers of the rules module's byte layouts that cross the
// JS/Wasm boundary: the tables blob the code generator writes (src/rules/codegen.ts) and the
// module reads (engine.ts, json.ts, edges.ts), and the regions the host reads and writes
// (src/rules/runtime.ts): output records, template values, counters, timing records, the
// statements' memory and the rule buffer.
//
// Plain TypeScript that AssemblyScript also compiles (as assembly/state/codes.ts is for the
// state store): both sides import these constants, so they cannot disagree on an offset.
// The field-by-field descriptions stay at the top of the file that owns each structure
// (engine.ts: blob, records, counters; json.ts: key nodes; memory.ts: records and cells;
// buffer.ts: entries); this file holds their sizes and positions.

// Tables blob: u32 words, offsets relative to the blob ----------------------------------------

/** "FRT3" (logic entries carry templates). */
export const TABLES_MAGIC = 0x33545246;
export const HEADER_WORDS = 20;
// header word indices
export const H_MAGIC = 0;
export const H_TARGETS = 1;
export const H_FILTER_TARGETS = 2;
export const H_TOPIC_NODES = 3;
export const H_TOPIC_NODE_AT = 4;
export const H_TOPIC_EDGE_AT = 5;
export const H_TARGET_LIST_AT = 6;
export const H_KEY_NODES = 7;
export const H_KEY_NODE_AT = 8;
export const H_KEY_EDGE_AT = 9;
export const H_STRINGS_AT = 10;
export const H_SLOTS = 11;
export const H_TARGET_TABLE_AT = 12;
export const H_STATEMENTS = 13;
export const H_STATEMENT_TABLE_AT = 14;
export const H_FILTER_STATEMENTS = 15;
export const H_LOGIC_ENTRIES = 16;
export const H_LOGIC_TABLE_AT = 17;
export const H_MASK_WORDS = 18;

/** Topic node: 8 u32 (edgeStart, edgeCount, `+` child, `#` child, first target, targets, hash table, mask). */
export const TOPIC_NODE_SIZE = 32;
/** Word of a topic node holding the byte offset of its level hash table (0: none). */
export const TOPIC_NODE_TABLE_WORD = 6;
/** Topic and key edges: level/key offset in the string pool, length, child. */
export const EDGE_SIZE = 12;
/** Key node: edgeStart, edgeCount, slot, slotLo, slotHi, lengthMask. */
export const KEY_NODE_SIZE = 24;
/** Target: is a filter, first statement, statements. */
export const TARGET_SIZE = 12;
/** Statement: shape, offset of its parameters. */
export const STATEMENT_SIZE = 8;
/** Logic entry: shape, parameters, mask (-1: fixed payload), template function (-1: none), template parameters. */
export const LOGIC_SIZE = 20;
/** Parameter cells: an i32 slot / statement index or an f64 constant each. */
export const PARAM_SIZE = 8;

// Regions the host reads ---------------------------------------------------------------------

/** Output record kinds. */
export const OUT_FILTER = 1;
export const OUT_RULE = 2;
/** Output record: kind, index, JSON start, JSON length, first template value, template values. */
export const OUTPUT_SIZE = 24;
/** Template value: kind (V_*), string length, f64 number / boolean; a string's bytes follow, padded to 8. */
export const VALUE_SIZE = 16;

/** Engine counters: f64 each (messages, topic matches, evaluations, fires, ...). */
export const COUNTERS = 11;
/** After the counters: u32 addresses of the output records, output JSON and template values. */
export const PTRS = 88;
/** Then the timing flag (u32), records address (u32), record count (i32), message time (f64 ms). */
export const TIMING = 100;
/** Then a u32 the module sets: 1 when the last message matched rule statements that its mode skipped. */
export const RULES_SKIPPED = 120;
export const COUNTERS_SIZE = 128;
/**
 * What `process` runs of a message (its `mode` argument, bits): the filter statements, the
 * rule statements and logic. A cluster node that does not hold the cluster's rule buffer runs
 * the filters only; the holder runs only the rules for a message that arrived on another node.
 */
export const RUN_FILTERS = 1;
export const RUN_RULES = 2;
export const RUN_ALL = 3;
/** Timing record: i32 part (statement, or statements + logic entry), f64 ms at +8. */
export const TIMING_SIZE = 16;
/** Per statement: f64 evaluations, true, unknown; then per logic entry: f64 fires. */
export const STATEMENT_COUNTERS_SIZE = 24;
export const LOGIC_COUNTERS_SIZE = 8;

/** Value kinds (registers, memory value cells, template values). */
export const V_UNKNOWN = 0;
export const V_NULL = 1;
export const V_BOOL = 2;
export const V_NUMBER = 3;
export const V_STRING = 4;

/** Statements' memory: a record header, then 32-byte cells; window buckets of 56 bytes, 65 per window. */
export const REC_HEADER = 32;
export const CELL_SIZE = 32;
export const BUCKET_SIZE = 56;
export const BUCKET_CAP = 65;

/** Rule buffer entry header (then the statement bits, then the topic bytes). */
export const ENTRY_HEADER = 32;
