/**
 * The state store's writes as durable storage keeps them (EDB_STORAGE=durable): every SET,
 * DEL and VDEL that changed the table, with the exact arguments the table was given, so that
 * replaying them over the last snapshot rebuilds the same keys, versions and fencing tokens.
 *
 * Layout (little endian): u8 op (1 SET, 2 DEL, 3 VDEL), f64 now, u32 flags, f64 version wall,
 * u32 version counter, f64 expiresAt, u8 has fencing token [f64 wall, u32 counter, u16 node
 * length, node], u32 key length, key, u32 value length, value (SET value, VDEL match; else 0).
 */
import type { Hlc } from './hlc.js';

export const OP_SET = 1;
export const OP_DEL = 2;
export const OP_VDEL = 3;

export interface StateWrite {
  op: number;
  now: number;
  flags: number;
  version: { wall: number; counter: number };
  expiresAt: number;
  ft: Hlc | undefined;
  key: Uint8Array;
  value: Uint8Array | undefined;
}

export function encodeStateWrite(w: StateWrite): Buffer {
  const node = w.ft ? Buffer.from(w.ft.node, 'utf8') : undefined;
  const value = w.value ?? new Uint8Array(0);
  const b = Buffer.allocUnsafe(1 + 8 + 4 + 8 + 4 + 8 + 1 + (node ? 14 + node.length : 0) + 4 + w.key.length + 4 + value.length);
  let p = 0;
  b[p++] = w.op;
  b.writeDoubleLE(w.now, p);
  b.writeUInt32LE(w.flags >>> 0, p + 8);
  b.writeDoubleLE(w.version.wall, p + 12);
  b.writeUInt32LE(w.version.counter >>> 0, p + 20);
  b.writeDoubleLE(w.expiresAt, p + 24);
  p += 32;
  b[p++] = node ? 1 : 0;
  if (node && w.ft) {
    b.writeDoubleLE(w.ft.wall, p);
    b.writeUInt32LE(w.ft.counter >>> 0, p + 8);
    b.writeUInt16LE(node.length, p + 12);
    node.copy(b, p + 14);
    p += 14 + node.length;
  }
  b.writeUInt32LE(w.key.length, p);
  b.set(w.key, p + 4);
  p += 4 + w.key.length;
  b.writeUInt32LE(value.length, p);
  b.set(value, p + 4);
  return b;
}

/** Throws RangeError on a record that runs short. */
export function decodeStateWrite(b: Buffer): StateWrite {
  let p = 0;
  const op = b[p++]!;
  if (op < OP_SET || op > OP_VDEL) throw new RangeError(`state write: unknown op ${op}`);
  const now = b.readDoubleLE(p);
  const flags = b.readUInt32LE(p + 8);
  const version = { wall: b.readDoubleLE(p + 12), counter: b.readUInt32LE(p + 20) };
  const expiresAt = b.readDoubleLE(p + 24);
  p += 32;
  let ft: Hlc | undefined;
  if (b[p++] === 1) {
    const nodeLen = b.readUInt16LE(p + 12);
    ft = { wall: b.readDoubleLE(p), counter: b.readUInt32LE(p + 8), node: b.toString('utf8', p + 14, p + 14 + nodeLen) };
    p += 14 + nodeLen;
  }
  const keyLen = b.readUInt32LE(p);
  const key = b.subarray(p + 4, p + 4 + keyLen);
  p += 4 + keyLen;
  const valLen = b.readUInt32LE(p);
  if (p + 4 + valLen !== b.length) throw new RangeError('state write: length mismatch');
  const value = op === OP_DEL ? undefined : b.subarray(p + 4, p + 4 + valLen);
  return { op, now, flags, version, expiresAt, ft, key, value };
}
