import type { BrokerApi } from '../broker/api.js';
import type { Message } from '../mqtt/message.js';

/** The broker as the cluster uses it. */
export interface ClusterBroker extends BrokerApi {
  /** End a session that is not connected here (its client connected on another node). */
  endSession(clientId: string): boolean;
  readonly retained: { set(message: Message): void; get(topic: string): Message | undefined; all(): IterableIterator<Message> };
  subscriptionCount(): number;
}
