import { isUtf8 } from 'node:buffer';
import type { IPublishPacket } from 'mqtt-packet';
import { messageProperties, type Message, type QoS } from '../../mqtt/message.js';
import { RC } from '../../mqtt/reason-codes.js';
import { checkPublish } from '../../mqtt/validate.js';
import type { MqttClient } from '../client.js';
import type { BrokerCore, ForwardAcks } from '../core.js';

/**
 * PUBLISH from a client: topic alias, checks, rate limits, QoS 2 receipt, authorization, then
 * routing and the PUBACK / PUBREC. Synchronous: the hot path of the broker. It creates no
 * closures (the waits that need one are in functions of their own): a closure capturing its
 * variables would make every call allocate a context for them, waited or not.
 */
export function handlePublish(core: BrokerCore, client: MqttClient, packet: IPublishPacket): void {
  const props = packet.properties;
  const v5 = client.isV5;
  const problem = checkPublish(packet, client.protocolVersion, core.config.topicAliasMaximum);
  if (problem !== undefined) return client.protocolViolation(problem.reasonCode, problem.reason);
  let topic = packet.topic;
  if (v5 && props?.topicAlias !== undefined) {
    // a topic with an alias sets it; an empty topic uses the one set before [MQTT-5-3.3.2.3.4]
    const alias = props.topicAlias;
    if (topic.length > 0) (client.aliasesIn ??= new Map()).set(alias, topic);
    else {
      const known = client.aliasesIn?.get(alias);
      if (known === undefined) return client.protocolViolation(RC.PROTOCOL_ERROR, 'unknown topic alias');
      topic = known;
    }
  }
  const qos = packet.qos;
  const id = packet.messageId ?? 0;
  const session = client.session!;

  const limits = core.limits;
  if (limits?.enabled) {
    const now = Date.now();
    const verdict = limits.onPublish(client.clientId, packet.length ?? packet.payload.length, now);
    if (verdict === 'rate') return client.disconnect(RC.MESSAGE_RATE_TOO_HIGH, 'protocol', 'message rate too high');
    if (verdict === 'quota') return client.disconnect(RC.QUOTA_EXCEEDED, 'protocol', 'byte rate quota exceeded');
    // over the rate: stop reading until the client is back within it (TCP pushes back)
    if (verdict === 'slow') client.throttle(limits.resumeDelay(client.clientId, now));
  }

  if (qos === 2) {
    if (session.incomingQos2.has(id)) return answerResentQos2(client, id);
    // [MQTT-5-3.3.4-7] more unacknowledged QoS 2 than our Receive Maximum: 0x93
    if (session.incomingQos2.size >= core.config.maxInflight) return client.protocolViolation(RC.RECEIVE_MAXIMUM_EXCEEDED, 'receive maximum exceeded');
  }

  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
  const message: Message = { topic, payload, qos, retain: packet.retain, senderId: client.clientId };
  if (v5 && props) {
    const properties = messageProperties(props);
    if (properties) message.properties = properties;
    if (props.messageExpiryInterval !== undefined) message.expiresAt = Date.now() + props.messageExpiryInterval * 1000;
    // [MQTT-5-3.3.2-4] Payload Format Indicator 1: the payload must be UTF-8
    if (props.payloadFormatIndicator === true && !isUtf8(payload)) return ackPublish(client, qos, id, RC.PAYLOAD_FORMAT_INVALID);
  }
  core.stats.publishReceived++;

  const verdict = core.authorizePublish(client, message);
  if (verdict !== 0) {
    core.countDrop('not_authorized');
    // 3.1.1 has no way to say no: acknowledge and drop [MQTT-3.1.1-3.3.5-2]
    return ackPublish(client, qos, id, v5 ? verdict : 0);
  }
  const durable = core.durable;
  // [durable] no room to store it: refused (0x97; 3.1.1 has no way to say no, so no ack)
  if (durable && qos > 0 && durable.full && (message.retain || core.needsStorage(message))) return refuseStorage(core, client, qos, id);
  if (qos === 2) {
    session.receivedQos2(id);
    // durable: stored with the message, so a crash before the session record is written cannot
    // make a resent PUBLISH with this id a second message
    if (durable) message.inboundQos2Id = id;
  }
  const writes = durable?.writes ?? 0;
  const fwd = core.forwardAcks;
  const sent = fwd?.sent ?? 0;
  const unsent = fwd?.unsent ?? 0;
  const matched = core.route(message, client);
  const code = matched || !v5 ? 0 : RC.NO_MATCHING_SUBSCRIBERS;
  // [cluster] subscribers on other nodes: acknowledged once NATS has the message; refused when
  // it could not be sent (this node cut off from NATS: the client keeps it and sends it again)
  if (fwd && qos > 0 && fwd.unsent !== unsent) return refuseForward(core, client, qos, id);
  // [cluster] a persistent session somewhere wants it: acknowledged once the replicated
  // stream has it (a JetStream quorum) and the nodes it was forwarded to have it
  const stored = fwd && qos > 0 ? fwd.stored?.(message) : undefined;
  if (stored) return ackWhenReplicated(core, client, qos, id, writes, fwd!, stored);
  if (fwd && qos > 0 && fwd.sent !== sent) return ackWhenForwarded(core, client, qos, id, code, writes, fwd);
  ackWhenStored(core, client, qos, id, code, writes);
}

/** A resent QoS 2 PUBLISH we already own: answer, do not deliver twice [MQTT-5-4.3.3-10] (durable: once the id is on disk, as for the first PUBREC). */
function answerResentQos2(client: MqttClient, id: number): void {
  const pubrec = () => client.out.writePacket({ cmd: 'pubrec', messageId: id });
  if (!client.session!.afterStored(() => client.state === 'open' && pubrec())) pubrec();
}

/** [cluster] a persistent session somewhere wants it: acknowledged once the replicated stream has it and the nodes it was forwarded to have it. */
function ackWhenReplicated(core: BrokerCore, client: MqttClient, qos: QoS, id: number, writes: number, fwd: ForwardAcks, stored: Promise<boolean>): void {
  void stored.then((ok) => {
    if (client.state !== 'open') return;
    if (!ok) return refuseForward(core, client, qos, id);
    fwd.onSent((err) => {
      if (client.state !== 'open') return;
      if (err) refuseForward(core, client, qos, id);
      else ackWhenStored(core, client, qos, id, 0, writes);
    });
  });
}

/** [cluster] forwarded to subscribers on other nodes: acknowledged once NATS has it. */
function ackWhenForwarded(core: BrokerCore, client: MqttClient, qos: QoS, id: number, code: number, writes: number, fwd: ForwardAcks): void {
  fwd.onSent((err) => {
    if (client.state !== 'open') return; // gone: the client sends it again on its next connection
    if (err) refuseForward(core, client, qos, id);
    else ackWhenStored(core, client, qos, id, code, writes);
  });
}

/**
 * [durable] what was stored for the message (durable.writes moved past `writes`) is
 * acknowledged once its batch is on disk; QoS 0 and messages nothing durable needed are
 * answered at once.
 */
function ackWhenStored(core: BrokerCore, client: MqttClient, qos: QoS, id: number, code: number, writes: number): void {
  const durable = core.durable;
  if (durable !== undefined && qos === 2 && pubrecWhenStored(core, client, id, code, writes)) return;
  if (durable && qos > 0 && durable.writes !== writes) {
    durable.flushUrgent();
    // the hot path of durable QoS 1: no closure per message, the packet rides in the argument
    durable.onDurable((client.storedAck ??= storedAck(core, client)), id | (qos << 16) | (code << 18));
  } else ackPublish(client, qos, id, code);
}

/**
 * QoS 2 to a persistent session: PUBREC once the message and the session record naming its
 * packet id are on disk, or a crash could take a resent PUBLISH for a new message. False: the
 * session stores nothing (answer now).
 */
function pubrecWhenStored(core: BrokerCore, client: MqttClient, id: number, code: number, writes: number): boolean {
  return client.session!.afterStored((err) => {
    if (client.state !== 'open') return;
    if (err && core.durable!.writes !== writes) refuseStorage(core, client, 2, id);
    else ackPublish(client, 2, id, code);
  });
}

/** The connection's onDurable callback: the PUBACK/PUBREC packed in `arg` (id, qos << 16, reason code << 18). */
function storedAck(core: BrokerCore, client: MqttClient): (err: Error | undefined, arg: number) => void {
  return (err, arg) => {
    if (client.state !== 'open') return; // gone: the client sends it again on its next connection
    const id = arg & 0xffff;
    const qos = ((arg >>> 16) & 3) as QoS;
    if (err) refuseStorage(core, client, qos, id);
    else ackPublish(client, qos, id, arg >>> 18);
  };
}

/** Cluster: the message could not reach NATS. v5 answers 0x80; 3.1.1 sends no ack, so the client retries. */
function refuseForward(core: BrokerCore, client: MqttClient, qos: QoS, id: number): void {
  core.countDrop('cluster_unreachable');
  if (qos === 2) client.session?.releasedQos2(id);
  if (client.isV5) ackPublish(client, qos, id, RC.UNSPECIFIED_ERROR);
}

/** Storage is full: v5 answers 0x97 (Quota exceeded); 3.1.1 sends no ack, so the client retries. */
function refuseStorage(core: BrokerCore, client: MqttClient, qos: QoS, id: number): void {
  core.countDrop('storage_full');
  if (qos === 2) client.session?.releasedQos2(id);
  if (client.isV5) ackPublish(client, qos, id, RC.QUOTA_EXCEEDED);
}

/** PUBACK (QoS 1) or PUBREC (QoS 2) with the reason code (v5 only; 3.1.1 acks carry none). */
function ackPublish(client: MqttClient, qos: QoS, id: number, reasonCode: number): void {
  if (qos === 0) return;
  const cmd = qos === 1 ? 'puback' : 'pubrec';
  if (client.isV5 && reasonCode !== 0) client.out.writePacket({ cmd, messageId: id, reasonCode });
  else client.out.writePacket({ cmd, messageId: id });
}
