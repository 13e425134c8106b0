/**
 * The one list of settings. Each entry names its config-file key, its environment
 * variable, its type, default and a description; validation, environment loading and the
 * README's configuration table are all derived from this list.
 */
import type { BridgeConfig } from './bridges.js';

export type SettingType = 'string' | 'integer' | 'boolean' | 'port' | 'enum';

export interface SettingSpec {
  env: string;
  type: SettingType;
  default: string | number | boolean | null;
  description: string;
  values?: readonly string[];
  minimum?: number;
  maximum?: number;
}

export const SETTINGS = {
  host: { env: 'EDB_HOST', type: 'string', default: '0.0.0.0', description: 'Bind address for every listener' },
  mqttPort: { env: 'EDB_MQTT_PORT', type: 'port', default: 1883, description: 'MQTT over TCP' },
  mqttsPort: { env: 'EDB_MQTTS_PORT', type: 'port', default: 8883, description: 'MQTT over TLS, on when a certificate and key are set' },
  wsPort: { env: 'EDB_WS_PORT', type: 'port', default: 9001, description: 'MQTT over WebSocket' },
  wssPort: { env: 'EDB_WSS_PORT', type: 'port', default: 9002, description: 'MQTT over secure WebSocket, on when a certificate and key are set' },
  httpPort: { env: 'EDB_HTTP_PORT', type: 'port', default: 8888, description: 'Status page, /metrics, /healthz, REST API' },
  rulesPort: { env: 'EDB_RULES_PORT', type: 'port', default: 8000, description: 'fr_script rules API' },
  dataDir: { env: 'EDB_DATA_DIR', type: 'string', default: './data', description: 'Folder for persistent data' },
  backupDir: { env: 'EDB_BACKUP_DIR', type: 'string', default: null, description: 'Folder for the shutdown snapshot (default <dataDir>/backup)' },
  logLevel: { env: 'EDB_LOG_LEVEL', type: 'enum', default: 'info', values: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], description: 'Log level' },
  logFormat: { env: 'EDB_LOG_FORMAT', type: 'enum', default: 'auto', values: ['auto', 'json', 'pretty'], description: 'JSON logs, readable logs, or auto (readable on a terminal)' },
  maxConnections: { env: 'EDB_MAX_CONNECTIONS', type: 'integer', default: 100000, minimum: 1, description: 'Connections accepted at once; more are refused' },
  maxPacketSize: { env: 'EDB_MAX_PACKET_SIZE', type: 'integer', default: 1048576, minimum: 64, maximum: 268435455, description: 'Largest MQTT packet accepted, in bytes' },
  maxQueuedMessages: { env: 'EDB_MAX_QUEUED_MESSAGES', type: 'integer', default: 1000, minimum: 1, description: 'Outbound queue bound per connected client, in messages' },
  maxQueuedBytes: { env: 'EDB_MAX_QUEUED_BYTES', type: 'integer', default: 8388608, minimum: 1024, description: 'Outbound queue bound per connected client, in bytes' },
  queueFullPolicy: { env: 'EDB_QUEUE_FULL_POLICY', type: 'enum', default: 'drop', values: ['drop', 'disconnect'], description: 'A QoS 1/2 message for a connected client whose queue is full: drop it (counted), or disconnect the client (0x97) and keep the message in its session' },
  maxQueuedBytesTotal: { env: 'EDB_MAX_QUEUED_BYTES_TOTAL', type: 'integer', default: 268435456, minimum: 0, description: 'Bytes queued by all sessions together above which messages for offline sessions are dropped (0: no limit)' },
  maxOfflineMessages: { env: 'EDB_MAX_OFFLINE_MESSAGES', type: 'integer', default: 10000, minimum: 0, description: 'Memory storage (and cluster mode): messages kept for an offline persistent session, newer ones are dropped (counted). Durable storage: no such limit, the backlog stays in the message log (EDB_STORAGE_SESSION_WINDOW)' },
  maxInflight: { env: 'EDB_MAX_INFLIGHT', type: 'integer', default: 64, minimum: 1, maximum: 65535, description: 'Receive Maximum the broker announces, and QoS 1/2 messages in flight to a client' },
  topicAliasMaximum: { env: 'EDB_TOPIC_ALIAS_MAXIMUM', type: 'integer', default: 64, minimum: 0, maximum: 65535, description: 'Topic aliases a v5 client may use towards the broker' },
  maxKeepAlive: { env: 'EDB_MAX_KEEP_ALIVE', type: 'integer', default: 0, minimum: 0, maximum: 65535, description: 'If set, caps the keep alive (v5 Server Keep Alive), seconds' },
  maxSessionExpiry: { env: 'EDB_MAX_SESSION_EXPIRY', type: 'integer', default: 4294967295, minimum: 0, maximum: 4294967295, description: 'Cap on Session Expiry Interval, seconds' },
  connectTimeoutMs: { env: 'EDB_CONNECT_TIMEOUT_MS', type: 'integer', default: 10000, minimum: 100, description: 'CONNECT must arrive this soon after the socket opens' },
  stallTimeoutMs: { env: 'EDB_STALL_TIMEOUT_MS', type: 'integer', default: 5000, minimum: 0, description: 'A subscriber whose queue stays full this long has QoS 0 messages dropped' },
  sysInterval: { env: 'EDB_SYS_INTERVAL', type: 'integer', default: 10, minimum: 0, description: 'Seconds between $SYS updates (0 turns them off)' },
  shutdownTimeoutMs: { env: 'EDB_SHUTDOWN_TIMEOUT_MS', type: 'integer', default: 5000, minimum: 0, description: 'Longest a graceful stop waits for clients to drain' },
  allowAnonymous: { env: 'EDB_ALLOW_ANONYMOUS', type: 'boolean', default: true, description: 'Accept clients without credentials' },
  passwordFile: { env: 'EDB_PASSWORD_FILE', type: 'string', default: null, description: 'Password file written by `edb passwd`' },
  aclFile: { env: 'EDB_ACL_FILE', type: 'string', default: null, description: 'ACL file (mosquitto format)' },
  certIdentityField: { env: 'EDB_CERT_IDENTITY_FIELD', type: 'string', default: null, description: 'Client certificate subject field used as the user name (e.g. CN); unset: the whole subject' },
  loginFailureLimit: { env: 'EDB_LOGIN_FAILURE_LIMIT', type: 'integer', default: 5, minimum: 0, description: 'Failed logins from one address before it is made to wait (back-off doubling from 1 s)' },
  loginBackoffMaxMs: { env: 'EDB_LOGIN_BACKOFF_MAX_MS', type: 'integer', default: 60000, minimum: 0, description: 'Longest wait imposed on an address after failed logins' },
  maxMsgRate: { env: 'EDB_MAX_MSG_RATE', type: 'integer', default: 0, minimum: 0, description: 'PUBLISH packets per second one client may send (0 = no limit); a flood is paused, then disconnected (0x96)' },
  maxBytesRate: { env: 'EDB_MAX_BYTES_RATE', type: 'integer', default: 0, minimum: 0, description: 'PUBLISH bytes per second one client may send (0 = no limit); a flood is paused, then disconnected (0x97)' },
  maxSubscriptions: { env: 'EDB_MAX_SUBSCRIPTIONS', type: 'integer', default: 10000, minimum: 0, description: 'Subscriptions one client may hold (0 = no limit); past it SUBACK says 0x97' },
  adminUsersFile: { env: 'EDB_ADMIN_USERS_FILE', type: 'string', default: null, description: 'Users of the console and HTTP API with their roles, written by `edb passwd --role`; when set, every HTTP request needs credentials' },
  adminTokensFile: { env: 'EDB_ADMIN_TOKENS_FILE', type: 'string', default: null, description: 'API tokens written by `edb token create` (default <dataDir>/admin-tokens.json)' },
  adminTrusted: { env: 'EDB_ADMIN_TRUSTED', type: 'string', default: 'loopback', description: 'Without admin users: addresses that may use the admin surfaces as admin (comma list of addresses or CIDRs, "loopback", or "none")' },
  metricsAuth: { env: 'EDB_METRICS_AUTH', type: 'boolean', default: false, description: '/metrics asks for credentials like the API (otherwise open)' },
  adminSessionTtl: { env: 'EDB_ADMIN_SESSION_TTL', type: 'integer', default: 43200, minimum: 60, description: 'Seconds a console login lasts without use' },
  tlsCert: { env: 'EDB_TLS_CERT', type: 'string', default: null, description: 'PEM certificate for MQTTS and WSS' },
  tlsKey: { env: 'EDB_TLS_KEY', type: 'string', default: null, description: 'PEM private key for MQTTS and WSS' },
  tlsCa: { env: 'EDB_TLS_CA', type: 'string', default: null, description: 'PEM CA; when set, client certificates are required' },
  wsEngine: { env: 'EDB_WS_ENGINE', type: 'enum', default: 'auto', values: ['auto', 'uws', 'ws'], description: 'WebSocket/HTTP engine: uWebSockets.js, ws, or auto' },
  stateMaxKeys: { env: 'EDB_STATE_MAX_KEYS', type: 'integer', default: 1000000, minimum: 1, maximum: 4294967295, description: 'State store: most keys held at once (SET past it: "the quota has been exceeded")' },
  stateMaxBytes: { env: 'EDB_STATE_MAX_BYTES', type: 'integer', default: 268435456, minimum: 1, description: 'State store: most bytes of keys plus values held at once' },
  stateSweepIntervalMs: { env: 'EDB_STATE_SWEEP_INTERVAL_MS', type: 'integer', default: 1000, minimum: 10, description: 'State store: how often expired keys are removed (and DELETE notifications sent)' },
  backupEnabled: { env: 'EDB_BACKUP', type: 'boolean', default: true, description: 'Write a snapshot to the backup folder on a graceful stop and restore it at the next start' },
  backupInterval: { env: 'EDB_BACKUP_INTERVAL', type: 'integer', default: 0, minimum: 0, description: 'Seconds between periodic snapshots to the backup folder (0 = only on a graceful stop)' },
  storage: { env: 'EDB_STORAGE', type: 'enum', default: 'durable', values: ['durable', 'memory'], description: 'durable (default): what is acknowledged is on disk under <dataDir>/storage first (see docs/operations.md, Storage); memory: kept in memory, saved only by the backup on a graceful stop' },
  storageBatchSize: { env: 'EDB_STORAGE_BATCH_SIZE', type: 'integer', default: 256, minimum: 1, maximum: 65536, description: 'Durable storage: most messages written with one disk commit (fsync)' },
  storageFlushIntervalMs: { env: 'EDB_STORAGE_FLUSH_INTERVAL_MS', type: 'integer', default: 2, minimum: 0, maximum: 1000, description: 'Durable storage: longest a message waits for its batch to be committed, in ms' },
  storageGeneration: { env: 'EDB_STORAGE_GENERATION', type: 'string', default: '1h', description: 'Durable storage: time covered by one generation of the message log (s, m, h or d, e.g. 1h)' },
  storageRetention: { env: 'EDB_STORAGE_RETENTION', type: 'string', default: '7d', description: 'Durable storage: whole generations older than this are dropped (e.g. 7d; 0 keeps them until the size cap)' },
  storageMaxBytes: { env: 'EDB_STORAGE_MAX_BYTES', type: 'integer', default: 0, minimum: 0, description: 'Durable storage: most bytes the message log may use; old generations go first, then QoS 1/2 messages that need storage get 0x97 (0: no cap)' },
  storageSessionWindow: { env: 'EDB_STORAGE_SESSION_WINDOW', type: 'integer', default: 1000, minimum: 1, description: 'Durable storage: QoS 1/2 messages of one persistent session held in memory; the rest of its backlog stays in the message log (bounded by EDB_STORAGE_RETENTION and EDB_STORAGE_MAX_BYTES) and is read back in batches as the client acknowledges' },
  clusterNats: { env: 'EDB_CLUSTER_NATS', type: 'string', default: null, description: 'Cluster mode: NATS servers with JetStream, comma list (nats://h1:4222,nats://h2:4222); unset: one node, no NATS (see docs/cluster.md)' },
  nodeName: { env: 'EDB_NODE_NAME', type: 'string', default: null, description: 'Cluster mode: this node\'s name, unique in the cluster (default: the host name)' },
  clusterName: { env: 'EDB_CLUSTER_NAME', type: 'string', default: 'edb', description: 'Cluster mode: the cluster\'s name; nodes with the same name and NATS servers form one cluster (letters, digits, - and _)' },
  clusterReplicas: { env: 'EDB_CLUSTER_REPLICAS', type: 'integer', default: 3, minimum: 1, maximum: 5, description: 'Cluster mode: JetStream replicas of the cluster\'s buckets (3 survives the loss of one NATS server; 1 for a single NATS server)' },
  clusterNatsCreds: { env: 'EDB_CLUSTER_NATS_CREDS', type: 'string', default: null, description: 'Cluster mode: NATS credentials file (JWT and NKey seed)' },
  clusterNatsUser: { env: 'EDB_CLUSTER_NATS_USER', type: 'string', default: null, description: 'Cluster mode: NATS user name' },
  clusterNatsPassword: { env: 'EDB_CLUSTER_NATS_PASSWORD', type: 'string', default: null, description: 'Cluster mode: NATS password (with EDB_CLUSTER_NATS_USER)' },
  clusterNatsToken: { env: 'EDB_CLUSTER_NATS_TOKEN', type: 'string', default: null, description: 'Cluster mode: NATS authentication token' },
  clusterNatsCa: { env: 'EDB_CLUSTER_NATS_CA', type: 'string', default: null, description: 'Cluster mode: PEM CA that signed the NATS servers\' certificates (turns TLS on)' },
  clusterNatsCert: { env: 'EDB_CLUSTER_NATS_CERT', type: 'string', default: null, description: 'Cluster mode: PEM client certificate for NATS (with EDB_CLUSTER_NATS_KEY)' },
  clusterNatsKey: { env: 'EDB_CLUSTER_NATS_KEY', type: 'string', default: null, description: 'Cluster mode: PEM private key of the NATS client certificate' },
  rulesFile: { env: 'EDB_RULES_FILE', type: 'string', default: null, description: 'fr_script document loaded at start' },
  rulesCompilerIdleMs: { env: 'EDB_RULES_COMPILER_IDLE_MS', type: 'integer', default: 60000, minimum: 0, description: 'Stop the rules compiler worker (about 240 MB with asc loaded) after this long without an upload; 0 keeps it running' },
  rulesMemoryTopics: { env: 'EDB_RULES_MEMORY_TOPICS', type: 'integer', default: 10000, minimum: 1, description: 'fr_script memory (prev, deadband, windows): concrete topics kept per statement; the least recently seen is forgotten past that (edb_rules_memory_evicted_total)' },
  rulesWindowSamples: { env: 'EDB_RULES_WINDOW_SAMPLES', type: 'integer', default: 1024, minimum: 1, maximum: 1048576, description: 'fr_script windows: samples kept exactly per statement and topic; older ones are merged into 64 buckets (edb_rules_window_samples_merged_total)' },
} as const satisfies Record<string, SettingSpec>;

export type SettingName = keyof typeof SETTINGS;

type ValueOf<S extends SettingSpec> = S extends { values: readonly (infer V)[] }
  ? V
  : S['type'] extends 'boolean'
  ? boolean
  : S['type'] extends 'integer' | 'port'
    ? number
    : S['default'] extends null
      ? string | null
      : string;

export type Settings = { [K in SettingName]: ValueOf<(typeof SETTINGS)[K]> };

/** The full configuration: flat settings plus nested sections only a file can carry. */
export interface Config extends Settings {
  /** Sections other parts read from the config file (e.g. stateStore, acl). */
  sections: Record<string, unknown>;
  /** Bridges to other brokers, from the file's bridges: section and EDB_BRIDGE_* (config/bridges.ts). */
  bridges: BridgeConfig[];
}
