/**
 * A PUBLISH encoder for the delivery hot path. mqtt-packet's generate() is general and
 * allocates several buffers per packet; here the packet is measured first and written
 * into one buffer. Output is byte-identical to mqtt-packet's (the unit tests compare them
 * on generated packets).
 *
 * Fixed header: 0x30 | dup<<3 | qos<<1 | retain, Remaining Length (1-4 bytes).
 * Variable header: topic (u16 length + UTF-8), packet id (u16) when qos > 0,
 * v5: properties (varint length + property list). Payload: the rest.
 */
import type { UserProperties } from 'mqtt-packet';

export interface PublishFields {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain: boolean;
  dup: boolean;
  messageId?: number;
  properties?: PublishProperties;
}

export interface PublishProperties {
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  topicAlias?: number;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: UserProperties;
  subscriptionIdentifier?: number | number[];
  contentType?: string;
}

// property identifiers [MQTT-5-2.2.2.2]
const PFI = 0x01;
const MEI = 0x02;
const CT = 0x03;
const RT = 0x08;
const CD = 0x09;
const SI = 0x0b;
const TA = 0x23;
const UP = 0x26;

function varintSize(n: number): number {
  return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

function writeVarint(buf: Buffer, pos: number, n: number): number {
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    buf[pos++] = byte;
  } while (n > 0);
  return pos;
}

function writeString(buf: Buffer, pos: number, s: string, len: number): number {
  buf[pos] = len >> 8;
  buf[pos + 1] = len & 0xff;
  pos += 2;
  // UTF-8 as long as UTF-16 means ASCII: short ones are copied here, cheaper than a call
  // into C++ (topics, user properties and content types are mostly short ASCII)
  if (len === s.length && len <= 64) {
    for (let i = 0; i < len; i++) buf[pos + i] = s.charCodeAt(i);
  } else buf.write(s, pos, len, 'utf8');
  return pos + len;
}

/** Bytes of the user properties, each 0x26 + two length-prefixed strings (a name with several values: one pair each). */
function userPropertiesLength(up: UserProperties): number {
  let n = 0;
  for (const key in up) {
    if (!Object.hasOwn(up, key)) continue;
    const v = up[key]!;
    const k = 5 + Buffer.byteLength(key);
    if (Array.isArray(v)) for (const item of v) n += k + Buffer.byteLength(String(item));
    else n += k + Buffer.byteLength(String(v));
  }
  return n;
}

function writeUserProperties(buf: Buffer, pos: number, up: UserProperties): number {
  for (const key in up) {
    if (!Object.hasOwn(up, key)) continue;
    const v = up[key]!;
    const keyLen = Buffer.byteLength(key);
    if (Array.isArray(v)) {
      for (const item of v) {
        const value = String(item);
        buf[pos++] = UP;
        pos = writeString(buf, pos, key, keyLen);
        pos = writeString(buf, pos, value, Buffer.byteLength(value));
      }
    } else {
      const value = String(v);
      buf[pos++] = UP;
      pos = writeString(buf, pos, key, keyLen);
      pos = writeString(buf, pos, value, Buffer.byteLength(value));
    }
  }
  return pos;
}

/** Size of the properties block (without its length prefix). */
function propertiesLength(p: PublishProperties): number {
  let n = 0;
  if (p.payloadFormatIndicator !== undefined) n += 2;
  if (p.messageExpiryInterval !== undefined) n += 5;
  if (p.contentType !== undefined) n += 3 + Buffer.byteLength(p.contentType);
  if (p.responseTopic !== undefined) n += 3 + Buffer.byteLength(p.responseTopic);
  if (p.correlationData !== undefined) n += 3 + p.correlationData.length;
  if (p.subscriptionIdentifier !== undefined) {
    const ids = Array.isArray(p.subscriptionIdentifier) ? p.subscriptionIdentifier : [p.subscriptionIdentifier];
    for (const id of ids) n += 1 + varintSize(id);
  }
  if (p.topicAlias !== undefined) n += 3;
  if (p.userProperties) n += userPropertiesLength(p.userProperties);
  return n;
}

function writeProperties(buf: Buffer, pos: number, p: PublishProperties): number {
  // order follows mqtt-packet's encoder so the bytes are identical
  if (p.payloadFormatIndicator !== undefined) {
    buf[pos++] = PFI;
    buf[pos++] = p.payloadFormatIndicator ? 1 : 0;
  }
  if (p.messageExpiryInterval !== undefined) {
    buf[pos++] = MEI;
    buf.writeUInt32BE(p.messageExpiryInterval, pos);
    pos += 4;
  }
  if (p.topicAlias !== undefined) {
    buf[pos++] = TA;
    buf.writeUInt16BE(p.topicAlias, pos);
    pos += 2;
  }
  if (p.responseTopic !== undefined) {
    buf[pos++] = RT;
    pos = writeString(buf, pos, p.responseTopic, Buffer.byteLength(p.responseTopic));
  }
  if (p.correlationData !== undefined) {
    buf[pos++] = CD;
    buf.writeUInt16BE(p.correlationData.length, pos);
    buf.set(p.correlationData, pos + 2);
    pos += 2 + p.correlationData.length;
  }
  if (p.userProperties) pos = writeUserProperties(buf, pos, p.userProperties);
  if (p.subscriptionIdentifier !== undefined) {
    const ids = Array.isArray(p.subscriptionIdentifier) ? p.subscriptionIdentifier : [p.subscriptionIdentifier];
    for (const id of ids) {
      buf[pos++] = SI;
      pos = writeVarint(buf, pos, id);
    }
  }
  if (p.contentType !== undefined) {
    buf[pos++] = CT;
    pos = writeString(buf, pos, p.contentType, Buffer.byteLength(p.contentType));
  }
  return pos;
}

// What the last measurePublish found, for the writePublishAt that follows it (no result object
// per packet on the delivery path).
let mRemaining = 0;
let mTopicLen = 0;
let mPropsLen = 0;

/**
 * Size in bytes of the PUBLISH `f` would encode to. The next call must be writePublishAt for
 * the same `f` and version (it uses what this measured).
 */
export function measurePublish(f: PublishFields, protocolVersion: 3 | 4 | 5): number {
  const topicLen = Buffer.byteLength(f.topic);
  let length = 2 + topicLen + f.payload.length + (f.qos > 0 ? 2 : 0);
  let propsLen = 0;
  if (protocolVersion === 5) {
    if (f.properties) propsLen = propertiesLength(f.properties);
    length += varintSize(propsLen) + propsLen;
  }
  mRemaining = length;
  mTopicLen = topicLen;
  mPropsLen = propsLen;
  return 1 + varintSize(length) + length;
}

/**
 * Writes the PUBLISH measured by the measurePublish just before into `buf` at `pos` (room for
 * the measured size is the caller's business); returns the position after it.
 */
export function writePublishAt(buf: Buffer, pos: number, f: PublishFields, protocolVersion: 3 | 4 | 5): number {
  buf[pos] = 0x30 | (f.dup ? 8 : 0) | (f.qos << 1) | (f.retain ? 1 : 0);
  pos = writeVarint(buf, pos + 1, mRemaining);
  pos = writeString(buf, pos, f.topic, mTopicLen);
  if (f.qos > 0) {
    const id = f.messageId ?? 0;
    buf[pos] = id >> 8;
    buf[pos + 1] = id & 0xff;
    pos += 2;
  }
  if (protocolVersion === 5) {
    const propsLen = mPropsLen;
    pos = writeVarint(buf, pos, propsLen);
    if (f.properties && propsLen > 0) pos = writeProperties(buf, pos, f.properties);
  }
  const payload = f.payload;
  const n = payload.length;
  // TypedArray#set: Buffer#copy spends longer checking its arguments; a loop beats both for a few bytes
  if (n > 32) buf.set(payload, pos);
  else for (let i = 0; i < n; i++) buf[pos + i] = payload[i]!;
  return pos + n;
}

/** Encode a PUBLISH for protocol version 3, 4 or 5. */
export function encodePublish(f: PublishFields, protocolVersion: 3 | 4 | 5): Buffer {
  const buf = Buffer.allocUnsafe(measurePublish(f, protocolVersion));
  writePublishAt(buf, 0, f, protocolVersion);
  return buf;
}
