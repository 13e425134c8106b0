/**
 * The byte form of one application message in the log (layout version 2; layout 1 is the
 * same without flag 32). Every integer is
 * little endian; strings are UTF-8 with a u16 length (topics and client ids are at most
 * 65535 bytes by the MQTT spec), the properties a u32-length JSON text.
 *
 *   0   f64  storedAt (ms since epoch)
 *   8   f64  expiresAt (NaN: none)
 *   16  u8   qos
 *   17  u8   flags: 1 retain, 2 has senderId, 4 has origin, 8 has properties, 16 direct (a
 *            copy for the sessions whose iterators name it, such as a retained message sent
 *            to a new subscription: a replay by topic passes over it), 32 has the
 *            publisher's QoS 2 packet id (layout 2)
 *   18  u16  topic length, topic
 *       u16  senderId length, senderId        (flag 2)
 *       u16  origin length, origin            (flag 4)
 *       u32  properties length, JSON          (flag 8; correlationData as base64)
 *       u16  the publisher's QoS 2 packet id  (flag 32: stored with the message in the same
 *            fdatasync, so that after a crash a resent PUBLISH with that id is known as the
 *            same message even if the session record naming the id was not written yet)
 *       u32  payload length, payload
 *
 * A later layout gets a new number and a new generation; readers keep every old decoder.
 */
import type { Message, MessageProperties, QoS } from '../mqtt/message.js';

export const LAYOUT_VERSION = 2;

export function propertiesToJson(p: MessageProperties): string {
  return JSON.stringify(p.correlationData ? { ...p, correlationData: p.correlationData.toString('base64') } : p);
}

export function propertiesFromJson(s: string): MessageProperties {
  const raw = JSON.parse(s) as MessageProperties & { correlationData?: string };
  const out = { ...raw } as MessageProperties;
  if (typeof raw.correlationData === 'string') out.correlationData = Buffer.from(raw.correlationData, 'base64');
  return out;
}

export function encodeMessage(m: Message, storedAt: number, direct = false): Buffer {
  const b = Buffer.allocUnsafe(maxEncodedSize(m));
  return b.subarray(0, encodeMessageInto(m, storedAt, direct, b, 0));
}

/**
 * At least the bytes encodeMessageInto writes for `m` (strings counted at 3 bytes per UTF-16
 * unit, the most UTF-8 needs), without encoding anything: the log reserves this much room.
 */
export function maxEncodedSize(m: Message): number {
  let n = 2 + 20 + 3 * m.topic.length + 4 + m.payload.length;
  if (m.senderId !== undefined) n += 2 + 3 * m.senderId.length;
  if (m.origin !== undefined) n += 2 + 3 * m.origin.length;
  if (m.properties) n += 4 + 3 * propertiesToJson(m.properties).length;
  return n;
}

function writeStr16(b: Buffer, p: number, s: string): number {
  const n = b.write(s, p + 2, 'utf8');
  b.writeUInt16LE(n, p);
  return p + 2 + n;
}

/**
 * Encode `m` into `b` at `at` (which has maxEncodedSize(m) bytes of room): no intermediate
 * buffers, so the log can append a record straight into its batch. Returns where it ends.
 */
export function encodeMessageInto(m: Message, storedAt: number, direct: boolean, b: Buffer, at: number): number {
  const qos2Id = !direct ? m.inboundQos2Id : undefined;
  const props = m.properties ? propertiesToJson(m.properties) : undefined;
  b.writeDoubleLE(storedAt, at);
  b.writeDoubleLE(m.expiresAt ?? Number.NaN, at + 8);
  b[at + 16] = m.qos;
  b[at + 17] = (m.retain ? 1 : 0) | (m.senderId !== undefined ? 2 : 0) | (m.origin !== undefined ? 4 : 0) | (props !== undefined ? 8 : 0) | (direct ? 16 : 0) | (qos2Id !== undefined ? 32 : 0);
  let p = writeStr16(b, at + 18, m.topic);
  if (m.senderId !== undefined) p = writeStr16(b, p, m.senderId);
  if (m.origin !== undefined) p = writeStr16(b, p, m.origin);
  if (props !== undefined) {
    const n = b.write(props, p + 4, 'utf8');
    b.writeUInt32LE(n, p);
    p += 4 + n;
  }
  if (qos2Id !== undefined) {
    b.writeUInt16LE(qos2Id, p);
    p += 2;
  }
  const payload = m.payload;
  b.writeUInt32LE(payload.length, p);
  b.set(payload, p + 4);
  return p + 4 + payload.length;
}

export interface StoredMessage {
  message: Message;
  storedAt: number;
  direct: boolean;
}

/** Decode a layout 1 or 2 body; throws RangeError on a body that runs short (caught as corruption). */
export function decodeMessage(b: Buffer, layout = LAYOUT_VERSION): StoredMessage {
  if (layout !== 1 && layout !== 2) throw new Error(`unknown log layout ${layout}`);
  const storedAt = b.readDoubleLE(0);
  const expiresAt = b.readDoubleLE(8);
  const qos = b[16]! as QoS;
  const flags = b[17]!;
  let p = 18;
  const str16 = (): string => {
    const n = b.readUInt16LE(p);
    if (p + 2 + n > b.length) throw new RangeError('string runs past the record');
    const s = b.toString('utf8', p + 2, p + 2 + n);
    p += 2 + n;
    return s;
  };
  const topic = str16();
  const message: Message = { topic, payload: Buffer.alloc(0), qos, retain: (flags & 1) !== 0 };
  if (flags & 2) message.senderId = str16();
  if (flags & 4) message.origin = str16();
  if (flags & 8) {
    const n = b.readUInt32LE(p);
    if (p + 4 + n > b.length) throw new RangeError('properties run past the record');
    message.properties = propertiesFromJson(b.toString('utf8', p + 4, p + 4 + n));
    p += 4 + n;
  }
  if (flags & 32) {
    if (layout < 2) throw new RangeError('flag 32 in a layout 1 record');
    message.inboundQos2Id = b.readUInt16LE(p);
    p += 2;
  }
  const n = b.readUInt32LE(p);
  if (p + 4 + n !== b.length) throw new RangeError('payload length does not match the record');
  message.payload = Buffer.from(b.subarray(p + 4, p + 4 + n));
  if (!Number.isNaN(expiresAt)) message.expiresAt = expiresAt;
  return { message, storedAt, direct: (flags & 16) !== 0 };
}
