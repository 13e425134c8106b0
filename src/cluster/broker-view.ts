import type { BrokerApi } from '../broker/api.js';
import type { Message } from '../mqtt/message.js';
import type { CoreClient, ForwardAcks, SessionLoader } from '../broker/core.js';
import type { Delivery, PendingWill, Session } from '../session/session.js';
import type { SessionStore } from '../session/store.js';

/** The broker as the cluster uses it. */
export interface ClusterBroker extends BrokerApi {
  /** End a session that is not connected here (its client connected on another node). */
  endSession(clientId: string): boolean;
  readonly retained: { set(message: Message): void; get(topic: string): Message | undefined; all(): IterableIterator<Message> };
  subscriptionCount(): number;
  /** Set by the cluster: forwarded QoS 1/2 messages are acknowledged once NATS has them. */
  forwardAcks: ForwardAcks | undefined;
  /** Set by the cluster: persistent sessions held elsewhere are brought here before CONNACK. */
  sessionLoader: SessionLoader | undefined;
  readonly sessions: SessionStore;
  /** Would routing `message` store it for a persistent session here? */
  needsStorage(message: Message): boolean;
  /** Route without the onPublish hooks (a message the cluster held back until JetStream had it). */
  routeLocal(message: Message, publisher: CoreClient | undefined): boolean;
  /** Install a session read back from storage (its subscriptions enter routing). */
  restoreSession(session: Session): void;
  /** Publish the will of a client whose connection was lost without closing (here: its node died), after `delaySeconds`. */
  recoverWill(clientId: string, will: PendingWill, delaySeconds: number): void;
  /** A stored message read back for one session. */
  deliverStored(session: Session, d: Delivery): void;
}
