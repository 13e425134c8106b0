import type { IUnsubscribePacket } from 'mqtt-packet';
import { RC } from '../../mqtt/reason-codes.js';
import { hasControlCharacter } from '../../topics/validate.js';
import type { MqttClient } from '../client.js';
import type { BrokerCore } from '../core.js';

export function handleUnsubscribe(core: BrokerCore, client: MqttClient, packet: IUnsubscribePacket): void {
  // [MQTT-3.10.3-2] at least one topic filter
  if (packet.unsubscriptions.length === 0) return client.protocolViolation(RC.PROTOCOL_ERROR, 'UNSUBSCRIBE without a topic filter');
  if (!client.isV5 && packet.unsubscriptions.some(hasControlCharacter)) return client.protocolViolation(RC.MALFORMED_PACKET, 'control character in a topic filter');
  const session = client.session!;
  const codes = packet.unsubscriptions.map((topic) => {
    const sub = session.subscriptions.get(topic);
    if (!sub) return RC.NO_SUBSCRIPTION_EXISTED;
    session.subscriptions.delete(topic);
    core.removeSubscription(session, sub);
    return RC.SUCCESS;
  });
  // 3.1.1's UNSUBACK has no payload
  client.out.writePacket({ cmd: 'unsuback', messageId: packet.messageId!, granted: client.isV5 ? codes : [] });
}
