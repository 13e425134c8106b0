// The one place that defines the state table's result and error codes.
//
// Plain TypeScript that AssemblyScript also compiles: the Wasm table (assembly/state/table.ts)
// and the JavaScript side (src/state/table.ts, src/state/service.ts) import these same
// constants, so the two can never disagree on a number.

/** GET hit, SET applied, DEL/VDEL deleted. */
export const RESULT_OK = 1;
/** GET miss, SET not applied (NX/NEX), DEL/VDEL of an absent key. */
export const RESULT_NONE = 0;
/** VDEL of a key that holds a different value. */
export const RESULT_MISMATCH = -1;
/** A write to a key protected by a fencing token, without a token. */
export const ERR_FENCING_REQUIRED = -10;
/** A write whose fencing token is older than the one protecting the key. */
export const ERR_FENCING_STALE = -11;
/** max keys or max bytes would be exceeded. */
export const ERR_QUOTA = -12;
/** Linear memory could not grow. */
export const ERR_NO_MEMORY = -13;
/** A snapshot record that does not parse. */
export const ERR_CORRUPT = -14;

/** SET flags. */
export const SET_NX = 1;
export const SET_NEX = 2;
/** The request carries a fencing token (in the IO region after the value). */
export const FLAG_FENCING = 4;
/** DEL flag: VDEL (the value to compare is in the IO region after the key). */
export const DEL_VALUE = 1;

/** Bits of the META flags word. */
export const META_EXPIRED = 1;

/** Sweep results. */
export const SWEEP_FOUND = 1;
export const SWEEP_BUDGET = 0;
export const SWEEP_END = -1;

/**
 * Byte offsets in the META region (written by every call that reports an entry).
 * f64 fields first, then u32 fields.
 */
export const META_VER_WALL = 0;
export const META_EXPIRES_AT = 8;
export const META_FT_WALL = 16;
export const META_VER_COUNTER = 24;
export const META_FT_COUNTER = 28;
export const META_KEY_LEN = 32;
export const META_VAL_LEN = 36;
/** Length of the fencing token's node id in the IO region, or NO_FENCING_TOKEN. */
export const META_FT_NODE_LEN = 40;
export const META_IO_PTR = 44;
export const META_FLAGS = 48;
/** Bytes written by an export call. */
export const META_WRITTEN = 52;
/** Capacity of the IO region (with META_IO_PTR, updated whenever the region moves). */
export const META_IO_CAP = 56;
export const META_SIZE = 64;

export const NO_FENCING_TOKEN = 0xffffffff;

/**
 * Snapshot record (the `state` backup section and stateExport/stateImport), little endian:
 *   0  u32 keyLen
 *   4  u32 valLen
 *   8  f64 version wall clock (ms)
 *  16  u32 version counter
 *  20  u32 ftLen: 0 = no fencing token, else 12 + node id length
 *  24  f64 expiresAt (ms since epoch, 0 = never)
 *  32  key bytes, value bytes, then if ftLen > 0: f64 ft wall, u32 ft counter, node id bytes
 */
export const RECORD_HEADER = 32;
