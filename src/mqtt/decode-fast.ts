/**
 * Hand-written decoding of the packet kinds that dominate a broker's input: PUBLISH (3.1.1,
 * or v5 with the properties a PUBLISH commonly carries) and the four acknowledgements
 * carrying only a packet identifier. Everything else, and anything unusual about these
 * (QoS 3, wrong flags, other or repeated properties, lengths that do not add up, short
 * packets), returns undefined and goes through mqtt-packet, which decides what is
 * malformed. The output is what mqtt-packet would emit for the same bytes, down to its
 * quirks; the unit tests check that both decoders agree on generated packets.
 *
 * `bytes` is one whole packet (the framing guarantees it).
 */
import type { IPublishPacket, Packet, UserProperties } from 'mqtt-packet';

type PublishProperties = NonNullable<IPublishPacket['properties']>;

const ACKS: Record<number, 'puback' | 'pubrec' | 'pubrel' | 'pubcomp'> = { 0x40: 'puback', 0x50: 'pubrec', 0x62: 'pubrel', 0x70: 'pubcomp' };

export function decodeFast(bytes: Buffer, protocolVersion: 3 | 4 | 5): Packet | undefined {
  const b0 = bytes[0]!;
  const ack = ACKS[b0];
  if (ack !== undefined) {
    // fixed header + packet identifier (+ in v5 a success reason code and no properties);
    // other reason codes and properties take the slow path
    if (bytes.length === 4 && bytes[1] === 2) return { cmd: ack, messageId: bytes.readUInt16BE(2), length: 2 } as Packet;
    if (protocolVersion === 5 && bytes[4] === 0 && ((bytes.length === 5 && bytes[1] === 3) || (bytes.length === 6 && bytes[1] === 4 && bytes[5] === 0))) {
      return { cmd: ack, messageId: bytes.readUInt16BE(2), length: bytes[1], reasonCode: 0 } as Packet;
    }
    return undefined;
  }
  if (b0 >> 4 !== 3) return undefined;
  const qos = (b0 >> 1) & 3;
  if (qos === 3) return undefined;
  let pos = 1;
  while (pos < 5 && bytes[pos]! & 0x80) pos++;
  pos++;
  const length = bytes.length - pos;
  if (pos + 2 > bytes.length) return undefined;
  const topicLength = bytes.readUInt16BE(pos);
  pos += 2;
  if (pos + topicLength > bytes.length) return undefined;
  const topic = topicLength <= TOPIC_CACHE_MAX_BYTES ? cachedTopic(bytes, pos, topicLength) : bytes.toString('utf8', pos, pos + topicLength);
  pos += topicLength;
  let messageId: number | undefined;
  if (qos > 0) {
    if (pos + 2 > bytes.length) return undefined;
    messageId = bytes.readUInt16BE(pos);
    pos += 2;
  }
  let properties: PublishProperties | undefined;
  if (protocolVersion === 5) {
    // [MQTT-5-3.3.2.3.1] the Property Length, a Variable Byte Integer
    const blockLength = readVarInt(bytes, pos, bytes.length);
    if (blockLength < 0) return undefined;
    pos = varIntEnd;
    const blockEnd = pos + blockLength;
    if (blockEnd > bytes.length) return undefined;
    // an empty block leaves `properties` out, as mqtt-packet does
    if (blockLength > 0) {
      properties = decodeProperties(bytes, pos, blockEnd);
      if (properties === undefined) return undefined;
    }
    pos = blockEnd;
  }
  // A copy: a slice would keep the whole socket chunk alive as long as the message is queued.
  const payload = copyOut(bytes, pos, bytes.length);
  const packet: IPublishPacket = { cmd: 'publish', topic, payload, qos: qos as 0 | 1 | 2, retain: (b0 & 1) === 1, dup: (b0 & 8) === 8, length };
  if (messageId !== undefined) packet.messageId = messageId;
  if (properties !== undefined) packet.properties = properties;
  return packet;
}

/**
 * The properties in bytes[pos, end), named and typed as mqtt-packet names and types them,
 * or undefined for anything this decoder leaves to mqtt-packet: an id a client's PUBLISH
 * does not commonly carry, a repeated property other than a user property, a value that
 * runs past the block. mqtt-packet reads such things leniently (a field past the block,
 * null for a cut string, an array for a repeat); matching every quirk is not worth it.
 * Strings decode leniently (bad UTF-8 becomes U+FFFD), as mqtt-packet's do.
 */
function decodeProperties(bytes: Buffer, pos: number, end: number): PublishProperties | undefined {
  const props: PublishProperties = {};
  while (pos < end) {
    const id = bytes[pos++]!;
    let e: number;
    switch (id) {
      case 0x01: // Payload Format Indicator: a byte, 0 or 1 [MQTT-5-3.3.2.3.2]
        if (props.payloadFormatIndicator !== undefined || pos >= end || bytes[pos]! > 1) return undefined;
        props.payloadFormatIndicator = bytes[pos++] === 1;
        break;
      case 0x02: // Message Expiry Interval: four bytes [MQTT-5-3.3.2.3.3]
        if (props.messageExpiryInterval !== undefined || pos + 4 > end) return undefined;
        props.messageExpiryInterval = bytes.readUInt32BE(pos);
        pos += 4;
        break;
      case 0x03: // Content Type: a string [MQTT-5-3.3.2.3.9]
        if (props.contentType !== undefined || (e = fieldEnd(bytes, pos, end)) < 0) return undefined;
        props.contentType = bytes.toString('utf8', pos + 2, e);
        pos = e;
        break;
      case 0x08: // Response Topic: a string, checked as a topic name by the broker [MQTT-5-3.3.2.3.5]
        if (props.responseTopic !== undefined || (e = fieldEnd(bytes, pos, end)) < 0) return undefined;
        props.responseTopic = bytes.toString('utf8', pos + 2, e);
        pos = e;
        break;
      case 0x09: // Correlation Data: binary [MQTT-5-3.3.2.3.6], copied for the payload's reason
        if (props.correlationData !== undefined || (e = fieldEnd(bytes, pos, end)) < 0) return undefined;
        props.correlationData = copyOut(bytes, pos + 2, e);
        pos = e;
        break;
      case 0x0b: {
        // Subscription Identifier [MQTT-5-3.3.2.3.8]: mqtt-packet accepts it from a client,
        // the broker then refuses it [MQTT-5-3.3.4-6]
        if (props.subscriptionIdentifier !== undefined) return undefined;
        const value = readVarInt(bytes, pos, end);
        if (value < 0) return undefined;
        props.subscriptionIdentifier = value;
        pos = varIntEnd;
        break;
      }
      case 0x23: // Topic Alias: two bytes, range checked by the broker [MQTT-5-3.3.2.3.4]
        if (props.topicAlias !== undefined || pos + 2 > end) return undefined;
        props.topicAlias = bytes.readUInt16BE(pos);
        pos += 2;
        break;
      case 0x26: {
        // User Property: a string pair, the one property a client may repeat [MQTT-5-3.3.2.3.7]
        const nameEnd = fieldEnd(bytes, pos, end);
        if (nameEnd < 0 || (e = fieldEnd(bytes, nameEnd, end)) < 0) return undefined;
        const name = bytes.toString('utf8', pos + 2, nameEnd);
        // on a plain object this would set the prototype instead (see below)
        if (name === '__proto__') return undefined;
        const value = bytes.toString('utf8', nameEnd + 2, e);
        pos = e;
        // mqtt-packet's shape: name -> value, or -> an array of values when the name repeats.
        // It tests the earlier value for truthiness, so an empty value is overwritten by the
        // next one instead of collected; mirrored here.
        const users: UserProperties = (props.userProperties ??= {});
        const earlier = Object.hasOwn(users, name) ? users[name] : undefined;
        if (!earlier) users[name] = value;
        else if (Array.isArray(earlier)) earlier.push(value);
        else users[name] = [earlier, value];
        break;
      }
      default:
        return undefined;
    }
  }
  // mqtt-packet's userProperties has no prototype. Filling a prototype-less object costs
  // ~0.7 µs per key here (V8 keeps it in dictionary mode); a plain one, unlinked when
  // done, ~0.1 µs.
  if (props.userProperties !== undefined) Object.setPrototypeOf(props.userProperties, null);
  return props;
}

/**
 * Recently decoded topic names, by their bytes: a publisher sends the same few topics again and
 * again, and the same string each time saves its decoding, and lets everything after that keys
 * a Map by the topic (the match cache, the console's topic tree) reuse the string's hash instead
 * of computing it again. Direct-mapped on a hash of the bytes; a miss decodes and takes the slot.
 */
const TOPIC_CACHE_SLOTS = 256;
const TOPIC_CACHE_MAX_BYTES = 96;
const cachedBytes: (Buffer | undefined)[] = new Array<Buffer | undefined>(TOPIC_CACHE_SLOTS).fill(undefined);
const cachedStrings: string[] = new Array<string>(TOPIC_CACHE_SLOTS).fill('');

function cachedTopic(bytes: Buffer, pos: number, length: number): string {
  let h = length;
  for (let i = 0; i < length; i++) h = (Math.imul(h, 31) + bytes[pos + i]!) | 0;
  const slot = (h ^ (h >>> 8)) & (TOPIC_CACHE_SLOTS - 1);
  const known = cachedBytes[slot];
  if (known !== undefined && known.length === length) {
    let i = 0;
    while (i < length && known[i] === bytes[pos + i]) i++;
    if (i === length) return cachedStrings[slot]!;
  }
  const topic = bytes.toString('utf8', pos, pos + length);
  cachedBytes[slot] = copyOut(bytes, pos, pos + length);
  cachedStrings[slot] = topic;
  return topic;
}

/** A copy of bytes[start, end). Buffer#copy spends ~80 ns checking its arguments: a loop is cheaper for short fields. */
function copyOut(bytes: Buffer, start: number, end: number): Buffer {
  const out = Buffer.allocUnsafe(end - start);
  if (end - start > 64) bytes.copy(out, 0, start, end);
  else for (let i = 0; start < end; ) out[i++] = bytes[start++]!;
  return out;
}

/** End of the two-byte-length-prefixed string or binary at `pos` [MQTT-5-1.5.4] [MQTT-5-1.5.6], or -1 past `end`. */
export function fieldEnd(bytes: Buffer, pos: number, end: number): number {
  if (pos + 2 > end) return -1;
  const e = pos + 2 + bytes.readUInt16BE(pos);
  return e > end ? -1 : e;
}

/** Where the last readVarInt stopped: a second result without allocating one. */
export let varIntEnd = 0;

/**
 * The Variable Byte Integer at `pos` [MQTT-5-1.5.5] (at most four bytes; like mqtt-packet, a
 * longer-than-needed encoding is accepted), or -1 when it is longer or runs past `end`.
 */
export function readVarInt(bytes: Buffer, pos: number, end: number): number {
  let value = 0;
  for (let i = 0, mul = 1; i < 4 && pos < end; i++, mul *= 128) {
    const b = bytes[pos++]!;
    value += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) {
      varIntEnd = pos;
      return value;
    }
  }
  return -1;
}
