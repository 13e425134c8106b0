import type { Message, QoS } from '../mqtt/message.js';
import type { TransportKind } from '../transport/connection.js';

/**
 * Services (auth, rules engine, state store, metrics) plug into the broker through these
 * typed hooks, registered once at start-up. The broker keeps one array per hook, so the
 * hot path runs a plain loop over the registered functions: no per-message promises.
 * Rejections are MQTT 5 reason codes (0x80 and up).
 */

/** What hooks may know about a client. */
export interface ClientInfo {
  readonly clientId: string;
  readonly username: string | undefined;
  readonly protocolVersion: 3 | 4 | 5;
  readonly transport: TransportKind;
  readonly remoteAddress: string;
  readonly certificateSubject?: string;
  readonly certificateFields?: Readonly<Record<string, string>>;
  readonly connectedAt: number;
}

export interface ConnectRequest {
  readonly clientId: string;
  readonly username: string | undefined;
  readonly password: Buffer | undefined;
  readonly protocolVersion: 3 | 4 | 5;
  readonly transport: TransportKind;
  readonly remoteAddress: string;
  readonly certificateSubject?: string;
  readonly certificateFields?: Readonly<Record<string, string>>;
  readonly authenticationMethod?: string;
}

export type AuthenticateResult =
  | { ok: true; /** identity the broker uses from now on (e.g. the certificate subject) */ username?: string }
  | { ok: false; reasonCode: number; reasonString?: string };

/** Reason code 0 (success) or >= 0x80 (refused). */
export type ReasonCode = number;

export interface BrokerHooks {
  /** May be async (password hashing, files). The first refusal wins. */
  authenticate?(request: ConnectRequest): AuthenticateResult | Promise<AuthenticateResult>;
  /** Synchronous; 0 allows, a reason code >= 0x80 refuses (0x87 not authorized). */
  authorizePublish?(client: ClientInfo, message: Message): ReasonCode;
  /** Synchronous; returns the granted QoS (0-2), or a reason code >= 0x80 refusing. */
  authorizeSubscribe?(client: ClientInfo, filter: string, qos: QoS): number;
  /** Synchronous; whether a message may be delivered to this subscriber (read access). */
  authorizeDelivery?(client: ClientInfo, message: Message): boolean;
  /**
   * Every message received from a client (after authorization) and every message the
   * broker publishes internally, before routing. Return true to consume it (it is then
   * not routed to subscribers), e.g. a state-store request.
   */
  onPublish?(message: Message, client: ClientInfo | undefined): boolean | void;
  onConnect?(client: ClientInfo): void;
  /** `graceful` is true after a normal DISCONNECT. */
  onDisconnect?(client: ClientInfo, graceful: boolean): void;
  onSubscribe?(client: ClientInfo, filter: string, qos: QoS): void;
  /**
   * A filter entered (`added`) or left the routing table for one session: every subscribe,
   * unsubscribe, ended session and restored session (the cluster shares this interest).
   */
  onRoutingChange?(added: boolean, filter: string, shareGroup: string | undefined, clientId: string): void;
}

export const HOOK_NAMES = [
  'authenticate',
  'authorizePublish',
  'authorizeSubscribe',
  'authorizeDelivery',
  'onPublish',
  'onConnect',
  'onDisconnect',
  'onSubscribe',
  'onRoutingChange',
] as const satisfies readonly (keyof BrokerHooks)[];

/**
 * Per-client publish limits, consulted synchronously for every PUBLISH received. The core
 * pauses reading on 'slow' (for resumeDelay ms), and disconnects with 0x96 on 'rate' and
 * 0x97 on 'quota'. auth/rate-limit.ts provides the token-bucket implementation.
 */
export interface PublishLimiter {
  readonly enabled: boolean;
  /** Subscriptions a client may hold (0 = no limit). */
  readonly maxSubscriptions: number;
  onPublish(clientId: string, bytes: number, now: number): 'ok' | 'slow' | 'rate' | 'quota';
  resumeDelay(clientId: string, now: number): number;
  subscriptionAllowed(current: number): boolean;
  forget(clientId: string, now: number): void;
}
