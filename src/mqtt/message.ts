import type { QoS, UserProperties } from 'mqtt-packet';

export type { QoS, UserProperties };

/** MQTT 5 properties that travel with an application message. */
export interface MessageProperties {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: UserProperties;
}

/**
 * An application message as the broker routes it. One instance is shared by every
 * subscriber it is delivered to (stored once, however many consumers).
 */
export interface Message {
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  properties?: MessageProperties;
  /** Absolute expiry time (ms since epoch) from Message Expiry Interval, if any. */
  expiresAt?: number;
  /** Client id of the publisher, or undefined for messages the broker itself publishes. */
  senderId?: string;
  /**
   * Who made it inside the broker ("rules", "state", "$SYS", "will"), for messages not
   * received from a client. Services use it to avoid feeding their own output back.
   */
  origin?: string;
  /**
   * A QoS 2 PUBLISH from a client: its packet id. Durable storage writes it with the message,
   * so that after a crash a resent PUBLISH with that id is not taken for a new message.
   */
  inboundQos2Id?: number;
  /**
   * Encoded QoS 0 PUBLISH packets for deliveries without per-subscriber properties,
   * indexed by (v5 ? 2 : 0) + (retain ? 1 : 0): fan-out encodes each form once. The broker
   * creates it for a message routed to several subscribers (a message for one is encoded
   * into that connection's output instead) and fills it lazily; services leave it alone.
   */
  wire?: (Buffer | undefined)[];
  /**
   * Set when encoding the message for a receiver failed (a bug, or a value that should never
   * have been accepted): no receiver is sent it again, and a retained copy is removed, so one
   * bad stored item cannot fail every later subscriber (Broker.quarantine).
   */
  quarantined?: boolean;
  /**
   * Cluster mode: the node that forwarded this message here. It was already seen by the
   * services of the node where it arrived (rules, retained set), so here it is only delivered.
   */
  fromNode?: string;
  /**
   * Cluster mode: when set, only the shared subscriptions named here (shareKey(group, filter))
   * deliver this message on this node; the cluster gave the other groups to other nodes, so a
   * `$share` group receives each message once cluster-wide.
   */
  shareGroups?: ReadonlySet<string>;
  /**
   * Cluster mode: the message's sequence in the cluster's replicated session-message stream
   * (src/cluster/sessions.ts), set once JetStream has it; persistent sessions on any node
   * track their position by it.
   */
  clusterSeq?: number;
}

/**
 * Bridges between brokers (docs/bridges.md, No loops): the v5 user property a bridge adds to
 * what it carries, the ids of the brokers the message has crossed bridges at, comma-separated;
 * and the one a bridge's CONNECT carries (its broker's id) and an Edge Data Broker's CONNACK
 * answers (its own).
 */
export const BRIDGE_PATH_PROPERTY = 'edb-bridge-path';
export const BROKER_ID_PROPERTY = 'edb-broker-id';

/** The name of one shared subscription (`$share/{group}/{filter}`) in Message.shareGroups. */
export function shareKey(group: string, filter: string): string {
  return `${group}\u0000${filter}`;
}

/** The application-message properties of a PUBLISH (or a will), or undefined when it has none. */
export function messageProperties(p: {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: UserProperties;
}): MessageProperties | undefined {
  let out: MessageProperties | undefined;
  if (p.payloadFormatIndicator !== undefined) (out ??= {}).payloadFormatIndicator = p.payloadFormatIndicator;
  if (p.contentType !== undefined) (out ??= {}).contentType = p.contentType;
  if (p.responseTopic !== undefined) (out ??= {}).responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) (out ??= {}).correlationData = p.correlationData;
  if (p.userProperties !== undefined) (out ??= {}).userProperties = p.userProperties;
  return out;
}
