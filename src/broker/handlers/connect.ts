import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import { BROKER_ID_PROPERTY, messageProperties, type QoS } from '../../mqtt/message.js';
import { RC, reasonName, v3ConnackCode } from '../../mqtt/reason-codes.js';
import { checkConnect } from '../../mqtt/validate.js';
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
  const terms = acceptConnect(core, client, packet, frame);
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
      // [cluster] a persistent session held elsewhere in the cluster is brought here first
      const loader = core.sessionLoader;
      if (!loader) return openConnection(core, client, packet, terms);
      return loader.load(client.clientId, terms.clean).then(
        () => {
          if (client.state === 'authenticating') openConnection(core, client, packet, terms);
        },
        (err: unknown) => {
          core.log.warn({ err: (err as Error).message, clientId: client.clientId }, 'cluster: could not bring the session from the cluster; it starts here as the node holds it');
          if (client.state === 'authenticating') openConnection(core, client, packet, terms);
        },
      );
    })
    .catch((err: unknown) => client.internalError(err, packet));
}

/** The CONNECT's own rules, the client's limits and will; undefined when it was refused (the connection is then closed). */
function acceptConnect(core: BrokerCore, client: MqttClient, packet: IConnectPacket, frame: Buffer): ConnectTerms | undefined {
  const version = packet.protocolVersion ?? 4;
  client.protocolVersion = version;
  const problem = checkConnect(packet, frame);
  if (problem !== undefined) {
    // a malformed 3.1.1 CONNECT is not answered: the connection is closed
    if (version !== 5 && problem.reasonCode === RC.MALFORMED_PACKET) return void client.protocolViolation(problem.reasonCode, problem.reason);
    return refuse(core, client, problem.reasonCode, problem.reason);
  }
  const props = packet.properties ?? {};
  client.out.setClientLimits(props.receiveMaximum ?? 65535, props.maximumPacketSize ?? 268435460, props.topicAliasMaximum ?? 0);

  let clientId = packet.clientId ?? '';
  let assigned: string | undefined;
  if (clientId.length === 0) {
    clientId = core.assignClientId();
    if (version === 5) assigned = clientId; // [MQTT-5-3.2.2-16] Assigned Client Identifier
  }
  client.clientId = clientId;
  client.username = packet.username;

  if (packet.will) {
    const w = packet.will;
    const wp = w.properties ?? {};
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
  return { clean: packet.clean !== false, assigned };
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
    // another broker's bridge tells its id and asks ours (loops over rings of bridges: docs/bridges.md)
    if (core.brokerId !== undefined && props.userProperties?.[BROKER_ID_PROPERTY] !== undefined) properties.userProperties = { [BROKER_ID_PROPERTY]: core.brokerId };
    client.out.writePacket({ cmd: 'connack', reasonCode: 0, sessionPresent: present, properties });
  } else {
    client.out.writePacket({ cmd: 'connack', returnCode: v3ConnackCode(RC.SUCCESS), sessionPresent: present });
  }
  core.clientOnline(client);
  client.out.resendInflight();
  client.out.pump();
  client.resumeInput(); // what arrived behind the CONNECT
}

/** CONNACK with a failure code, then close [MQTT-3.1.1-3.2.2-5] / [MQTT-5-3.2.2-7]. */
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
