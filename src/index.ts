/** Public API of the edge-data-broker package, for embedding and for applications. */
export { startEdb, VERSION, type EdbServer } from './server.js';
export { loadConfig, testConfig, ConfigError } from './config/load.js';
export type { Config, Settings } from './config/schema.js';
export { SETTINGS } from './config/schema.js';
export type { BrokerApi, BrokerStats, ClientSummary, SubscriptionSummary } from './broker/api.js';
export type { BrokerHooks, ClientInfo, ConnectRequest, AuthenticateResult } from './broker/hooks.js';
export type { Message, MessageProperties } from './mqtt/message.js';
export { RC } from './mqtt/reason-codes.js';
// The state store's client for applications: StateStoreClient, LeaseLock, HLC helpers.
export * from './state/index.js';
