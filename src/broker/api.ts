import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { ConnectionAcceptor, TransportKind } from '../transport/connection.js';
import type { BrokerHooks, ClientInfo } from './hooks.js';
import type { Message, QoS } from '../mqtt/message.js';

/** One row of `/api/clients` and `edb clients`. */
export interface ClientSummary {
  clientId: string;
  username: string | undefined;
  protocolVersion: 3 | 4 | 5;
  transport: TransportKind;
  remoteAddress: string;
  connectedAt: number;
  subscriptions: number;
  queued: number;
  inflight: number;
}

/** One row of `/api/subscriptions` and `edb subscriptions`. */
export interface SubscriptionSummary {
  clientId: string;
  filter: string;
  qos: QoS;
  shareGroup?: string;
  noLocal?: boolean;
  retainAsPublished?: boolean;
  subscriptionIdentifier?: number;
  online: boolean;
}

/** Counters, read by $SYS, /metrics and the status page. Monotonic unless noted. */
export interface BrokerStats {
  startedAt: number;
  connectionsTotal: number;
  /** Gauge. */
  clientsConnected: number;
  /** PUBLISH from clients only (not $SYS, rule outputs, state-store answers or wills). */
  messagesReceived: number;
  /** Messages the broker published itself, by origin: "sys", "rules", "state", "will", ... */
  messagesPublishedByBroker: Record<string, number>;
  messagesSent: number;
  bytesReceived: number;
  bytesSent: number;
  publishReceived: number;
  publishSent: number;
  /** Packets by type received / sent ("publish", "subscribe", ...). */
  packetsReceived: Record<string, number>;
  packetsSent: Record<string, number>;
  /** Dropped messages by reason ("queue_full", "expired", "offline_queue_full", "too_large", "not_authorized"). */
  dropped: Record<string, number>;
  /** Protocol errors by reason code name. */
  protocolErrors: Record<string, number>;
  /** Clients disconnected because their outbound queue was full (queueFullPolicy "disconnect"). */
  queueFullDisconnects: number;
  /**
   * Unexpected exceptions while serving a client, by where they happened: "encode_publish"
   * (a stored message that could not be encoded for a receiver) or "packet_<type>" (handling
   * a packet of that type). The goal is 0: each one is a bug to report.
   */
  internalErrors: Record<string, number>;
  /** Stored messages taken out of service because they failed towards a receiver, by origin ("client", "rules", "state", "will", "$SYS", "backup"). */
  quarantined: Record<string, number>;
}

/** Counters at zero, started at `startedAt`. */
export function newBrokerStats(startedAt: number): BrokerStats {
  return {
    startedAt,
    connectionsTotal: 0,
    clientsConnected: 0,
    messagesReceived: 0,
    messagesPublishedByBroker: {},
    messagesSent: 0,
    bytesReceived: 0,
    bytesSent: 0,
    publishReceived: 0,
    publishSent: 0,
    packetsReceived: {},
    packetsSent: {},
    dropped: {},
    protocolErrors: {},
    queueFullDisconnects: 0,
    internalErrors: {},
    quarantined: {},
  };
}

/** What services and the HTTP layer may use of the broker. */
export interface BrokerApi {
  readonly config: Config;
  readonly log: Logger;
  readonly stats: BrokerStats;
  /** Transports hand accepted connections to this. */
  readonly acceptor: ConnectionAcceptor;
  /** Register hooks; call at start-up, before listeners open. */
  addHooks(hooks: BrokerHooks): void;
  /**
   * Publish a message from inside the broker (rules output, state-store answers, $SYS).
   * Set `origin`; it goes through onPublish hooks (which see the origin) and is routed.
   */
  publish(message: Message): void;
  /**
   * Whether the authorizeSubscribe hooks let `client` subscribe to `filter`: for services
   * that publish to a topic the client chose (the state store's response topic).
   */
  maySubscribe(client: ClientInfo, filter: string): boolean;
  /** Close a client's connection with a reason code (v5 DISCONNECT). */
  disconnectClient(clientId: string, reasonCode: number, reasonString?: string): boolean;
  client(clientId: string): ClientInfo | undefined;
  clients(): ClientSummary[];
  subscriptions(): SubscriptionSummary[];
  /** Retained messages stored, not counting the broker's own $SYS topics. */
  retainedCount(): number;
  /** Sum of outbound queue depths over all sessions (gauge). */
  queuedMessages(): number;
}
