/**
 * Hand-written decoding of the two packet kinds that dominate a broker's input: PUBLISH
 * without properties (3.1.1, or v5 with an empty property block) and the four
 * acknowledgements carrying only a packet identifier. Everything else, and anything
 * unusual about these (QoS 3, wrong flags, properties, short packets), returns undefined
 * and goes through mqtt-packet, which decides what is malformed. The unit tests check
 * that both decoders agree on generated packets.
 *
 * `bytes` is one whole packet (the framing guarantees it).
 */
import type { IPublishPacket, Packet } from 'mqtt-packet';

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
  const topic = bytes.toString('utf8', pos, pos + topicLength);
  pos += topicLength;
  let messageId: number | undefined;
  if (qos > 0) {
    if (pos + 2 > bytes.length) return undefined;
    messageId = bytes.readUInt16BE(pos);
    pos += 2;
  }
  if (protocolVersion === 5) {
    // only an empty property block (one 0 byte); anything else is parsed by mqtt-packet
    if (pos >= bytes.length || bytes[pos] !== 0) return undefined;
    pos += 1;
  }
  // A copy: a slice would keep the whole socket chunk alive as long as the message is queued.
  const payload = Buffer.allocUnsafe(bytes.length - pos);
  bytes.copy(payload, 0, pos);
  const packet: IPublishPacket = { cmd: 'publish', topic, payload, qos: qos as 0 | 1 | 2, retain: (b0 & 1) === 1, dup: (b0 & 8) === 8, length };
  if (messageId !== undefined) packet.messageId = messageId;
  return packet;
}
