import type { ISubscribePacket, ISubscription } from 'mqtt-packet';
import type { QoS } from '../../mqtt/message.js';
import { RC } from '../../mqtt/reason-codes.js';
import type { Delivery, Subscription } from '../../session/session.js';
import { isValidTopicFilter, parseSharedFilter } from '../../topics/validate.js';
import { checkSubscribe } from '../../mqtt/validate.js';
import type { MqttClient } from '../client.js';
import type { BrokerCore } from '../core.js';

/**
 * SUBSCRIBE: each filter validated, authorized and counted against the subscription limit,
 * stored in the session and the router, then SUBACK and the retained messages that match.
 */
export function handleSubscribe(core: BrokerCore, client: MqttClient, packet: ISubscribePacket): void {
  const problem = checkSubscribe(packet, client.protocolVersion);
  if (problem !== undefined) return client.protocolViolation(problem.reasonCode, problem.reason);
  const subId = packet.properties?.subscriptionIdentifier;
  const retained: Delivery[] = [];
  const codes = packet.subscriptions.map((s) => subscribeOne(core, client, s, subId, retained));
  const granted = client.isV5 ? codes : codes.map((c) => (c >= 0x80 ? 0x80 : c));
  const session = client.session!;
  const durable = core.durable;
  if (durable && session.expiryInterval > 0) {
    // [durable] a persistent session: its subscriptions and the retained messages they get
    // are on disk before the SUBACK says so
    const reserve = (list: Delivery[]): void => {
      for (let i = 0; i < list.length; i++) list[i] = durable.reserveRetained(session, list[i]!);
      durable.flushSessions();
      durable.onDurable(() => {
        // gone meanwhile: the retained messages wait in its session for the next connection
        if (client.state !== 'open' || client.session !== session) {
          for (const d of list) if (d.qos > 0) session.enqueue(d);
          return;
        }
        client.out.writePacket({ cmd: 'suback', messageId: packet.messageId!, granted });
        for (const d of list) client.out.deliverRetained(d);
      });
    };
    // cluster mode: the retained messages go to the replicated session stream first
    const prepared = retained.length > 0 ? durable.prepareRetained?.(session, retained) : undefined;
    if (prepared) void prepared.then(reserve, () => reserve(retained));
    else reserve(retained);
    return;
  }
  client.out.writePacket({ cmd: 'suback', messageId: packet.messageId!, granted });
  // retained messages follow the SUBACK [MQTT-5-3.3.1-9] (Retain Handling, below)
  for (const d of retained) client.out.deliverRetained(d);
}

/** One filter of a SUBSCRIBE: the code for the SUBACK; retained messages to send are pushed to `retained`. */
function subscribeOne(core: BrokerCore, client: MqttClient, s: ISubscription, subscriptionId: number | undefined, retained: Delivery[]): number {
  const session = client.session!;
  const shared = parseSharedFilter(s.topic);
  if (shared === null || (shared === undefined && !isValidTopicFilter(s.topic))) return RC.TOPIC_FILTER_INVALID;
  const filter = shared ? shared.filter : s.topic;
  const granted = core.authorizeSubscribe(client, s.topic, Math.min(s.qos, 2) as QoS);
  if (granted >= 0x80) return granted;
  const existed = session.subscriptions.has(s.topic);
  if (!existed && core.limits && !core.limits.subscriptionAllowed(session.subscriptions.size)) return RC.QUOTA_EXCEEDED; // EDB_MAX_SUBSCRIPTIONS reached
  const sub: Subscription = {
    topic: s.topic,
    qos: granted as QoS,
    noLocal: s.nl === true,
    retainAsPublished: s.rap === true,
    retainHandling: s.rh ?? 0,
    filter,
    ...(subscriptionId !== undefined ? { subscriptionIdentifier: subscriptionId } : {}),
    ...(shared ? { shareGroup: shared.group } : {}),
  };
  // [MQTT-5-3.8.4-3] a subscription to the same filter replaces the old one
  session.setSubscription(s.topic, sub);
  core.addSubscription(session, sub);
  core.subscribed(client, s.topic, granted as QoS);
  // [MQTT-5-3.3.1-9] [MQTT-5-3.3.1-10] [MQTT-5-3.3.1-11] Retain Handling 0: always, 1: only for a new subscription, 2: never;
  // shared subscriptions get no retained messages [MQTT-5-4.8.2]
  if (!shared && (sub.retainHandling === 0 || (sub.retainHandling === 1 && !existed))) {
    for (const m of core.retained.match(filter)) {
      if (!core.mayDeliver(client, m)) continue;
      retained.push({ message: m, qos: Math.min(m.qos, granted) as QoS, retain: true, subscriptionIds: subscriptionId !== undefined ? [subscriptionId] : undefined });
    }
  }
  return granted;
}
