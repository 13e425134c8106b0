/**
 * One handler per packet kind (the model: aedes lib/handlers/, mosquitto handle_*.c). Each is a
 * short function over the narrow BrokerCore and the connection it came from; the connection
 * frames and decodes, and calls handlePacket for every packet.
 */
import type { Packet } from 'mqtt-packet';
import { RC } from '../../mqtt/reason-codes.js';
import { malformedString } from '../../mqtt/strings.js';
import type { MqttClient } from '../client.js';
import type { BrokerCore } from '../core.js';
import { handlePuback, handlePubcomp, handlePubrec, handlePubrel } from './acks.js';
import { handleAuth } from './auth.js';
import { handleConnect } from './connect.js';
import { handleDisconnect } from './disconnect.js';
import { handlePingreq } from './ping.js';
import { handlePublish } from './publish.js';
import { handleSubscribe } from './subscribe.js';
import { handleUnsubscribe } from './unsubscribe.js';

const NEEDS_PACKET_ID = new Set(['puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'unsubscribe']);

export function handlePacket(core: BrokerCore, client: MqttClient, packet: Packet, frame: Buffer): void {
  core.countPacket(packet.cmd, true);
  // [MQTT-1.5.4-1/2] a string that is not well-formed UTF-8, or holds U+0000, makes the packet malformed
  const bad = malformedString(packet, frame);
  if (bad) return client.protocolViolation(RC.MALFORMED_PACKET, `${bad} is not valid UTF-8 or contains U+0000`);
  if (client.state === 'new') {
    if (packet.cmd !== 'connect') return client.protocolViolation(RC.PROTOCOL_ERROR, 'first packet must be CONNECT'); // [MQTT-3.1.0-1]
    return handleConnect(core, client, packet, frame);
  }
  // [MQTT-2.2.1-3] acks, SUBSCRIBE and UNSUBSCRIBE carry a non-zero packet identifier;
  // mqtt-packet reads a missing one as -1, which must not be answered (the reply would be truncated)
  if (NEEDS_PACKET_ID.has(packet.cmd) && !((packet.messageId ?? 0) >= 1)) {
    // missing: the packet is cut short (malformed); present but 0: parsed, yet not allowed (protocol error)
    if (packet.messageId === 0) return client.protocolViolation(RC.PROTOCOL_ERROR, `${packet.cmd} with packet identifier 0`);
    return client.protocolViolation(RC.MALFORMED_PACKET, `${packet.cmd} without a packet identifier`);
  }
  switch (packet.cmd) {
    case 'publish':
      return handlePublish(core, client, packet);
    case 'puback':
      return handlePuback(client, packet);
    case 'pubrec':
      return handlePubrec(client, packet);
    case 'pubrel':
      return handlePubrel(client, packet);
    case 'pubcomp':
      return handlePubcomp(client, packet);
    case 'subscribe':
      return handleSubscribe(core, client, packet);
    case 'unsubscribe':
      return handleUnsubscribe(core, client, packet);
    case 'pingreq':
      return handlePingreq(client);
    case 'disconnect':
      return handleDisconnect(core, client, packet);
    case 'auth':
      return handleAuth(client);
    case 'connect':
      // [MQTT-3.1.0-2] a second CONNECT is a protocol error
      return client.protocolViolation(RC.PROTOCOL_ERROR, 'second CONNECT');
    default:
      return client.protocolViolation(RC.PROTOCOL_ERROR, `unexpected ${packet.cmd}`);
  }
}
