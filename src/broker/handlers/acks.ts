import type { IPubackPacket, IPubcompPacket, IPubrecPacket, IPubrelPacket } from 'mqtt-packet';
import { RC } from '../../mqtt/reason-codes.js';
import type { MqttClient } from '../client.js';

/**
 * Acknowledgements. PUBACK and PUBCOMP end a delivery of ours (QoS 1, QoS 2) and free a slot
 * of the inflight window; PUBREC moves a QoS 2 delivery on to PUBREL; PUBREL ends a QoS 2
 * PUBLISH the client sent us. An ack for nothing we sent is ignored (the spec allows it).
 */
export function handlePuback(client: MqttClient, packet: IPubackPacket): void {
  const session = client.session!;
  const entry = session.inflight.get(packet.messageId!);
  if (!entry || entry.qos !== 1) return;
  session.removeInflight(entry.packetId);
  client.out.pump();
}

export function handlePubcomp(client: MqttClient, packet: IPubcompPacket): void {
  const session = client.session!;
  const entry = session.inflight.get(packet.messageId!);
  if (!entry || entry.state !== 'pubrel') return;
  session.removeInflight(entry.packetId);
  client.out.pump();
}

export function handlePubrec(client: MqttClient, packet: IPubrecPacket): void {
  const id = packet.messageId!;
  const session = client.session!;
  const entry = session.inflight.get(id);
  if (!entry || entry.qos !== 2) {
    if (client.isV5) client.out.writePacket({ cmd: 'pubrel', messageId: id, reasonCode: RC.PACKET_IDENTIFIER_NOT_FOUND });
    else client.out.writePacket({ cmd: 'pubrel', messageId: id });
    return;
  }
  if (packet.reasonCode !== undefined && packet.reasonCode >= 0x80) {
    // [MQTT-5-4.3.3] a PUBREC with a failure code ends the exchange: no PUBREL
    session.removeInflight(id);
    client.out.pump();
    return;
  }
  session.setPubrel(entry);
  // durable: PUBREL once the PUBREC is on disk, or a restart would send the PUBLISH again after
  // the client released (and forgot) its packet id
  const pubrel = () => client.out.writePacket({ cmd: 'pubrel', messageId: id });
  if (!session.afterStored(() => client.state === 'open' && client.session === session && pubrel())) pubrel();
}

export function handlePubrel(client: MqttClient, packet: IPubrelPacket): void {
  const id = packet.messageId!;
  const session = client.session!;
  const known = session.releasedQos2(id);
  const pubcomp = () => {
    if (client.isV5 && !known) client.out.writePacket({ cmd: 'pubcomp', messageId: id, reasonCode: RC.PACKET_IDENTIFIER_NOT_FOUND });
    else client.out.writePacket({ cmd: 'pubcomp', messageId: id });
  };
  // durable: PUBCOMP once the id is forgotten on disk too, so the client may use it again
  if (!known || !session.afterStored(() => client.state === 'open' && pubcomp())) pubcomp();
}
