import type { Message } from '../mqtt/message.js';
import { Session } from './session.js';

/**
 * The storage the broker core works against, kept small so that another implementation (a
 * durable log, see ../shared/specs/durable-storage.md) can take the place of the memory one.
 *
 * Sessions: the core finds, creates, installs (restore) and deletes sessions by client id, and
 * iterates them (housekeeping sweep, snapshot, $SYS counts). Everything delivery changes in a
 * session goes through a few Session methods, so a durable store sees every change by
 * overriding them (a subclass of Session) and needs nothing else:
 *   enqueue / shift / dropOldestQos0 / clearQueue   the outbound queue (QoS 0 is never kept offline)
 *   addInflight / removeInflight                     QoS 1/2 sent and awaiting PUBACK / PUBREC / PUBCOMP
 *   (an inflight entry's `state` turns to 'pubrel' on PUBREC: setInflightState)
 *   receivedQos2 / releasedQos2                      [MQTT-5-4.3.3] QoS 2 ids received, awaiting PUBREL
 *   subscriptions (a Map keyed by the filter as sent) set and delete by the SUBSCRIBE and
 *   UNSUBSCRIBE handlers
 * The core calls these synchronously on the hot path: an implementation appends to its log and
 * returns (group commit, no promise per message).
 */
export interface SessionStore {
  readonly size: number;
  get(clientId: string): Session | undefined;
  has(clientId: string): boolean;
  /** A new, empty session, stored under its client id. */
  create(clientId: string): Session;
  /** Install a session read back from storage (restore), replacing any under that id. */
  set(clientId: string, session: Session): unknown;
  delete(clientId: string): boolean;
  values(): IterableIterator<Session>;
}

/** Sessions in memory: a Map, with create(). */
export class MemorySessionStore extends Map<string, Session> implements SessionStore {
  create(clientId: string): Session {
    const session = new Session(clientId);
    this.set(clientId, session);
    return session;
  }
}

/**
 * Retained messages, one per topic [MQTT-5-3.3.1-5]. set() with an empty payload clears the
 * topic [MQTT-5-3.3.1-6]; match() gives the unexpired messages whose topic matches a filter
 * (for a new subscription); all() and clear() serve the snapshot and restore.
 */
export interface RetainedMessages {
  readonly size: number;
  set(message: Message): void;
  get(topic: string): Message | undefined;
  match(filter: string, now?: number): Message[];
  all(): IterableIterator<Message>;
  clear(): void;
}

/**
 * What a durable session store needs to hear from the broker core besides the Session methods
 * (EDB_STORAGE=durable): a QoS 1/2 message is about to reach `session` (stored once, before the
 * publisher's ack; `shared`: through a shared subscription, so a replay by topic would not
 * find it), a session's record changed (subscriptions, expiry, will), or it ended.
 */
export interface SessionPersistence {
  storeFor(session: Session, message: Message, shared?: boolean): void;
  changed(session: Session): void;
  ended(session: Session): void;
  /** The will of the connection now holding `clientId` (undefined: none): kept until it closes. */
  liveWill(clientId: string, will: LiveWill | undefined): void;
}

/** A connected client's will, as the broker keeps it for a crash. */
export interface LiveWill {
  message: Message;
  delaySeconds: number;
  expirySeconds: number | undefined;
  username: string | undefined;
}
