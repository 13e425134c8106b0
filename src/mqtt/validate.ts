/**
 * The protocol rules a packet from a client must meet, as pure checks that return a reason
 * code (the model: mochi-mqtt packets.go, PublishValidate / ConnectValidate). Reading a
 * packet (readPacket) hides mqtt-packet's quirks behind one call: a decoded packet, or the
 * malformed / protocol-error code and why. The checks that need a connection's state (topic
 * aliases the client set, the QoS 2 ids it holds, its session) stay with the packet handlers.
 *
 * Spec tags name the version they cite: [MQTT-5-3.1.2-22] is MQTT 5.0, [MQTT-3.1.1-3.1.2-22] is
 * MQTT 3.1.1 (CONTRIBUTING.md, "Spec tags").
 */
import type { IConnectPacket, IPublishPacket, ISubscribePacket, IUnsubscribePacket, Packet } from 'mqtt-packet';
import { RC } from './reason-codes.js';
import { decodeFast } from './decode-fast.js';
import { decodePacket } from './decode.js';
import { checkPropertyBlocks } from './properties.js';
import { malformedString } from './strings.js';
import { hasControlCharacter, isValidTopicName, parseSharedFilter } from '../topics/validate.js';

/** Why a packet is refused: the reason code to answer (or count) and a sentence for the log. */
export class PacketProblem {
  constructor(
    readonly reasonCode: number,
    readonly reason: string,
  ) {}
}

type Version = 3 | 4 | 5;

/**
 * One whole packet (framing guarantees it) from a connection speaking `version` (4 before its
 * CONNECT): the decoded packet, or why it is malformed. An unsupported protocol level in a
 * CONNECT is UNSUPPORTED_PROTOCOL_VERSION (0x84), found from the bytes. The v5 property blocks
 * of a CONNECT are left to checkConnect, whose answer is a CONNACK.
 */
export function readPacket(bytes: Buffer, version: Version): Packet | PacketProblem {
  let packet = decodeFast(bytes, version);
  if (packet === undefined) {
    if (bytes[0] === 0x10 && unsupportedLevel(bytes)) return new PacketProblem(RC.UNSUPPORTED_PROTOCOL_VERSION, 'unsupported protocol version');
    try {
      packet = decodePacket(bytes, version);
    } catch (err) {
      return new PacketProblem(RC.MALFORMED_PACKET, (err as Error).message);
    }
    // decode-fast is strict; mqtt-packet reads properties leniently, so its packets' property
    // blocks are read again strictly
    if (version === 5 && packet.cmd !== 'connect') {
      const problem = checkPropertyBlocks(bytes);
      if (problem !== undefined) return new PacketProblem(problem.reasonCode, problem.reason);
    }
  }
  // [MQTT-3.1.1-1.5.3-1] [MQTT-3.1.1-1.5.3-2] / [MQTT-5-1.5.4-1] [MQTT-5-1.5.4-2] a string that is not well-formed UTF-8, or holds U+0000, is malformed
  const bad = malformedString(packet, bytes);
  if (bad) return new PacketProblem(RC.MALFORMED_PACKET, `${bad} is not valid UTF-8 or contains U+0000`);
  return packet;
}

/**
 * A CONNECT naming the MQTT protocol ("MQTT", or "MQIsdp" for 3.1) with a level other than 3, 4
 * or 5 (the bridge bit 0x80 aside, as mqtt-packet reads it): [MQTT-3.1.1-3.1.2-2] answered with
 * CONNACK return code 0x01.
 */
function unsupportedLevel(bytes: Buffer): boolean {
  let pos = 1;
  while (pos < bytes.length && pos < 5 && (bytes[pos]! & 0x80) !== 0) pos++;
  pos++; // past the Remaining Length
  if (pos + 2 > bytes.length) return false;
  const nameLength = bytes.readUInt16BE(pos);
  pos += 2;
  if (pos + nameLength >= bytes.length) return false;
  const name = bytes.toString('latin1', pos, pos + nameLength);
  if (name !== 'MQTT' && name !== 'MQIsdp') return false;
  const level = bytes[pos + nameLength]! & 0x7f;
  return level !== 3 && level !== 4 && level !== 5;
}

const NEEDS_PACKET_ID = new Set(['puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'unsubscribe']);

/**
 * [MQTT-3.1.1-2.3.1-1] / [MQTT-5-2.2.1-3]: acks, SUBSCRIBE and UNSUBSCRIBE carry a non-zero
 * packet identifier. mqtt-packet reads a missing one as -1: the packet is cut short (malformed),
 * and must not be answered (the reply would be truncated); present but 0 is a protocol error.
 */
export function packetIdProblem(packet: Packet): PacketProblem | undefined {
  if (!NEEDS_PACKET_ID.has(packet.cmd) || (packet.messageId ?? 0) >= 1) return undefined;
  if (packet.messageId === 0) return new PacketProblem(RC.PROTOCOL_ERROR, `${packet.cmd} with packet identifier 0`);
  return new PacketProblem(RC.MALFORMED_PACKET, `${packet.cmd} without a packet identifier`);
}

/**
 * The rules of a CONNECT that need nothing but the packet (and its bytes, for the v5 property
 * blocks). A v5 client is answered with CONNACK and the code; a 3.1.1 client gets CONNACK with
 * the matching return code, except for MALFORMED_PACKET, where the connection is just closed.
 */
export function checkConnect(packet: IConnectPacket, frame: Buffer): PacketProblem | undefined {
  const version = packet.protocolVersion ?? 4;
  const props = packet.properties;
  // [MQTT-3.1.1-3.1.2-14] / [MQTT-5-3.1.2-12] Will QoS 3
  if (packet.will && (packet.will.qos ?? 0) > 2) return new PacketProblem(RC.MALFORMED_PACKET, 'will QoS 3');
  if (version === 5) {
    const problem = checkPropertyBlocks(frame);
    if (problem !== undefined) return new PacketProblem(problem.reasonCode, problem.reason);
  } else if (packet.password !== undefined && packet.username === undefined) {
    return new PacketProblem(RC.MALFORMED_PACKET, 'password without user name'); // [MQTT-3.1.1-3.1.2-22] (allowed in 5.0)
  }
  if (version === 5 && props) {
    // Enhanced authentication is not offered: 0x8C Bad authentication method [MQTT-5-4.12]
    if (props.authenticationMethod !== undefined) return new PacketProblem(RC.BAD_AUTHENTICATION_METHOD, 'enhanced authentication is not supported');
    // Receive Maximum and Maximum Packet Size of 0 are protocol errors [MQTT-5-3.1.2.11.3] [MQTT-5-3.1.2.11.4]
    if (props.receiveMaximum === 0 || props.maximumPacketSize === 0) return new PacketProblem(RC.PROTOCOL_ERROR, 'receive maximum and maximum packet size must not be 0');
  }
  // [MQTT-3.1.1-3.1.3-8] no client id with clean session 0: identifier rejected
  if ((packet.clientId ?? '').length === 0 && version !== 5 && packet.clean === false) {
    return new PacketProblem(RC.CLIENT_IDENTIFIER_NOT_VALID, 'empty client id needs a clean session');
  }
  if (packet.will) {
    if (!isValidTopicName(packet.will.topic)) return new PacketProblem(RC.TOPIC_NAME_INVALID, 'invalid will topic');
    // [MQTT-5-3.1.3.2.5] the will's Response Topic is a topic name, no wildcards (as [MQTT-5-3.3.2-14])
    const responseTopic = packet.will.properties?.responseTopic;
    if (responseTopic !== undefined && !isValidTopicName(responseTopic)) return new PacketProblem(RC.PROTOCOL_ERROR, 'invalid will response topic');
    const bad = controlCharacterProperty(packet.will.properties as Parameters<typeof controlCharacterProperty>[0]);
    if (bad !== undefined) return new PacketProblem(RC.MALFORMED_PACKET, `control character in the will's ${bad}`);
  }
  return undefined;
}

/**
 * The first string property of an application message (content type, user property names and
 * values) holding a control character U+0001-U+001F or U+007F-U+009F. [MQTT-5-1.5.4] a
 * receiver may treat those as malformed, and libmosquitto does: a subscriber on it drops the
 * connection on the first such property it receives (and gets the retained one again on every
 * reconnect). So, as for topics, the broker refuses them on the way in and never forwards one.
 * (The Response Topic is a topic name: isValidTopicName refuses them there.)
 */
export function controlCharacterProperty(props: { contentType?: string; userProperties?: Record<string, string | string[]> } | undefined): string | undefined {
  if (!props) return undefined;
  if (props.contentType !== undefined && hasControlCharacter(props.contentType)) return 'content type';
  const users = props.userProperties;
  if (users) {
    for (const name in users) {
      if (hasControlCharacter(name)) return 'user property name';
      const v = users[name]!;
      if (Array.isArray(v) ? v.some(hasControlCharacter) : hasControlCharacter(v)) return 'user property value';
    }
  }
  return undefined;
}

/**
 * The rules of a PUBLISH that need nothing but the packet and our Topic Alias Maximum. An empty
 * topic with a Topic Alias is valid here; whether the alias is known is the handler's to check.
 */
export function checkPublish(packet: IPublishPacket, version: Version, topicAliasMaximum: number): PacketProblem | undefined {
  const props = packet.properties;
  if (version === 5 && props) {
    // [MQTT-5-3.3.4-6] Subscription Identifiers only travel from the server to a client
    if (props.subscriptionIdentifier !== undefined) return new PacketProblem(RC.PROTOCOL_ERROR, 'subscription identifier in PUBLISH');
    const alias = props.topicAlias;
    // [MQTT-5-3.3.2-9] alias 0 or over our Topic Alias Maximum: 0x94
    if (alias !== undefined && (alias === 0 || alias > topicAliasMaximum)) return new PacketProblem(RC.TOPIC_ALIAS_INVALID, 'topic alias invalid');
  }
  const aliased = version === 5 && props?.topicAlias !== undefined && packet.topic.length === 0;
  // [MQTT-3.1.1-3.3.2-2] / [MQTT-5-3.3.2-2] a topic name, no wildcards
  if (!aliased && !isValidTopicName(packet.topic)) return new PacketProblem(RC.TOPIC_NAME_INVALID, 'invalid topic name');
  // [MQTT-5-3.3.2-14] a Response Topic is a topic name: wildcards in it are a protocol error
  if (props?.responseTopic !== undefined && !isValidTopicName(props.responseTopic)) return new PacketProblem(RC.PROTOCOL_ERROR, 'invalid response topic');
  if (version === 5 && props && (props.contentType !== undefined || props.userProperties !== undefined)) {
    const bad = controlCharacterProperty(props as Parameters<typeof controlCharacterProperty>[0]);
    if (bad !== undefined) return new PacketProblem(RC.MALFORMED_PACKET, `control character in the ${bad}`);
  }
  const id = packet.messageId ?? 0;
  // [MQTT-3.1.1-2.3.1-1] / [MQTT-5-2.2.1-3] a QoS 1/2 PUBLISH carries a non-zero packet
  // identifier. mqtt-packet reads one cut short by the Remaining Length as -1: malformed, and
  // never to be answered (the PUBACK or PUBREC would be malformed in turn)
  if (packet.qos > 0 && id < 1) {
    return id === 0 ? new PacketProblem(RC.PROTOCOL_ERROR, 'packet identifier 0') : new PacketProblem(RC.MALFORMED_PACKET, 'PUBLISH cut short in its packet identifier');
  }
  return undefined;
}

/** The rules of a SUBSCRIBE as a whole (each filter then gets its own code in SUBACK). */
export function checkSubscribe(packet: ISubscribePacket, version: Version): PacketProblem | undefined {
  // [MQTT-3.1.1-3.8.3-3] / [MQTT-5-3.8.3-2] at least one topic filter
  if (packet.subscriptions.length === 0) return new PacketProblem(RC.PROTOCOL_ERROR, 'SUBSCRIBE without a topic filter');
  // a control character in a filter: 0x8F for that filter on v5 (the broker's filter check);
  // 3.1.1 has no such code, and the string is one a receiver may treat as malformed [MQTT-5-1.5.4]
  if (version !== 5 && packet.subscriptions.some((s) => hasControlCharacter(s.topic))) return new PacketProblem(RC.MALFORMED_PACKET, 'control character in a topic filter');
  // the Subscription Identifier is 1 to 268,435,455: 0 is a protocol error [MQTT-5-3.8.2.1.2]
  if (packet.properties?.subscriptionIdentifier === 0) return new PacketProblem(RC.PROTOCOL_ERROR, 'subscription identifier 0');
  // [MQTT-5-3.8.3-4] No Local on a shared subscription is a protocol error
  if (packet.subscriptions.some((s) => s.nl === true && parseSharedFilter(s.topic))) return new PacketProblem(RC.PROTOCOL_ERROR, 'no local on a shared subscription');
  return undefined;
}

export function checkUnsubscribe(packet: IUnsubscribePacket, version: Version): PacketProblem | undefined {
  // [MQTT-3.1.1-3.10.3-2] / [MQTT-5-3.10.3-2] at least one topic filter
  if (packet.unsubscriptions.length === 0) return new PacketProblem(RC.PROTOCOL_ERROR, 'UNSUBSCRIBE without a topic filter');
  if (version !== 5 && packet.unsubscriptions.some(hasControlCharacter)) return new PacketProblem(RC.MALFORMED_PACKET, 'control character in a topic filter');
  return undefined;
}
