/**
 * The RESP3 subset of the state-store protocol: requests are arrays of bulk strings,
 * answers are simple strings, integers, bulk strings, null bulk strings and errors.
 * Decoding never throws: a malformed payload is reported, and answered `-ERR syntax error`.
 */

const CR = 0x0d;
const LF = 0x0a;
/** Elements and bulk lengths above these are refused rather than trusted. */
const MAX_ELEMENTS = 1024;
const MAX_BULK = 512 * 1024 * 1024;

/** Parse `<digits>\r\n` at `pos` (optionally `-1`); returns [value, next] or undefined. */
function readNumberLine(buf: Buffer, pos: number, allowMinusOne: boolean): [number, number] | undefined {
  let value = 0;
  let digits = 0;
  let i = pos;
  if (allowMinusOne && buf[i] === 0x2d) {
    if (buf[i + 1] === 0x31 && buf[i + 2] === CR && buf[i + 3] === LF) return [-1, i + 4];
    return undefined;
  }
  while (i < buf.length) {
    const c = buf[i]!;
    if (c >= 0x30 && c <= 0x39) {
      value = value * 10 + (c - 0x30);
      digits++;
      if (digits > 10) return undefined;
      i++;
      continue;
    }
    break;
  }
  if (digits === 0 || buf[i] !== CR || buf[i + 1] !== LF) return undefined;
  return [value, i + 2];
}

/**
 * Decode a request: `*<n>\r\n` then n times `$<len>\r\n<bytes>\r\n`, nothing after.
 * Elements are views into `payload` (no copy). Returns undefined when malformed.
 */
export function decodeRequest(payload: Buffer): Buffer[] | undefined {
  if (payload.length < 4 || payload[0] !== 0x2a /* * */) return undefined;
  const head = readNumberLine(payload, 1, false);
  if (!head) return undefined;
  const [n, start] = head;
  if (n < 1 || n > MAX_ELEMENTS) return undefined;
  const parts: Buffer[] = [];
  let pos = start;
  for (let k = 0; k < n; k++) {
    if (payload[pos] !== 0x24 /* $ */) return undefined;
    const len = readNumberLine(payload, pos + 1, false);
    if (!len) return undefined;
    const [size, dataStart] = len;
    if (size > MAX_BULK) return undefined;
    const end = dataStart + size;
    if (end + 2 > payload.length || payload[end] !== CR || payload[end + 1] !== LF) return undefined;
    parts.push(payload.subarray(dataStart, end));
    pos = end + 2;
  }
  return pos === payload.length ? parts : undefined;
}

/** Encode a request (client side): an array of bulk strings. */
export function encodeRequest(parts: readonly (Buffer | string)[]): Buffer {
  const bufs = parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p));
  let size = 3 + String(bufs.length).length;
  for (const b of bufs) size += 5 + String(b.length).length + b.length;
  const out = Buffer.allocUnsafe(size);
  let pos = out.write(`*${bufs.length}\r\n`, 0, 'latin1');
  for (const b of bufs) {
    pos += out.write(`$${b.length}\r\n`, pos, 'latin1');
    pos += b.copy(out, pos);
    out[pos++] = CR;
    out[pos++] = LF;
  }
  return out;
}

export const OK = Buffer.from('+OK\r\n', 'latin1');
export const NULL_BULK = Buffer.from('$-1\r\n', 'latin1');
const INTEGERS = new Map<number, Buffer>([-1, 0, 1].map((n) => [n, Buffer.from(`:${n}\r\n`, 'latin1')]));

export function encodeInteger(n: number): Buffer {
  return INTEGERS.get(n) ?? Buffer.from(`:${n}\r\n`, 'latin1');
}

export function encodeBulk(value: Uint8Array): Buffer {
  const head = `$${value.length}\r\n`;
  const out = Buffer.allocUnsafe(head.length + value.length + 2);
  out.write(head, 0, 'latin1');
  out.set(value, head.length);
  out[out.length - 2] = CR;
  out[out.length - 1] = LF;
  return out;
}

export function encodeError(message: string): Buffer {
  return Buffer.from(`-ERR ${message}\r\n`, 'utf8');
}

/** The notification payloads. */
export function encodeSetNotification(value: Uint8Array): Buffer {
  const head = Buffer.from('*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n', 'latin1');
  return Buffer.concat([head, encodeBulk(value)]);
}
export const DELETE_NOTIFICATION = Buffer.from('*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n', 'latin1');

/** A decoded answer (client side). */
export type RespValue =
  | { type: 'simple'; value: string }
  | { type: 'error'; message: string }
  | { type: 'integer'; value: number }
  | { type: 'bulk'; value: Buffer | null }
  | { type: 'array'; value: RespValue[] };

/** Decode one answer or notification; undefined when malformed. */
export function decodeAnswer(payload: Buffer): RespValue | undefined {
  const r = decodeValue(payload, 0, 0);
  return r && r[1] === payload.length ? r[0] : undefined;
}

function lineEnd(buf: Buffer, pos: number): number {
  const i = buf.indexOf('\r\n', pos, 'latin1');
  return i;
}

function decodeValue(buf: Buffer, pos: number, depth: number): [RespValue, number] | undefined {
  if (pos >= buf.length || depth > 8) return undefined;
  const t = buf[pos];
  switch (t) {
    case 0x2b /* + */:
    case 0x2d /* - */: {
      const end = lineEnd(buf, pos + 1);
      if (end < 0) return undefined;
      const text = buf.toString('utf8', pos + 1, end);
      if (t === 0x2b) return [{ type: 'simple', value: text }, end + 2];
      return [{ type: 'error', message: text.startsWith('ERR ') ? text.slice(4) : text }, end + 2];
    }
    case 0x3a /* : */: {
      const end = lineEnd(buf, pos + 1);
      if (end < 0) return undefined;
      const text = buf.toString('latin1', pos + 1, end);
      if (!/^-?\d+$/.test(text)) return undefined;
      return [{ type: 'integer', value: Number(text) }, end + 2];
    }
    case 0x24 /* $ */: {
      const len = readNumberLine(buf, pos + 1, true);
      if (!len) return undefined;
      const [size, start] = len;
      if (size === -1) return [{ type: 'bulk', value: null }, start];
      const end = start + size;
      if (end + 2 > buf.length || buf[end] !== CR || buf[end + 1] !== LF) return undefined;
      return [{ type: 'bulk', value: buf.subarray(start, end) }, end + 2];
    }
    case 0x2a /* * */: {
      const head = readNumberLine(buf, pos + 1, false);
      if (!head || head[0] > MAX_ELEMENTS) return undefined;
      const items: RespValue[] = [];
      let p = head[1];
      for (let k = 0; k < head[0]; k++) {
        const r = decodeValue(buf, p, depth + 1);
        if (!r) return undefined;
        items.push(r[0]);
        p = r[1];
      }
      return [{ type: 'array', value: items }, p];
    }
    default:
      return undefined;
  }
}
