/**
 * One handler per packet kind (the model: aedes lib/handlers/, mosquitto handle_*.c). Each is a
 * short function over the narrow BrokerCore and the connection it came from; the connection
 * frames and decodes, and calls handlePacket for every packet.
 */
import type { Packet } from 'mqtt-packet';
import { RC } from '../../mqtt/reason-codes.js';
import { packetIdProblem } from '../../mqtt/validate.js';
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

/** Serve one packet read by mqtt/validate.ts readPacket (`frame`: its bytes). */
export function handlePacket(core: BrokerCore, client: MqttClient, packet: Packet, frame: Buffer): void {
  core.countPacket(packet.cmd, true);
  if (client.state === 'new') {
    if (packet.cmd !== 'connect') return client.protocolViolation(RC.PROTOCOL_ERROR, 'first packet must be CONNECT'); // [MQTT-5-3.1.0-1]
    return handleConnect(core, client, packet, frame);
  }
  const idProblem = packetIdProblem(packet);
  if (idProblem) return client.protocolViolation(idProblem.reasonCode, idProblem.reason);
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
      // [MQTT-5-3.1.0-2] a second CONNECT is a protocol error
      return client.protocolViolation(RC.PROTOCOL_ERROR, 'second CONNECT');
    default:
      return client.protocolViolation(RC.PROTOCOL_ERROR, `unexpected ${packet.cmd}`);
  }
}
