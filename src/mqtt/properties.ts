/**
 * Strict reading of the MQTT 5 property blocks of a packet from a client, on its raw bytes.
 *
 * mqtt-packet reads properties leniently: a string or binary cut short becomes `null`, a
 * two- or four-byte integer cut short becomes -1, a Variable Byte Integer that does not
 * end becomes `false`, a property may run past its block into the payload, any property
 * identifier is taken in any packet, a byte of 2 for a 0/1 field becomes `true`. Such a
 * value would travel on (into a retained message, a will, a queue) and break the encoder
 * for every later receiver. The broker only accepts what it can encode again: every
 * packet that mqtt-packet decoded is checked here first (decode-fast is strict already).
 *
 * [MQTT-5-2.2.2.2] "A Control Packet which contains an Identifier which is not valid for its
 * packet type, or contains a value not of the specified data type, is a Malformed Packet."
 * Repeats of a property other than User Property (and Subscription Identifier, which the
 * server alone may repeat) are a Protocol Error, as are out-of-range values.
 */
import { isUtf8 } from 'node:buffer';
import { fieldEnd, readVarInt, varIntEnd } from './decode-fast.js';
import { RC } from './reason-codes.js';

export interface PropertyProblem {
  reasonCode: typeof RC.MALFORMED_PACKET | typeof RC.PROTOCOL_ERROR;
  reason: string;
}

type Kind = 'byte01' | 'u16' | 'u16nz' | 'u32' | 'u32nz' | 'varint' | 'string' | 'binary' | 'pair';

/** The block a property may appear in, as a client sends it. */
type Block = 'connect' | 'will' | 'publish' | 'ack' | 'subscribe' | 'unsubscribe' | 'disconnect' | 'auth';

interface PropertyType {
  name: string;
  kind: Kind;
  in: readonly Block[];
}

const ACKS: readonly Block[] = ['ack', 'disconnect', 'auth'];

/** [MQTT-5-2.2.2.2] Properties a client may send, by identifier, with the packets that carry them. */
const PROPERTY_TYPES: Record<number, PropertyType> = {
  0x01: { name: 'payload format indicator', kind: 'byte01', in: ['publish', 'will'] },
  0x02: { name: 'message expiry interval', kind: 'u32', in: ['publish', 'will'] },
  0x03: { name: 'content type', kind: 'string', in: ['publish', 'will'] },
  0x08: { name: 'response topic', kind: 'string', in: ['publish', 'will'] },
  0x09: { name: 'correlation data', kind: 'binary', in: ['publish', 'will'] },
  // a client's PUBLISH carrying one is refused by the broker with its own clause [MQTT-5-3.3.4-6]
  0x0b: { name: 'subscription identifier', kind: 'varint', in: ['publish', 'subscribe'] },
  0x11: { name: 'session expiry interval', kind: 'u32', in: ['connect', 'disconnect'] },
  0x15: { name: 'authentication method', kind: 'string', in: ['connect', 'auth'] },
  0x16: { name: 'authentication data', kind: 'binary', in: ['connect', 'auth'] },
  0x17: { name: 'request problem information', kind: 'byte01', in: ['connect'] },
  0x18: { name: 'will delay interval', kind: 'u32', in: ['will'] },
  0x19: { name: 'request response information', kind: 'byte01', in: ['connect'] },
  0x1c: { name: 'server reference', kind: 'string', in: ['disconnect'] },
  0x1f: { name: 'reason string', kind: 'string', in: ACKS },
  0x21: { name: 'receive maximum', kind: 'u16nz', in: ['connect'] }, // [MQTT-5-3.1.2.11.3] 0 is a protocol error
  0x22: { name: 'topic alias maximum', kind: 'u16', in: ['connect'] },
  0x23: { name: 'topic alias', kind: 'u16', in: ['publish'] }, // 0 and the range: the broker answers 0x94
  0x26: { name: 'user property', kind: 'pair', in: ['connect', 'will', 'publish', 'ack', 'subscribe', 'unsubscribe', 'disconnect', 'auth'] },
  0x27: { name: 'maximum packet size', kind: 'u32nz', in: ['connect'] }, // [MQTT-5-3.1.2.11.4] 0 is a protocol error
};

const malformed = (reason: string): PropertyProblem => ({ reasonCode: RC.MALFORMED_PACKET, reason });
const protocolError = (reason: string): PropertyProblem => ({ reasonCode: RC.PROTOCOL_ERROR, reason });

/** Where the block checkBlock last read without a problem ends: a second result without allocating one. */
let blockEnd = 0;

/** [MQTT-5-1.5.4-1] [MQTT-5-1.5.4-2] well-formed UTF-8 without U+0000. */
function goodString(b: Buffer, start: number, end: number): boolean {
  const s = b.subarray(start, end);
  return s.indexOf(0) === -1 && isUtf8(s);
}

/**
 * The property block at `pos` (its Variable Byte Integer length first), to end at or before
 * `limit`. Sets `blockEnd` to the block's end when it returns undefined.
 */
function checkBlock(b: Buffer, pos: number, limit: number, block: Block): PropertyProblem | undefined {
  const length = readVarInt(b, pos, limit);
  if (length < 0) return malformed(`${block} property length is not a Variable Byte Integer`);
  pos = varIntEnd;
  const end = pos + length;
  if (end > limit) return malformed(`${block} properties run past the packet`);
  let seen = 0n;
  while (pos < end) {
    const id = b[pos++]!;
    const type = PROPERTY_TYPES[id];
    if (type === undefined || !type.in.includes(block)) return malformed(`property 0x${id.toString(16).padStart(2, '0')} is not valid in ${block === 'will' ? 'will properties' : block.toUpperCase()}`);
    if (id !== 0x26) {
      const bit = 1n << BigInt(id);
      if (seen & bit) return protocolError(`${type.name} more than once`);
      seen |= bit;
    }
    switch (type.kind) {
      case 'byte01':
        if (pos + 1 > end) return malformed(`${type.name} cut short`);
        if (b[pos]! > 1) return protocolError(`${type.name} is ${b[pos]}, not 0 or 1`);
        pos += 1;
        break;
      case 'u16':
      case 'u16nz':
        if (pos + 2 > end) return malformed(`${type.name} cut short`);
        if (type.kind === 'u16nz' && b.readUInt16BE(pos) === 0) return protocolError(`${type.name} is 0`);
        pos += 2;
        break;
      case 'u32':
      case 'u32nz':
        if (pos + 4 > end) return malformed(`${type.name} cut short`);
        if (type.kind === 'u32nz' && b.readUInt32BE(pos) === 0) return protocolError(`${type.name} is 0`);
        pos += 4;
        break;
      case 'varint': {
        const v = readVarInt(b, pos, end);
        if (v < 0) return malformed(`${type.name} is not a Variable Byte Integer`);
        if (v === 0) return protocolError(`${type.name} is 0`); // [MQTT-5-3.8.2.1.2] 1 to 268,435,455
        pos = varIntEnd;
        break;
      }
      case 'string':
      case 'binary': {
        const e = fieldEnd(b, pos, end);
        if (e < 0) return malformed(`${type.name} cut short`);
        if (type.kind === 'string' && !goodString(b, pos + 2, e)) return malformed(`${type.name} is not valid UTF-8 or contains U+0000`);
        pos = e;
        break;
      }
      case 'pair': {
        const nameEnd = fieldEnd(b, pos, end);
        const e = nameEnd < 0 ? -1 : fieldEnd(b, nameEnd, end);
        if (e < 0) return malformed(`${type.name} cut short`);
        if (!goodString(b, pos + 2, nameEnd) || !goodString(b, nameEnd + 2, e)) return malformed(`${type.name} is not valid UTF-8 or contains U+0000`);
        pos = e;
        break;
      }
    }
  }
  blockEnd = end;
  return undefined;
}

/** Offset after the fixed header (type byte and Remaining Length) of a whole frame. */
function afterFixedHeader(frame: Buffer): number {
  let pos = 1;
  while (pos < 5 && pos < frame.length && (frame[pos]! & 0x80) !== 0) pos++;
  return pos + 1;
}

/** Skip a two-byte-length-prefixed field; -1 when cut short. */
function skipField(b: Buffer, pos: number): number {
  return fieldEnd(b, pos, b.length);
}

/**
 * The first problem with the property blocks of `frame`, one whole packet from a client
 * speaking MQTT 5 (for CONNECT: one whose protocol level is 5), or undefined when every
 * block reads exactly. Only the property blocks are judged here; the fields around them
 * are only skipped (mqtt-packet has judged them).
 */
export function checkPropertyBlocks(frame: Buffer): PropertyProblem | undefined {
  const type = frame[0]! >> 4;
  const end = frame.length;
  let pos = afterFixedHeader(frame);
  const remaining = end - pos;
  switch (type) {
    case 1: {
      // CONNECT: protocol name, level, flags, keep alive, properties; then client id, will...
      pos = skipField(frame, pos);
      if (pos < 0 || pos + 4 > end) return undefined;
      const flags = frame[pos + 1]!;
      pos += 4;
      const problem = checkBlock(frame, pos, end, 'connect');
      if (problem) return problem;
      if ((flags & 0x04) === 0) return undefined;
      pos = skipField(frame, blockEnd); // client identifier
      if (pos < 0) return undefined;
      const willProblem = checkBlock(frame, pos, end, 'will');
      return willProblem ? { ...willProblem, reason: `will ${willProblem.reason}` } : undefined;
    }
    case 3: {
      pos = skipField(frame, pos); // topic name
      if (pos < 0) return undefined;
      if (((frame[0]! >> 1) & 3) > 0) pos += 2; // packet identifier
      if (pos > end) return undefined;
      return checkBlock(frame, pos, end, 'publish');
    }
    case 4:
    case 5:
    case 6:
    case 7:
      // packet identifier, then (optionally) a reason code and (optionally) properties
      if (remaining < 4) return undefined;
      return exact(checkBlock(frame, pos + 3, end, 'ack'), end);
    case 8:
    case 10:
      if (remaining < 2) return undefined;
      return checkBlock(frame, pos + 2, end, type === 8 ? 'subscribe' : 'unsubscribe');
    case 14:
    case 15:
      if (remaining < 2) return undefined;
      return exact(checkBlock(frame, pos + 1, end, type === 14 ? 'disconnect' : 'auth'), end);
    default:
      return undefined;
  }
}

/** For the packets whose properties are the last thing in them: nothing may follow the block. */
function exact(problem: PropertyProblem | undefined, end: number): PropertyProblem | undefined {
  if (problem) return problem;
  return blockEnd === end ? undefined : malformed('bytes after the properties');
}
