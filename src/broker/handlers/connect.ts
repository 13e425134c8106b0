import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import { messageProperties, type QoS } from '../../mqtt/message.js';
import { RC, reasonName, v3ConnackCode } from '../../mqtt/reason-codes.js';
import { checkPropertyBlocks } from '../../mqtt/properties.js';
import { isValidTopicName } from '../../topics/validate.js';
import type { MqttClient } from '../client.js';
import type { BrokerCore } from '../core.js';

/** What a CONNECT asks for, once its own checks passed (before authentication). */
interface ConnectTerms {
  clean: boolean;
  /** Client id assigned by us (v5 tells the client in CONNACK). */
  assigned: string | undefined;
}

/**
 * CONNECT: the checks of the packet itself, the client's limits and will, then the
 * authentication hooks (the one asynchronous step of a connection: reading is paused
 * meanwhile), the session, CONNACK, and what was queued for a resumed session.
 */
export function handleConnect(core: BrokerCore, client: MqttClient, packet: IConnectPacket, frame: Buffer): void {
  const terms = checkConnect(core, client, packet, frame);
  if (terms === undefined) return;
  client.state = 'authenticating';
  // stop reading while the (possibly slow) hooks decide: an unauthenticated peer must not
  // make us buffer what it pipelines behind its CONNECT; it is parsed once we answer
  client.pauseInput();
  core
    .authenticate(client, packet)
    .then((verdict) => {
      if (client.state !== 'authenticating') return; // closed meanwhile
      if (!verdict.ok) return void refuse(core, client, verdict.reasonCode, verdict.reasonString ?? reasonName(verdict.reasonCode));
      if (verdict.username !== undefined) client.username = verdict.username;
      openConnection(core, client, packet, terms);
    })
    .catch((err: unknown) => client.internalError(err, packet));
}

/** The CONNECT's own rules; undefined when it was refused (the connection is then closed). */
function checkConnect(core: BrokerCore, client: MqttClient, packet: IConnectPacket, frame: Buffer): ConnectTerms | undefined {
  const version = packet.protocolVersion ?? 4;
  client.protocolVersion = version;
  const props = packet.properties ?? {};

  // Malformed CONNECT flags the parser lets through: v5 answers CONNACK 0x81, 3.1.1 just closes
  const malformed = (reason: string): undefined => {
    if (version === 5) refuse(core, client, RC.MALFORMED_PACKET, reason);
    else client.protocolViolation(RC.MALFORMED_PACKET, reason);
    return undefined;
  };
  if (packet.will && (packet.will.qos ?? 0) > 2) return malformed('will QoS 3'); // [MQTT-3.1.2-14] (3.1.1) / [MQTT-5-3.1.2-12]
  const problem = version === 5 ? checkPropertyBlocks(frame) : undefined; // only v5 has properties
  if (problem !== undefined) return refuse(core, client, problem.reasonCode, problem.reason);
  if (version !== 5 && packet.password !== undefined && packet.username === undefined) {
    return malformed('password without user name'); // [MQTT-3.1.2-22] (3.1.1; allowed in 5.0)
  }

  let receiveMaximum = 65535;
  let maximumPacketSize = 268435460;
  let topicAliasMaximum = 0;
  if (version === 5) {
    // Enhanced authentication is not offered: 0x8C Bad authentication method (MQTT 5.0, 4.12)
    if (props.authenticationMethod !== undefined) return refuse(core, client, RC.BAD_AUTHENTICATION_METHOD, 'enhanced authentication is not supported');
    if (props.receiveMaximum !== undefined) receiveMaximum = props.receiveMaximum;
    if (props.maximumPacketSize !== undefined) maximumPacketSize = props.maximumPacketSize;
    if (props.topicAliasMaximum !== undefined) topicAliasMaximum = props.topicAliasMaximum;
    // Receive Maximum and Maximum Packet Size of 0 are protocol errors (MQTT 5.0, 3.1.2.11.3 and 3.1.2.11.4)
    if (receiveMaximum === 0 || maximumPacketSize === 0) return refuse(core, client, RC.PROTOCOL_ERROR, 'receive maximum and maximum packet size must not be 0');
  }
  client.out.setClientLimits(receiveMaximum, maximumPacketSize, topicAliasMaximum);

  let clientId = packet.clientId ?? '';
  let assigned: string | undefined;
  const clean = packet.clean !== false;
  if (clientId.length === 0) {
    // [MQTT-3.1.3-8] 3.1.1 with clean session 0 and no id: identifier rejected
    if (version !== 5 && !clean) return refuse(core, client, RC.CLIENT_IDENTIFIER_NOT_VALID, 'empty client id needs a clean session');
    clientId = core.assignClientId();
    if (version === 5) assigned = clientId; // [MQTT-5-3.2.2-16] Assigned Client Identifier
  }
  client.clientId = clientId;
  client.username = packet.username;

  if (packet.will) {
    const w = packet.will;
    const wp = w.properties ?? {};
    if (!isValidTopicName(w.topic)) return refuse(core, client, RC.TOPIC_NAME_INVALID, 'invalid will topic');
    // MQTT 5.0 3.1.3.2.5: the will's Response Topic is a topic name, no wildcards (as [MQTT-5-3.3.2-14])
    if (wp.responseTopic !== undefined && !isValidTopicName(wp.responseTopic)) return refuse(core, client, RC.PROTOCOL_ERROR, 'invalid will response topic');
    const payload = typeof w.payload === 'string' ? Buffer.from(w.payload) : w.payload;
    const properties = version === 5 ? messageProperties(wp) : undefined;
    client.will = {
      topic: w.topic,
      payload,
      qos: (w.qos ?? 0) as QoS,
      retain: w.retain === true,
      senderId: clientId,
      origin: 'will',
      ...(properties ? { properties } : {}),
    };
    client.willExpirySeconds = wp.messageExpiryInterval;
    client.willDelay = wp.willDelayInterval ?? 0;
  }
  return { clean, assigned };
}

/** Authenticated: session, keep alive, CONNACK, the hooks, then what the session holds. */
function openConnection(core: BrokerCore, client: MqttClient, packet: IConnectPacket, terms: ConnectTerms): void {
  const version = client.protocolVersion;
  const props = packet.properties ?? {};
  // Session Expiry: v5 property; 3.1.1 clean session 0 means "keep it"
  let expiry = version === 5 ? (props.sessionExpiryInterval ?? 0) : terms.clean ? 0 : 0xffffffff;
  const cap = core.config.maxSessionExpiry;
  const expiryCapped = expiry > cap;
  if (expiryCapped) expiry = cap;

  let keepAlive = packet.keepalive ?? 0;
  let serverKeepAlive: number | undefined;
  const maxKeepAlive = core.config.maxKeepAlive;
  if (maxKeepAlive > 0 && (keepAlive === 0 || keepAlive > maxKeepAlive) && version === 5) {
    keepAlive = maxKeepAlive;
    serverKeepAlive = keepAlive; // [MQTT-5-3.2.2-21] the client must use the Server Keep Alive
  }
  client.keepAliveMs = keepAlive * 1000;

  const { session, present } = core.openSession(client, terms.clean, expiry);
  client.session = session;
  client.state = 'open';
  client.connectedAt = Date.now();

  if (version === 5) {
    const properties: NonNullable<IConnackPacket['properties']> = {
      receiveMaximum: core.config.maxInflight,
      maximumPacketSize: core.config.maxPacketSize,
      topicAliasMaximum: core.config.topicAliasMaximum,
      retainAvailable: true,
      wildcardSubscriptionAvailable: true,
      subscriptionIdentifiersAvailable: true,
      sharedSubscriptionAvailable: true,
    };
    if (terms.assigned !== undefined) properties.assignedClientIdentifier = terms.assigned;
    if (serverKeepAlive !== undefined) properties.serverKeepAlive = serverKeepAlive;
    if (expiryCapped) properties.sessionExpiryInterval = expiry;
    client.out.writePacket({ cmd: 'connack', reasonCode: 0, sessionPresent: present, properties });
  } else {
    client.out.writePacket({ cmd: 'connack', returnCode: 0, sessionPresent: present });
  }
  core.clientOnline(client);
  client.out.resendInflight();
  client.out.pump();
  client.resumeInput(); // what arrived behind the CONNECT
}

/** CONNACK with a failure code, then close [MQTT-3.2.2-5] (3.1.1) / [MQTT-5-3.2.2-7]. */
function refuse(core: BrokerCore, client: MqttClient, reasonCode: number, reason: string): undefined {
  core.log.info({ clientId: client.clientId, address: client.remoteAddress, reason }, 'connection refused');
  if (client.isV5) {
    client.out.writePacket({ cmd: 'connack', reasonCode, sessionPresent: false, properties: { reasonString: reason } });
  } else {
    client.out.writePacket({ cmd: 'connack', returnCode: v3ConnackCode(reasonCode), sessionPresent: false });
  }
  client.will = undefined;
  client.close('protocol');
  return undefined;
}
