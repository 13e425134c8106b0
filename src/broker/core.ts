import type { IConnectPacket } from 'mqtt-packet';
import type { Message, QoS } from '../mqtt/message.js';
import type { Delivery, Session, Subscription } from '../session/session.js';
import type { RetainedMessages } from '../session/store.js';
import type { AuthenticateResult, ClientInfo, PublishLimiter } from './hooks.js';
import type { ClientState, CloseCause } from './lifecycle.js';
import type { DeliveryContext, HeldPublisher, Outbound } from './outbound.js';

/**
 * What the broker core needs of a connection (MqttClient is the one implementation): who it
 * is, its session and will, its outbound side, and how to end it.
 */
export interface CoreClient extends ClientInfo, HeldPublisher {
  readonly state: ClientState;
  readonly session: Session | undefined;
  readonly out: Outbound;
  readonly openedAt: number;
  readonly keepAliveMs: number;
  readonly lastActivity: number;
  /** Reading is paused by flow control: silence from this client is ours, not its own. */
  readonly held: boolean;
  readonly will: Message | undefined;
  readonly willDelay: number;
  readonly willExpirySeconds: number | undefined;
  disconnect(reasonCode: number, cause: CloseCause, reasonString?: string): void;
  close(cause: CloseCause): void;
  destroy(): void;
}

/**
 * Durable storage as the publish flow sees it (EDB_STORAGE=durable): a count of writes handed
 * to it, whether it has room, and a callback once everything handed to it is on disk.
 */
export interface DurableAcks {
  readonly writes: number;
  readonly full: boolean;
  /** `cb(err, arg)` once everything handed to storage so far is on disk (BrokerStorage.onDurable). */
  onDurable(cb: (err: Error | undefined, arg: number) => void, arg?: number): void;
  /**
   * A retained message for a new subscription of a persistent session: stored as a copy and
   * tracked by the session before it is sent. Returns the delivery to send.
   */
  reserveRetained(session: Session, d: Delivery): Delivery;
  /**
   * Optional, before reserveRetained (cluster mode): store the retained messages of a
   * persistent session's SUBSCRIBE where every node can read them; resolves the deliveries to
   * reserve and send (undefined: nothing to wait for).
   */
  prepareRetained?(session: Session, retained: Delivery[]): Promise<Delivery[]> | undefined;
  /** Write the session records and positions changed so far now, not at the end of the turn. */
  flushSessions(): void;
  /**
   * Before an acknowledgement waits with onDurable: write now the positions it depends on (a
   * shared subscription's delivery, which a replay by topic would not find). Cheap otherwise.
   */
  flushUrgent(): void;
}

/**
 * Cluster mode (src/cluster/): a QoS 1/2 PUBLISH that was forwarded to other nodes is
 * acknowledged once the NATS server has it; one that had to go to other nodes while this
 * node cannot reach NATS is refused (v5: 0x80; 3.1.1: no ack, the client sends it again).
 */
export interface ForwardAcks {
  /** QoS 1/2 messages handed to NATS so far. */
  readonly sent: number;
  /** QoS 1/2 messages that matched other nodes' subscribers but could not be sent. */
  readonly unsent: number;
  /** Once NATS has everything handed to it so far (err: it did not answer in time). */
  onSent(cb: (err?: Error) => void): void;
  /**
   * A message held back until the cluster's replicated stream has it (a persistent session
   * somewhere wants it): resolves true once JetStream acknowledged it (a quorum) and it was
   * routed, false when it could not be stored (the PUBLISH is refused). Undefined: not held.
   */
  stored?(message: Message): Promise<boolean> | undefined;
}

/**
 * Cluster mode: before CONNACK, a persistent session that lives on another node (or only in
 * the cluster's bucket, its node gone) is brought to this broker, so that it resumes here.
 */
export interface SessionLoader {
  load(clientId: string, clean: boolean): Promise<void>;
}

/**
 * The narrow view of the broker that packet handlers (handlers/*.ts) and connections work
 * over: settings, log and counters (DeliveryContext), hooks, sessions and the router. The
 * Broker class implements it; nothing below the broker wiring imports Broker itself.
 */
export interface BrokerCore extends DeliveryContext {
  /** Per-client publish and subscription limits, if configured. */
  readonly limits: PublishLimiter | undefined;
  readonly retained: RetainedMessages;
  /** With EDB_STORAGE=durable: what the publish flow stored is acknowledged after its commit. */
  readonly durable: DurableAcks | undefined;
  /** Cluster mode: forwarded QoS 1/2 messages are acknowledged once NATS has them. */
  readonly forwardAcks: ForwardAcks | undefined;
  /** Cluster mode: brings a persistent session from the cluster before CONNACK. */
  readonly sessionLoader: SessionLoader | undefined;
  /** Among bridged brokers: this broker's id, answered in CONNACK to a bridge that asks (edb-broker-id). */
  readonly brokerId: string | undefined;

  // hooks
  /** The authenticate hooks, in order; the first refusal wins. */
  authenticate(client: CoreClient, packet: IConnectPacket): Promise<AuthenticateResult>;
  /** $SYS is refused, then the authorizePublish hooks: 0 or a reason code >= 0x80. */
  authorizePublish(client: ClientInfo, message: Message): number;
  /** The authorizeSubscribe hooks: the QoS granted (at most `qos`), or a reason code >= 0x80. */
  authorizeSubscribe(client: ClientInfo, filter: string, qos: QoS): number;
  /** The onSubscribe notifications. */
  subscribed(client: ClientInfo, filter: string, qos: QoS): void;
  countProtocolError(code: number): void;
  /** An unexpected exception while serving `client`, counted by `kind` and logged; the caller closes that connection only. */
  countInternalError(kind: string, err: unknown, client: ClientInfo, topic?: string): void;

  // sessions
  assignClientId(): string;
  /** Attach `client` to its session (resumed or new), taking over an existing connection. */
  openSession(client: CoreClient, clean: boolean, expiry: number): { session: Session; present: boolean };
  /** CONNACK has been sent: count the client and run the onConnect hooks. */
  clientOnline(client: CoreClient): void;
  /** The connection closed: the will, the session's expiry, onDisconnect. */
  clientClosed(client: CoreClient, wasOpen: boolean, cause: CloseCause): void;
  /** The transport is gone. */
  connectionGone(client: CoreClient): void;

  // router
  /** Route to every matching subscriber; whether anyone matched. `publisher` may be held back. */
  route(message: Message, publisher: CoreClient | undefined): boolean;
  addSubscription(session: Session, sub: Subscription): void;
  /** Would routing `message` store it for a persistent session? (Asked only when storage is full.) */
  needsStorage(message: Message): boolean;
  removeSubscription(session: Session, sub: Subscription): void;
}
