/**
 * The state store's table: the WebAssembly hash table (assembly/state/table.ts) behind a
 * small interface, and a plain `Map` implementation of the same interface that serves as
 * the reference in the conformance suite and the benchmark.
 *
 * Keys, values and fencing tokens cross into Wasm by copying into its IO region; answers
 * come back the same way (META for the numbers, IO for the bytes). No GC objects cross.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as codes from '../../assembly/state/codes.js';
import { compareHlc, type Hlc } from './hlc.js';

export { codes };

/** The fields of the entry the last call described (see each method). Reused: copy what you keep. */
export interface EntryInfo {
  versionWall: number;
  versionCounter: number;
  /** ms since epoch, 0 = never. */
  expiresAt: number;
  /** The last call found the key expired and removed it (the service sends a DELETE notification). */
  expired: boolean;
}

export interface TableStats {
  keys: number;
  /** Sum of key and value lengths: what the max-bytes quota counts. */
  dataBytes: number;
  /** Keys with an expiry. */
  expiring: number;
  /** Wasm only: bytes in entry blocks, slot arrays, free lists, and the linear memory's size. */
  entryBytes?: number;
  slotBytes?: number;
  freeBytes?: number;
  memoryBytes?: number;
  capacity?: number;
}

export interface StateTable {
  readonly kind: 'wasm' | 'map';
  readonly last: EntryInfo;
  readonly size: number;
  /** Quotas; checked on SET (not on restore). */
  setLimits(maxKeys: number, maxBytes: number): void;
  /** The value (a copy) or undefined; on a hit `last` describes the entry. */
  get(key: Uint8Array, now: number): Buffer | undefined;
  /**
   * codes.RESULT_OK when stored, RESULT_NONE when NX/NEX did not hold (`last` describes the
   * entry there), or ERR_FENCING_REQUIRED / ERR_FENCING_STALE / ERR_QUOTA / ERR_NO_MEMORY.
   * flags: codes.SET_NX | codes.SET_NEX.
   */
  set(key: Uint8Array, value: Uint8Array, flags: number, versionWall: number, versionCounter: number, expiresAt: number, fencingToken: Hlc | undefined, now: number): number;
  /**
   * DEL (value undefined) or VDEL. RESULT_OK deleted (`last` describes the deleted entry),
   * RESULT_NONE absent, RESULT_MISMATCH VDEL of another value, or a fencing error.
   */
  delete(key: Uint8Array, value: Uint8Array | undefined, fencingToken: Hlc | undefined, now: number): number;
  /**
   * Remove up to `maxExpired` expired keys, looking at a bounded number of entries per
   * call; `onExpired` gets each removed key. Returns the number removed.
   */
  sweep(now: number, maxExpired: number, onExpired: (key: Buffer) => void): number;
  /** Snapshot records (codes.ts RECORD_HEADER format) of every live entry. */
  exportRecords(now: number): Buffer[];
  /** Load snapshot records (no quota check). Returns the entries loaded; throws on a bad record. */
  importRecords(records: Buffer, now: number): number;
  /** Idle-time work (finishing a table resize). */
  maintain(): void;
  /** Empty the table; `expectedKeys` sizes it for a bulk import. */
  clear(expectedKeys?: number): void;
  stats(): TableStats;
}

// ---------------------------------------------------------------- Wasm

// The project's `lib` has no DOM, so the few WebAssembly types used here are declared locally.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

interface TableExports {
  memory: WasmMemory;
  stateInit(initialKeys: number): number;
  stateMeta(): number;
  stateIo(): number;
  stateIoCapacity(): number;
  stateIoReserve(n: number): number;
  stateSetLimits(keys: number, bytes: number): void;
  stateGet(keyLen: number, now: number): number;
  stateSet(keyLen: number, valLen: number, flags: number, verWall: number, verCounter: number, expiresAt: number, ftWall: number, ftCounter: number, ftNodeLen: number, now: number): number;
  stateDelete(keyLen: number, valLen: number, flags: number, ftWall: number, ftCounter: number, ftNodeLen: number, now: number): number;
  stateSweep(now: number, budget: number): number;
  stateFirst(): number;
  stateExport(cursor: number, now: number): number;
  stateImport(len: number, now: number): number;
  stateMaintain(budget: number): number;
  stateCount(): number;
  stateExpiring(): number;
  stateDataBytes(): number;
  stateEntryBytes(): number;
  stateSlotBytes(): number;
  stateFreeBytes(): number;
  stateArenaBytes(): number;
  stateMemoryBytes(): number;
  stateCapacity(): number;
  stateMigrating(): number;
}

let compiled: object | undefined;

/** build/edb.wasm, next to dist/ when installed, next to src/ when run from source. */
function wasmModule(): object {
  if (compiled) return compiled;
  const candidates = ['../../../build/edb.wasm', '../../build/edb.wasm'];
  let lastError: unknown;
  for (const rel of candidates) {
    try {
      compiled = new wasm.Module(readFileSync(fileURLToPath(new URL(rel, import.meta.url))));
      return compiled;
    } catch (err) {
      lastError = err;
    }
  }
  throw new Error(`cannot load build/edb.wasm (run \`npm run build:wasm\`): ${(lastError as Error).message}`);
}

/** Blocks the sweep looks at per call into Wasm. */
const SWEEP_BUDGET = 4096;

export class WasmStateTable implements StateTable {
  readonly kind = 'wasm' as const;
  readonly last: EntryInfo = { versionWall: 0, versionCounter: 0, expiresAt: 0, expired: false };
  private readonly x: TableExports;
  private readonly meta: number;
  private bytes!: Buffer;
  private view!: DataView;
  private io = 0;
  private ioCap = 0;

  constructor(initialKeys = 1024) {
    // One instance per table: the table owns the instance's linear memory.
    this.x = new wasm.Instance(wasmModule(), {}).exports as unknown as TableExports;
    if (this.x.stateInit(initialKeys) !== codes.RESULT_OK) throw new Error('state table: out of memory');
    this.meta = this.x.stateMeta();
    this.refresh();
  }

  /** Re-read the memory views (after growth) and the IO region's place (after it moved). */
  private refresh(): void {
    const buffer = this.x.memory.buffer;
    if (this.bytes === undefined || this.bytes.buffer !== buffer) {
      this.bytes = Buffer.from(buffer);
      this.view = new DataView(buffer);
    }
    this.io = this.view.getUint32(this.meta + codes.META_IO_PTR, true);
    this.ioCap = this.view.getUint32(this.meta + codes.META_IO_CAP, true);
  }

  /** Make sure IO holds n bytes and the views are current. */
  private reserve(n: number): void {
    if (this.bytes.buffer !== this.x.memory.buffer) this.refresh();
    if (n <= this.ioCap) return;
    if (this.x.stateIoReserve(n) === 0) throw new Error('state table: out of memory');
    this.refresh();
  }

  private readLast(): void {
    const v = this.view;
    const m = this.meta;
    const last = this.last;
    last.versionWall = v.getFloat64(m + codes.META_VER_WALL, true);
    last.versionCounter = v.getUint32(m + codes.META_VER_COUNTER, true);
    last.expiresAt = v.getFloat64(m + codes.META_EXPIRES_AT, true);
  }

  private readFlags(): void {
    if (this.bytes.buffer !== this.x.memory.buffer) this.refresh();
    this.last.expired = (this.view.getUint32(this.meta + codes.META_FLAGS, true) & codes.META_EXPIRED) !== 0;
  }

  get size(): number {
    return this.x.stateCount();
  }

  setLimits(maxKeys: number, maxBytes: number): void {
    this.x.stateSetLimits(Math.min(maxKeys, 0xffffffff) >>> 0, maxBytes);
  }

  get(key: Uint8Array, now: number): Buffer | undefined {
    this.reserve(key.length);
    this.bytes.set(key, this.io);
    const r = this.x.stateGet(key.length, now);
    this.readFlags();
    if (r !== codes.RESULT_OK) {
      if (r === codes.ERR_NO_MEMORY) throw new Error('state table: out of memory');
      return undefined;
    }
    this.refresh();
    this.readLast();
    const len = this.view.getUint32(this.meta + codes.META_VAL_LEN, true);
    return Buffer.from(this.bytes.subarray(this.io, this.io + len));
  }

  /** Copy key | value | token node into IO; returns the node's byte length. */
  private stage(key: Uint8Array, value: Uint8Array | undefined, node: string | undefined): number {
    const vlen = value ? value.length : 0;
    const nodeLen = node === undefined ? 0 : Buffer.byteLength(node, 'utf8');
    this.reserve(key.length + vlen + nodeLen);
    const b = this.bytes;
    let p = this.io;
    b.set(key, p);
    p += key.length;
    if (value) {
      b.set(value, p);
      p += vlen;
    }
    if (node !== undefined && nodeLen > 0) b.write(node, p, nodeLen, 'utf8');
    return nodeLen;
  }

  set(key: Uint8Array, value: Uint8Array, flags: number, versionWall: number, versionCounter: number, expiresAt: number, ft: Hlc | undefined, now: number): number {
    const nodeLen = this.stage(key, value, ft?.node);
    const r = this.x.stateSet(
      key.length, value.length, ft ? flags | codes.FLAG_FENCING : flags, versionWall, versionCounter, expiresAt,
      ft ? ft.wall : 0, ft ? ft.counter : 0, nodeLen, now,
    );
    this.readFlags();
    if (r === codes.RESULT_NONE) this.readLast();
    return r;
  }

  delete(key: Uint8Array, value: Uint8Array | undefined, ft: Hlc | undefined, now: number): number {
    const nodeLen = this.stage(key, value, ft?.node);
    let flags = value ? codes.DEL_VALUE : 0;
    if (ft) flags |= codes.FLAG_FENCING;
    const r = this.x.stateDelete(key.length, value ? value.length : 0, flags, ft ? ft.wall : 0, ft ? ft.counter : 0, nodeLen, now);
    this.readFlags();
    if (r === codes.RESULT_OK || r === codes.RESULT_MISMATCH) this.readLast();
    return r;
  }

  sweep(now: number, maxExpired: number, onExpired: (key: Buffer) => void): number {
    let removed = 0;
    while (removed < maxExpired) {
      const r = this.x.stateSweep(now, SWEEP_BUDGET);
      if (r !== codes.SWEEP_FOUND) break;
      this.refresh();
      const len = this.view.getUint32(this.meta + codes.META_KEY_LEN, true);
      const key = Buffer.from(this.bytes.subarray(this.io, this.io + len));
      this.readLast();
      removed++;
      onExpired(key);
    }
    return removed;
  }

  exportRecords(now: number): Buffer[] {
    const chunks: Buffer[] = [];
    let cursor = this.x.stateFirst();
    while (cursor !== 0) {
      cursor = this.x.stateExport(cursor, now);
      this.refresh();
      const written = this.view.getUint32(this.meta + codes.META_WRITTEN, true);
      if (written > 0) chunks.push(Buffer.from(this.bytes.subarray(this.io, this.io + written)));
    }
    return chunks;
  }

  importRecords(records: Buffer, now: number): number {
    let loaded = 0;
    let start = 0;
    while (start < records.length) {
      // take whole records up to the IO region's size (at least one)
      let end = start;
      const limit = Math.max(this.ioCap, 1 << 20);
      while (end < records.length) {
        const len = recordLength(records, end);
        if (end > start && end + len - start > limit) break;
        end += len;
      }
      this.reserve(end - start);
      this.bytes.set(records.subarray(start, end), this.io);
      const r = this.x.stateImport(end - start, now);
      if (r === codes.ERR_CORRUPT) throw new Error('state snapshot: malformed record');
      if (r === codes.ERR_NO_MEMORY) throw new Error('state table: out of memory');
      loaded += r;
      start = end;
    }
    return loaded;
  }

  maintain(): void {
    this.x.stateMaintain(65536);
  }

  clear(expectedKeys = 1024): void {
    if (this.x.stateInit(Math.min(expectedKeys, 0x3fffffff)) !== codes.RESULT_OK) throw new Error('state table: out of memory');
    this.refresh();
  }

  stats(): TableStats {
    return {
      keys: this.x.stateCount(),
      dataBytes: this.x.stateDataBytes(),
      expiring: this.x.stateExpiring(),
      entryBytes: this.x.stateEntryBytes(),
      slotBytes: this.x.stateSlotBytes(),
      freeBytes: this.x.stateFreeBytes(),
      memoryBytes: this.x.stateMemoryBytes(),
      capacity: this.x.stateCapacity(),
    };
  }
}

/** Length of the snapshot record at `pos`; throws when it runs past the end. */
export function recordLength(records: Buffer, pos: number): number {
  if (pos + codes.RECORD_HEADER > records.length) throw new Error('state snapshot: truncated record');
  const keyLen = records.readUInt32LE(pos);
  const valLen = records.readUInt32LE(pos + 4);
  const ftLen = records.readUInt32LE(pos + 20);
  const len = codes.RECORD_HEADER + keyLen + valLen + ftLen;
  if (pos + len > records.length) throw new Error('state snapshot: truncated record');
  return len;
}

// ---------------------------------------------------------------- Map reference

interface MapEntry {
  value: Buffer;
  versionWall: number;
  versionCounter: number;
  expiresAt: number;
  ft: Hlc | undefined;
}

/** Keys as latin1 strings (one char per byte), so binary keys round-trip exactly. */
function mapKey(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}

export class MapStateTable implements StateTable {
  readonly kind = 'map' as const;
  readonly last: EntryInfo = { versionWall: 0, versionCounter: 0, expiresAt: 0, expired: false };
  private readonly map = new Map<string, MapEntry>();
  private maxKeys = Infinity;
  private maxBytes = Infinity;
  private dataBytes = 0;
  private expiring = 0;

  get size(): number {
    return this.map.size;
  }

  setLimits(maxKeys: number, maxBytes: number): void {
    this.maxKeys = maxKeys;
    this.maxBytes = maxBytes;
  }

  private describe(e: MapEntry): void {
    this.last.versionWall = e.versionWall;
    this.last.versionCounter = e.versionCounter;
    this.last.expiresAt = e.expiresAt;
  }

  private remove(k: string, e: MapEntry): void {
    this.map.delete(k);
    this.dataBytes -= k.length + e.value.length;
    if (e.expiresAt !== 0) this.expiring--;
  }

  /** The live entry, removing it first when it has expired. */
  private live(k: string, now: number): MapEntry | undefined {
    this.last.expired = false;
    const e = this.map.get(k);
    if (e && e.expiresAt !== 0 && e.expiresAt <= now) {
      this.remove(k, e);
      this.last.expired = true;
      return undefined;
    }
    return e;
  }

  get(key: Uint8Array, now: number): Buffer | undefined {
    const e = this.live(mapKey(key), now);
    if (!e) return undefined;
    this.describe(e);
    return Buffer.from(e.value);
  }

  set(key: Uint8Array, value: Uint8Array, flags: number, versionWall: number, versionCounter: number, expiresAt: number, ft: Hlc | undefined, now: number): number {
    const k = mapKey(key);
    const e = this.live(k, now);
    if (e) {
      if (e.ft) {
        if (!ft) return codes.ERR_FENCING_REQUIRED;
        if (compareHlc(ft, e.ft) < 0) return codes.ERR_FENCING_STALE;
      }
      if ((flags & codes.SET_NX) !== 0 || ((flags & codes.SET_NEX) !== 0 && !e.value.equals(value))) {
        this.describe(e);
        return codes.RESULT_NONE;
      }
      if (this.dataBytes - e.value.length + value.length > this.maxBytes) return codes.ERR_QUOTA;
      this.remove(k, e);
    } else if (this.map.size >= this.maxKeys || this.dataBytes + k.length + value.length > this.maxBytes) {
      return codes.ERR_QUOTA;
    }
    const stored: MapEntry = { value: Buffer.from(value), versionWall, versionCounter, expiresAt, ft: ft ? { ...ft } : undefined };
    this.map.set(k, stored);
    this.dataBytes += k.length + value.length;
    if (expiresAt !== 0) this.expiring++;
    return codes.RESULT_OK;
  }

  delete(key: Uint8Array, value: Uint8Array | undefined, ft: Hlc | undefined, now: number): number {
    const k = mapKey(key);
    const e = this.live(k, now);
    if (!e) return codes.RESULT_NONE;
    if (e.ft) {
      if (!ft) return codes.ERR_FENCING_REQUIRED;
      if (compareHlc(ft, e.ft) < 0) return codes.ERR_FENCING_STALE;
    }
    this.describe(e);
    if (value && !e.value.equals(value)) return codes.RESULT_MISMATCH;
    this.remove(k, e);
    return codes.RESULT_OK;
  }

  sweep(now: number, maxExpired: number, onExpired: (key: Buffer) => void): number {
    if (this.expiring === 0) return 0;
    let removed = 0;
    for (const [k, e] of this.map) {
      if (removed >= maxExpired) break;
      if (e.expiresAt !== 0 && e.expiresAt <= now) {
        this.describe(e);
        this.remove(k, e);
        removed++;
        onExpired(Buffer.from(k, 'latin1'));
      }
    }
    return removed;
  }

  exportRecords(now: number): Buffer[] {
    const chunks: Buffer[] = [];
    for (const [k, e] of this.map) {
      if (e.expiresAt !== 0 && e.expiresAt <= now) continue;
      const node = e.ft ? Buffer.from(e.ft.node, 'utf8') : undefined;
      const ftLen = node ? 12 + node.length : 0;
      const rec = Buffer.alloc(codes.RECORD_HEADER + k.length + e.value.length + ftLen);
      rec.writeUInt32LE(k.length, 0);
      rec.writeUInt32LE(e.value.length, 4);
      rec.writeDoubleLE(e.versionWall, 8);
      rec.writeUInt32LE(e.versionCounter, 16);
      rec.writeUInt32LE(ftLen, 20);
      rec.writeDoubleLE(e.expiresAt, 24);
      let p = codes.RECORD_HEADER + rec.write(k, codes.RECORD_HEADER, 'latin1');
      p += e.value.copy(rec, p);
      if (node && e.ft) {
        rec.writeDoubleLE(e.ft.wall, p);
        rec.writeUInt32LE(e.ft.counter, p + 8);
        node.copy(rec, p + 12);
      }
      chunks.push(rec);
    }
    return chunks;
  }

  importRecords(records: Buffer, now: number): number {
    let pos = 0;
    let loaded = 0;
    while (pos < records.length) {
      const len = recordLength(records, pos);
      const keyLen = records.readUInt32LE(pos);
      const valLen = records.readUInt32LE(pos + 4);
      const ftLen = records.readUInt32LE(pos + 20);
      if (keyLen === 0 || (ftLen !== 0 && ftLen < 12)) throw new Error('state snapshot: malformed record');
      const expiresAt = records.readDoubleLE(pos + 24);
      if (!(expiresAt !== 0 && expiresAt <= now)) {
        const k = records.toString('latin1', pos + codes.RECORD_HEADER, pos + codes.RECORD_HEADER + keyLen);
        const v0 = pos + codes.RECORD_HEADER + keyLen;
        const t = v0 + valLen;
        const old = this.map.get(k);
        if (old) this.remove(k, old);
        this.map.set(k, {
          value: Buffer.from(records.subarray(v0, t)),
          versionWall: records.readDoubleLE(pos + 8),
          versionCounter: records.readUInt32LE(pos + 16),
          expiresAt,
          ft: ftLen ? { wall: records.readDoubleLE(t), counter: records.readUInt32LE(t + 8), node: records.toString('utf8', t + 12, t + ftLen) } : undefined,
        });
        this.dataBytes += keyLen + valLen;
        if (expiresAt !== 0) this.expiring++;
        loaded++;
      }
      pos += len;
    }
    return loaded;
  }

  maintain(): void {}

  clear(_expectedKeys?: number): void {
    this.map.clear();
    this.dataBytes = 0;
    this.expiring = 0;
  }

  stats(): TableStats {
    return { keys: this.map.size, dataBytes: this.dataBytes, expiring: this.expiring };
  }
}

export function createStateTable(kind: 'wasm' | 'map' = 'wasm', initialKeys?: number): StateTable {
  return kind === 'wasm' ? new WasmStateTable(initialKeys) : new MapStateTable();
}
