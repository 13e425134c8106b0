// The state store's public API for applications (re-exported by the package entry point).
export { StateStoreClient, StateStoreError, type Bytes, type KeyNotification, type SetOptions, type StateStoreClientOptions } from './client.js';
export { LeaseLock } from './lease-lock.js';
export { formatHlc, parseHlc, compareHlc, type Hlc } from './hlc.js';
export { INVOKE_TOPIC, RESERVED_PREFIX, STATE_STORE_ID, ERRORS as STATE_STORE_ERRORS, notifyTopic } from './protocol.js';
