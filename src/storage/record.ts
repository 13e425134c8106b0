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
  const topic = Buffer.from(m.topic, 'utf8');
  const sender = m.senderId !== undefined ? Buffer.from(m.senderId, 'utf8') : undefined;
  const origin = m.origin !== undefined ? Buffer.from(m.origin, 'utf8') : undefined;
  const props = m.properties ? Buffer.from(propertiesToJson(m.properties), 'utf8') : undefined;
  const qos2Id = !direct ? m.inboundQos2Id : undefined;
  const size = (qos2Id !== undefined ? 2 : 0) + 20 + topic.length + (sender ? 2 + sender.length : 0) + (origin ? 2 + origin.length : 0) + (props ? 4 + props.length : 0) + 4 + m.payload.length;
  const b = Buffer.allocUnsafe(size);
  b.writeDoubleLE(storedAt, 0);
  b.writeDoubleLE(m.expiresAt ?? Number.NaN, 8);
  b[16] = m.qos;
  b[17] = (m.retain ? 1 : 0) | (sender ? 2 : 0) | (origin ? 4 : 0) | (props ? 8 : 0) | (direct ? 16 : 0) | (qos2Id !== undefined ? 32 : 0);
  let p = 18;
  b.writeUInt16LE(topic.length, p);
  p += 2 + topic.copy(b, p + 2);
  if (sender) {
    b.writeUInt16LE(sender.length, p);
    p += 2 + sender.copy(b, p + 2);
  }
  if (origin) {
    b.writeUInt16LE(origin.length, p);
    p += 2 + origin.copy(b, p + 2);
  }
  if (props) {
    b.writeUInt32LE(props.length, p);
    p += 4 + props.copy(b, p + 4);
  }
  if (qos2Id !== undefined) {
    b.writeUInt16LE(qos2Id, p);
    p += 2;
  }
  b.writeUInt32LE(m.payload.length, p);
  m.payload.copy(b, p + 4);
  return b;
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
