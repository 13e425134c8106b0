import { RC } from '../../mqtt/reason-codes.js';
import type { MqttClient } from '../client.js';

/**
 * AUTH. No enhanced authentication method is offered (CONNECT with one is refused, 0x8C), so
 * any AUTH is a protocol error [MQTT-5-4.12.0-1].
 */
export function handleAuth(client: MqttClient): void {
  client.protocolViolation(RC.PROTOCOL_ERROR, 'AUTH without an authentication method');
}
