/**
 * Backup snapshots: one file made of named sections, each owned by a part of the broker
 * (the state store, retained messages, sessions, the rule buffer) that registers a
 * SnapshotSection. The file is written atomically (temp file, fsync, rename, fsync of the
 * folder) and carries a checksum; a file that fails either is never half-applied.
 *
 * File format (little endian):
 *
 *   0   8 bytes  magic "EDBSNAP\0"
 *   8   u32      format version (1)
 *   12  u32      checksum algorithm (1 = CRC-32 of zlib)
 *   16  f64      created at (ms since epoch)
 *   24  u32      section count
 *   28  sections, each: u16 name length, name (UTF-8), u32 reserved (0), f64 data length, data
 *   end u32      checksum of every byte before it
 */
import { readFile, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as zlib from 'node:zlib';
import { writeFileAtomic } from './atomic-file.js';

export interface SnapshotSection {
  /** Unique name, e.g. "state", "retained", "sessions", "rules". */
  readonly name: string;
  save(): Buffer | Promise<Buffer>;
  /** Apply a saved section. Throw when it does not parse; `reset` then undoes every section. */
  restore(data: Buffer): void | Promise<void>;
  /** Back to empty, after a restore failed part-way (optional). */
  reset?(): void | Promise<void>;
}

export class SnapshotError extends Error {
  readonly code = 'EDB_SNAPSHOT_INVALID';
}

const MAGIC = Buffer.from('EDBSNAP\0', 'latin1');
const FORMAT_VERSION = 1;
const CHECKSUM_CRC32 = 1;
const HEADER = 28;

// zlib.crc32 exists from Node 20.15 / 22.2; older Node 20 releases get a table-driven one.
const zlibCrc32 = (zlib as unknown as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
let crcTable: Uint32Array | undefined;
export function crc32(data: Uint8Array, value = 0): number {
  if (zlibCrc32) return zlibCrc32(data, value);
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = ~value >>> 0;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** Slicing-by-4 tables for crc32Range (built on first use). */
let crcTable4: Int32Array | undefined;

function table4(): Int32Array {
  const t = new Int32Array(1024);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n]!;
    for (let k = 1; k < 4; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
}

/** Spans up to this long are summed in JS by crc32Range; longer ones by zlib. */
const SHORT_SPAN = 192;

/**
 * CRC-32 of `b[start, end)`, the same as crc32(b.subarray(start, end)) >>> 0. A short span (a log
 * record of a small message) is summed here without making a view of it: the view and the call
 * into zlib cost about 400 ns, a 110-byte span summed in JS 130-200 ns (and no garbage).
 */
export function crc32Range(b: Uint8Array, start: number, end: number): number {
  if (end - start > SHORT_SPAN) return crc32(b.subarray(start, end)) >>> 0;
  const t = (crcTable4 ??= table4());
  let c = -1;
  let i = start;
  for (; i + 4 <= end; i += 4) {
    c ^= b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);
    c = t[768 + (c & 0xff)]! ^ t[512 + ((c >>> 8) & 0xff)]! ^ t[256 + ((c >>> 16) & 0xff)]! ^ t[c >>> 24]!;
  }
  for (; i < end; i++) c = t[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** Write sections to `file` atomically. Returns the bytes written. */
export async function writeSnapshot(file: string, sections: readonly { name: string; data: Buffer }[], createdAt = Date.now()): Promise<number> {
  await mkdir(dirname(file), { recursive: true });
  const head = Buffer.alloc(HEADER);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(FORMAT_VERSION, 8);
  head.writeUInt32LE(CHECKSUM_CRC32, 12);
  head.writeDoubleLE(createdAt, 16);
  head.writeUInt32LE(sections.length, 24);
  const parts: Buffer[] = [head];
  for (const s of sections) {
    const name = Buffer.from(s.name, 'utf8');
    if (name.length === 0 || name.length > 255) throw new SnapshotError(`snapshot section name "${s.name}" must be 1-255 bytes`);
    const h = Buffer.alloc(2 + name.length + 4 + 8);
    h.writeUInt16LE(name.length, 0);
    name.copy(h, 2);
    h.writeUInt32LE(0, 2 + name.length);
    h.writeDoubleLE(s.data.length, 6 + name.length);
    parts.push(h, s.data);
  }
  let crc = 0;
  let total = 0;
  for (const p of parts) {
    crc = crc32(p, crc);
    total += p.length;
  }
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(crc >>> 0, 0);
  parts.push(tail);
  total += 4;
  // the sections are already captured in buffers, so writing need not block the broker
  await writeFileAtomic(file, parts);
  return total;
}

/** Parse and verify a snapshot. Throws SnapshotError when it is corrupt or truncated. */
export function parseSnapshot(buf: Buffer): { createdAt: number; sections: Map<string, Buffer> } {
  if (buf.length < HEADER + 4 || !buf.subarray(0, 8).equals(MAGIC)) throw new SnapshotError('not a snapshot file (bad magic)');
  const version = buf.readUInt32LE(8);
  if (version !== FORMAT_VERSION) throw new SnapshotError(`unsupported snapshot format version ${version}`);
  if (buf.readUInt32LE(12) !== CHECKSUM_CRC32) throw new SnapshotError('unsupported checksum algorithm');
  const body = buf.subarray(0, buf.length - 4);
  const expected = buf.readUInt32LE(buf.length - 4);
  if ((crc32(body) >>> 0) !== expected) throw new SnapshotError('checksum mismatch');
  const createdAt = buf.readDoubleLE(16);
  const count = buf.readUInt32LE(24);
  const sections = new Map<string, Buffer>();
  let pos = HEADER;
  for (let i = 0; i < count; i++) {
    if (pos + 2 > body.length) throw new SnapshotError('truncated section header');
    const nameLen = body.readUInt16LE(pos);
    if (pos + 2 + nameLen + 12 > body.length) throw new SnapshotError('truncated section header');
    const name = body.toString('utf8', pos + 2, pos + 2 + nameLen);
    const len = body.readDoubleLE(pos + 6 + nameLen);
    const start = pos + 14 + nameLen;
    if (!Number.isSafeInteger(len) || len < 0 || start + len > body.length) throw new SnapshotError(`section "${name}" runs past the end`);
    if (sections.has(name)) throw new SnapshotError(`section "${name}" appears twice`);
    sections.set(name, body.subarray(start, start + len));
    pos = start + len;
  }
  if (pos !== body.length) throw new SnapshotError('trailing bytes after the last section');
  return { createdAt, sections };
}

export async function readSnapshot(file: string): Promise<{ createdAt: number; sections: Map<string, Buffer> }> {
  return parseSnapshot(await readFile(file));
}

export async function removeFile(file: string): Promise<void> {
  await rm(file, { force: true });
}
