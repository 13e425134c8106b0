import type { BrokerApi } from '../broker/api.js';
import type { Message } from '../mqtt/message.js';
import type { ForwardAcks } from '../broker/core.js';

/** The broker as the cluster uses it. */
export interface ClusterBroker extends BrokerApi {
  /** End a session that is not connected here (its client connected on another node). */
  endSession(clientId: string): boolean;
  readonly retained: { set(message: Message): void; get(topic: string): Message | undefined; all(): IterableIterator<Message> };
  subscriptionCount(): number;
  /** Set by the cluster: forwarded QoS 1/2 messages are acknowledged once NATS has them. */
  forwardAcks: ForwardAcks | undefined;
}
