/** Names and texts of the state-store protocol (shared by the service and the client). */

export const STATE_STORE_ID = 'FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8';
export const INVOKE_TOPIC = `statestore/v1/${STATE_STORE_ID}/command/invoke`;
/** Response topics under this prefix are refused (the client is disconnected). */
export const RESERVED_PREFIX = `clients/statestore/v1/${STATE_STORE_ID}`;

/** `clients/statestore/v1/{id}/{HEX(clientId)}/command/notify/{HEX(key)}` */
export function notifyTopic(clientId: string, key: Uint8Array): string {
  return `${RESERVED_PREFIX}/${Buffer.from(clientId, 'utf8').toString('hex').toUpperCase()}/command/notify/${Buffer.from(key).toString('hex').toUpperCase()}`;
}

/** The protocol's error messages, exact text (clients match on them). */
export const ERRORS = {
  syntax: 'syntax error',
  unknownCommand: 'unknown command',
  arity: 'wrong number of arguments',
  missingTimestamp: 'missing timestamp',
  malformedTimestamp: 'malformed timestamp',
  emptyKey: 'the key length is zero',
  notAuthorized: 'not authorized',
  quota: 'the quota has been exceeded',
  fencingRequired: 'a fencing token is required for this request',
  fencingStale: 'the request fencing token is a lower version than the fencing token protecting the resource',
  timestampFuture: 'the request timestamp is too far in the future; ensure that the client and broker system clocks are synchronized',
  /** Cluster mode: the write could not be replicated (no JetStream quorum reachable: a partition, say). */
  clusterUnavailable: 'the cluster cannot replicate this write now; try again',
  fencingFuture: 'the request fencing token timestamp is too far in the future; ensure that the client and broker system clocks are synchronized',
} as const;


/** Content type of the service's answers and notifications. */
export const CONTENT_TYPE = 'application/octet-stream';
