import type { IDisconnectPacket } from 'mqtt-packet';
import { RC } from '../../mqtt/reason-codes.js';
import type { MqttClient } from '../client.js';
import type { BrokerCore } from '../core.js';

/** DISCONNECT from the client: a last Session Expiry change, the will kept or discarded, close. */
export function handleDisconnect(core: BrokerCore, client: MqttClient, packet: IDisconnectPacket): void {
  const session = client.session!;
  const newExpiry = packet.properties?.sessionExpiryInterval;
  if (newExpiry !== undefined) {
    // [MQTT-5-3.14.2-2] a session that was to end with the connection cannot be extended here
    if (session.expiryInterval === 0 && newExpiry !== 0) return client.protocolViolation(RC.PROTOCOL_ERROR, 'session expiry set on DISCONNECT');
    session.expiryInterval = Math.min(newExpiry, core.config.maxSessionExpiry);
  }
  // [MQTT-5-3.14.4-3] only a normal DISCONNECT (0x00; 3.1.1 has no code) discards the will;
  // 0x04 and error codes leave it to be published [MQTT-5-3.1.2-10]
  if ((packet.reasonCode ?? RC.SUCCESS) === RC.SUCCESS) client.will = undefined;
  client.close('disconnect');
}
