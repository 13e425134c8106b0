import type { IUnsubscribePacket } from 'mqtt-packet';
import { RC } from '../../mqtt/reason-codes.js';
import { checkUnsubscribe } from '../../mqtt/validate.js';
import type { MqttClient } from '../client.js';
import type { BrokerCore } from '../core.js';

export function handleUnsubscribe(core: BrokerCore, client: MqttClient, packet: IUnsubscribePacket): void {
  const problem = checkUnsubscribe(packet, client.protocolVersion);
  if (problem !== undefined) return client.protocolViolation(problem.reasonCode, problem.reason);
  const session = client.session!;
  const codes = packet.unsubscriptions.map((topic) => {
    const sub = session.subscriptions.get(topic);
    if (!sub) return RC.NO_SUBSCRIPTION_EXISTED;
    session.deleteSubscription(topic);
    core.removeSubscription(session, sub);
    return RC.SUCCESS;
  });
  // 3.1.1's UNSUBACK has no payload
  client.out.writePacket({ cmd: 'unsuback', messageId: packet.messageId!, granted: client.isV5 ? codes : [] });
}
