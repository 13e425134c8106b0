import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import type { Listener } from './transport/connection.js';
import { Broker } from './broker/broker.js';
import { startSysTopics } from './broker/sys.js';
import { startTcpListener } from './transport/tcp.js';
import { startTlsAndWebSocketListeners } from './transport/listeners.js';
import { checkStartup, explainListenError } from './startup-check.js';
import { loadTlsOptions } from './transport/tls-options.js';
import { startHttpService } from './http/service.js';
import { restoreBroker, snapshotBroker } from './broker/snapshot.js';
import { createBackupManager, type BackupManager, type RestoreOutcome } from './persistence/backup.js';
import { createStateStoreService, type StateStoreService } from './state/service.js';
import { parseStateStoreSection, StateStoreAuthorizer } from './state/authorization.js';
import type { ClientInfo } from './broker/hooks.js';
import { createAuthService } from './auth/service.js';
import { createClientLimits } from './auth/rate-limit.js';
import { createRulesService } from './rules/service.js';
import { createRulesHttpHandler, startRulesHttpServer, type RulesHttpGuard } from './rules/http.js';
import { requiredAccess } from './http/access.js';
import { startTopicTree } from './http/topic-tree.js';
import { mountConsoleApi } from './http/console-api.js';
import { json } from './http/server.js';
import { ConfigError, loadConfig } from './config/load.js';
import { DurableStorage, openStorage, storageDir, type BrokerStorage } from './storage/index.js';
import { hasDurableData, openHandOver } from './storage/to-memory.js';
import { PersistentRetainedStore } from './storage/retained.js';
import { storageStatusLine } from './storage/status.js';
import { DurableSession, DurableSessionStore, SessionLog } from './storage/sessions.js';
import type { ClusterService } from './cluster/index.js';

import { BridgeService } from './bridge/service.js';
import { adminOpenApiDocument, bridgesHandler } from './bridge/http.js';
import { VERSION } from './version.js';

export { VERSION };

/** The start-up line that says what the backup brought back, and from where (or why nothing). */
function logRestore(log: Logger, config: Config, backup: BackupManager, outcome: RestoreOutcome, broker: Broker, stateStore: StateStoreService): void {
  if (!config.backupEnabled) {
    log.info('backups are off (EDB_BACKUP=false): nothing restored, nothing will be saved on stop');
    return;
  }
  switch (outcome.status) {
    case 'none':
      if (config.storage === 'durable') log.info({ file: backup.file }, `no backup found at ${backup.file}: the durable storage under ${config.dataDir} holds what was kept`);
      else log.info({ file: backup.file }, `no backup found at ${backup.file}: starting without saved sessions, retained messages or state`);
      return;
    case 'discarded':
      log.warn({ file: backup.file, err: outcome.error }, `the backup at ${backup.file} was unusable and is deleted: starting without saved sessions, retained messages or state`);
      return;
    case 'restored': {
      const sessions = broker.sessions.size;
      const retained = broker.retainedCount();
      const keys = stateStore.metrics().keys;
      log.info(
        { file: backup.file, sections: outcome.sections, sessions, retained, keys, ms: outcome.ms },
        `restored the backup from ${backup.file}: ${sessions} sessions, ${retained} retained messages, ${keys} state store keys (${outcome.ms} ms)`,
      );
    }
  }
}

/** The storage document that holds the rules' buffer (checkpointed every second). */
const RULE_BUFFER = 'rules.buffer';

/** Durable: the rule buffer is stored at least every second, when it changed. */
function checkpointRuleBuffer(storage: BrokerStorage, section: { save(): Buffer | Promise<Buffer> }, log: Logger): { close(): Promise<void> } {
  let last: Buffer | undefined = storage.document(RULE_BUFFER);
  const save = async (): Promise<void> => {
    const data = await section.save();
    if (last && data.equals(last)) return;
    last = data;
    storage.setDocument(RULE_BUFFER, data);
  };
  const timer = setInterval(() => {
    save().catch((err: Error) => log.error({ err: err.message }, 'storage: rule buffer checkpoint failed'));
  }, 1000);
  timer.unref();
  return {
    async close() {
      clearInterval(timer);
      await save().catch(() => undefined);
    },
  };
}

/**
 * EDB_STORAGE=memory with a durable storage folder in the data folder (the setting was
 * durable before): start from what it holds, once (storage/to-memory.ts), then a pending
 * backup (if any) is restored over it as usual.
 */
async function takeOverDurable(config: Config, log: Logger, broker: Broker, stateStore: StateStoreService, ruleSection: { restore(data: Buffer): void | Promise<void> }): Promise<void> {
  const dir = storageDir(config);
  if (!hasDurableData(dir)) return;
  const started = performance.now();
  const h = openHandOver(dir, log.child({ part: 'storage' }), config.maxOfflineMessages, RULE_BUFFER);
  for (const m of h.retained) broker.retained.set(m);
  for (const s of h.sessions) broker.restoreSession(s);
  for (const [clientId, w] of h.wills) broker.recoverWill(clientId, { message: w.message, expirySeconds: w.expirySeconds, username: w.username }, w.delaySeconds);
  const state = stateStore.importFrom(h.storage);
  if (h.ruleBuffer) {
    try {
      await ruleSection.restore(h.ruleBuffer);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'storage: the stored rule buffer is unreadable; starting with an empty one');
    }
  }
  const moved = await h.retire();
  log.info(
    { retained: h.retained.length, sessions: h.sessions.length, queued: h.queued, wills: h.wills.size, stateKeys: state.keys, movedTo: moved, ms: Math.round(performance.now() - started) },
    `storage: EDB_STORAGE=memory: started from the durable storage in ${dir} (${h.retained.length} retained messages, ${h.sessions.length} sessions with ${h.queued} queued messages, ${state.keys} state store keys), once; the folder is now ${moved}`,
  );
}

/** A running broker with its listeners and services. */
export interface EdbServer {
  readonly broker: Broker;
  readonly listeners: Listener[];
  readonly config: Config;
  readonly stateStore: StateStoreService;
  readonly backup: BackupManager;
  /** Where retained messages, sessions and the state store are kept (EDB_STORAGE). */
  readonly storage: BrokerStorage;
  /** Links to other brokers (config/bridges.ts, bridge/). */
  readonly bridges: BridgeService;
  /** Cluster mode (EDB_CLUSTER_NATS): this node's membership, or undefined on a single node. */
  readonly cluster: ClusterService | undefined;
  /** Port of the named listener ("mqtt", "mqtts", "ws", "wss", "http", "rules"). */
  port(name: string): number;
  /** Graceful stop: listeners closed, clients told (v5 0x8B), services saved and closed. */
  stop(): Promise<void>;
}

/** A service started with the broker; closed in reverse order on stop. */
interface Service {
  close(): Promise<void> | void;
}

/**
 * Start the broker, its services and its listeners. Services register their hooks
 * before any listener opens, so the first client already sees them.
 */
export async function startEdb(config: Config, log: Logger): Promise<EdbServer> {
  // unusable settings, files and folders fail here with one line each, before anything starts
  checkStartup(config);
  // cluster settings are checked here too; the module is loaded only in cluster mode
  const clusterModule = config.clusterNats ? await import('./cluster/index.js') : undefined;
  const clusterProblem = clusterModule?.clusterConfigProblem(config);
  if (clusterProblem) throw new ConfigError(clusterProblem);
  // an unusable storage folder fails here too (StorageOpenError: exit code 2), before any listener
  const storage = openStorage(config, log);
  const durable = storage.kind === 'durable';
  const retained = durable ? new PersistentRetainedStore(storage, log) : undefined;
  const sessionLog = durable ? new SessionLog(storage, log) : undefined;
  const sessions = sessionLog ? new DurableSessionStore(sessionLog) : undefined;
  // cluster mode: persistent sessions live in JetStream (src/cluster/sessions.ts), whatever EDB_STORAGE says
  const clusterSessions = clusterModule?.createClusterSessions(storage, config, log);
  if (clusterSessions && sessions) {
    // the persistent sessions this node's local log holds (it ran alone before): imported into
    // the cluster once, when JetStream is reached (cluster/sessions.ts importLocal)
    clusterSessions.importFrom = {
      load: () => sessions.load(config.maxOfflineMessages).sessions,
      forget: (clientId) => storage.deleteSession(clientId),
    };
  }
  const brokerSessions = clusterSessions?.store ?? sessions;
  const persistence = clusterSessions?.sessionLog ?? sessionLog;
  const broker = new Broker(config, log, { ...(retained ? { retained } : {}), ...(brokerSessions ? { sessions: brokerSessions } : {}), ...(persistence ? { persistence } : {}) });
  if (clusterSessions) {
    const csl = clusterSessions.sessionLog;
    broker.durable = {
      get writes() {
        return (retained?.writes ?? 0) + csl.writes;
      },
      get full() {
        return storage.full;
      },
      onDurable: (cb, arg) => clusterSessions.storage.onDurable(cb, arg),
      reserveRetained: (session, d) => csl.reserveRetained(session, d),
      prepareRetained: (session, list) => clusterSessions.storeRetained(session, list),
      flushSessions: () => csl.flush(),
      flushUrgent: () => csl.flushUrgent(),
    };
  } else if (retained && sessionLog) {
    // one node: a session keeps a window of its messages in memory, the rest is read from the log
    sessionLog.paging = {
      window: config.storageSessionWindow,
      refillMessages: Math.max(1, Math.min(config.storageSessionWindow, config.maxQueuedMessages >> 1)),
      refillBytes: Math.max(1024, config.maxQueuedBytes >> 1),
    };
    sessionLog.onRefill = (s) => broker.pumpSession(s);
    if (storage instanceof DurableStorage) storage.messages.onDropped((d) => sessionLog.generationDropped(d));
    broker.durable = {
      get writes() {
        return retained.writes + sessionLog.writes;
      },
      get full() {
        return storage.full;
      },
      onDurable: (cb, arg) => storage.onDurable(cb, arg),
      reserveRetained: (session, d) => sessionLog.reserveRetained(session, d),
      flushSessions: () => sessionLog.flush(),
      flushUrgent: () => sessionLog.flushUrgent(),
    };
  }
  const services: Service[] = [];
  const listeners: Listener[] = [];

  const stopSys = startSysTopics(broker, VERSION, config.sysInterval);
  services.push({ close: stopSys });

  // Hooks run in registration order: authorization first, then the state store (which
  // consumes its request topic), then the rules engine (which sees every other message).
  const auth = createAuthService(broker, config, log, {
    // a reload re-reads the config file's users/acl sections as well as the files
    readSections: () => (process.env['EDB_CONFIG'] ? loadConfig().sections : config.sections),
  });
  services.push(auth);
  broker.setLimits(createClientLimits(config));

  const stateStore = createStateStoreService(broker, config, log, durable ? { storage } : {});
  services.push(stateStore);

  // a document acts for its uploader: with an ACL, its topics must be theirs (rules/author-check.ts)
  // ... and with the state store's per-key authorization, its set_state keys too: the author
  // is the client `rules/<user>` with that user name, as for the topic ACL
  const stateAuthorizer = new StateStoreAuthorizer(parseStateStoreSection(config.sections['stateStore']).authorization);
  const stateAccess = {
    enabled: () => stateAuthorizer.enabled,
    forUser(user: string) {
      const who: ClientInfo = { clientId: `rules/${user}`, username: user, protocolVersion: 5, transport: 'tcp', remoteAddress: '', connectedAt: 0 };
      return {
        canWriteKey: (key: string) => stateAuthorizer.allowed(who, Buffer.from(key, 'utf8'), 'write'),
        canWriteSomeKey: (glob: string) => stateAuthorizer.allowedSome(who, glob, 'write'),
        canReadKey: (key: string) => stateAuthorizer.allowed(who, Buffer.from(key, 'utf8'), 'read'),
        canReadSomeKey: (glob: string) => stateAuthorizer.allowedSome(who, glob, 'read'),
      };
    },
  };
  const rules = createRulesService(broker, config, log, { stateStore, authorAccess: { enabled: () => auth.aclEnabled, forUser: (user) => auth.accessFor(user) }, stateAccess });
  services.push(rules);

  // bridges to other brokers: their hook sees what the rules publish too; they connect after the restore
  const bridges = new BridgeService(broker, config.bridges, sessionLog, storage);
  services.push(bridges);
  // retention and the size cap at start: now that the bridges hold their positions and hear of drops
  if (storage instanceof DurableStorage) storage.messages.sweep();

  // cluster mode: its hooks come last (after the state store has consumed its requests and the
  // rules have seen every message); loaded only with EDB_CLUSTER_NATS (idle memory matters)
  let cluster: ClusterService | undefined;
  if (config.clusterNats) {
    cluster = clusterModule!.startCluster(broker, config, log, VERSION, { stateStore, rules, ...(clusterSessions ? { sessions: clusterSessions } : {}) });
    services.push(cluster);
  }

  // Backup: every part with state registers a section; restored before listeners open,
  // written on a graceful stop (and periodically with EDB_BACKUP_INTERVAL).
  const backup = createBackupManager(config, log);
  backup.register(stateStore.snapshotSection());
  backup.register(rules.snapshotSection());
  if (!durable) backup.register(bridges.snapshotSection()); // durable: the backlog is in the log
  backup.register({
    name: 'broker',
    save: () => snapshotBroker(broker),
    restore: (data) => void restoreBroker(broker, data),
    reset: () => broker.clearDurableState(),
  });
  // durable: what storage holds first; then a pending backup (written in memory mode, or by a
  // graceful stop) is imported over it and stored
  let willsTaken = false;
  const loadDurable = (): void => {
    if (!retained) return;
    const started = performance.now();
    const n = retained.load();
    // cluster mode: the sessions are in the cluster's bucket, loaded when their client connects
    const restored = clusterSessions ? { sessions: [], messages: 0 } : sessions!.load(config.maxOfflineMessages);
    for (const s of restored.sessions) broker.restoreSession(s);
    // wills of clients connected when the broker stopped without closing them (a crash); once
    const wills = willsTaken ? new Map() : sessionLog!.takeLiveWills();
    willsTaken = true;
    for (const [clientId, w] of wills) {
      const pending = { message: w.message, expirySeconds: w.expirySeconds, username: w.username };
      broker.recoverWill(clientId, pending, w.delaySeconds);
    }
    const state = stateStore.loadFromStorage();
    const buffer = storage.document(RULE_BUFFER);
    if (buffer) {
      try {
        rules.snapshotSection().restore(buffer);
      } catch (err) {
        log.error({ err: (err as Error).message }, 'storage: the stored rule buffer is unreadable; starting with an empty one');
      }
    }
    log.info(
      { retained: n, sessions: restored.sessions.length, queued: restored.messages, wills: wills.size, stateKeys: state.keys, stateWrites: state.writes, ms: Math.round(performance.now() - started) },
      `storage: loaded from ${config.dataDir}: ${n} retained messages, ${restored.sessions.length} sessions (${restored.messages} queued messages), ${state.keys} state store keys` +
        (wills.size > 0 ? `; ${wills.size} wills of clients connected at a crash handled (published, or pending their Will Delay)` : ''),
    );
  };
  loadDurable();
  if (!durable) await takeOverDurable(config, log, broker, stateStore, rules.snapshotSection());
  const restored = await backup.restore();
  logRestore(log, config, backup, restored, broker, stateStore);
  if (clusterSessions && restored.status === 'restored') {
    // cluster mode: persistent sessions live in the cluster's bucket, where they may have moved
    // on since this node stopped; a backup's copies would overwrite them, so they are dropped
    const plain = [...broker.sessions.values()].filter((s) => !(s instanceof DurableSession));
    for (const s of plain) broker.endSession(s.clientId);
    if (plain.length > 0) log.info({ sessions: plain.length }, `cluster mode: the backup's ${plain.length} sessions are not restored; the cluster's bucket holds the persistent sessions`);
  }
  if (durable && restored.status === 'restored') {
    // imported: the backup's sessions become durable ones, its state store a stored snapshot
    const adopter = (clusterSessions?.store ?? sessions)!;
    for (const plain of [...broker.sessions.values()]) if (!(plain instanceof DurableSession)) broker.restoreSession(adopter.adopt(plain));
    stateStore.checkpoint();
  }
  if (durable && restored.status === 'discarded') loadDurable(); // a bad backup leaves the stored data as it was
  // durable storage holds everything a backup would: no snapshot written in this mode
  if (!durable) backup.startPeriodic();
  if (durable) services.push(checkpointRuleBuffer(storage, rules.snapshotSection(), log));
  // a start that fails after the restore writes the backup back: the restore deleted it
  const undoRestore = async (): Promise<void> => {
    if (restored.status !== 'restored') return;
    await backup.save().catch((err: Error) => log.error({ err: err.message }, 'could not write the restored backup back'));
  };

  // web: status page, /metrics, health and REST API; /readyz says 503 until every listener is up
  let http: Awaited<ReturnType<typeof startHttpService>>;
  try {
    http = await startHttpService(broker, config, log);
  } catch (err) {
    await broker.close(0);
    await backup.close();
    await undoRestore();
    for (const svc of [...services].reverse()) await Promise.resolve(svc.close()).catch(() => undefined);
    await storage.close().catch(() => undefined);
    throw await explainListenError(err, config);
  }
  services.push(http);
  if (http.listener) listeners.push(http.listener);
  http.router.mount('/rules', createRulesHttpHandler(rules, { basePath: '/rules' }));
  // the console's topic explorer and its API (state store, publish, disconnect)
  const topicTree = startTopicTree(broker);
  services.push(topicTree);
  http.router.get('/api/rules/parts', () => json(200, rules.partMetrics())); // the console's live counts per filter and rule
  mountConsoleApi(http.router, broker, topicTree, stateStore, { canPublish: (user, topic) => !auth.aclEnabled || auth.accessFor(user).canWrite(topic) });
  // prom-client and these series are loaded on the first scrape of /metrics
  http.addMetrics(async (registry) => (await import('./rules/metrics.js')).registerRulesMetrics(registry, rules));
  http.addMetrics(async (registry) => (await import('./state/metrics.js')).registerStateStoreMetrics(registry, stateStore));
  http.addStatusSection('rules', () => {
    const m = rules.metrics();
    return { filters: m.filters, statements: m.filterStatements + m.ruleStatements, logic: m.logicEntries, fires: m.fires, evaluations: m.evaluations, compileMillis: m.lastCompileMillis, wasmBytes: m.wasmBytes };
  });
  http.addStatusSection('state', () => ({ summary: stateStore.statusLine() }));
  http.addStatusSection('storage', () => ({ summary: storageStatusLine(storage) }));
  if (durable) http.addMetrics(async (registry) => (await import('./storage/metrics.js')).registerStorageMetrics(registry, storage, sessionLog?.paging ? sessionLog.pagingStats : undefined));
  // bridges: GET/POST/PUT/DELETE /api/bridges[/NAME] (operator changes, viewer reads), their metrics and status line
  http.router.mount('/api/bridges', bridgesHandler(bridges));
  http.router.get('/api/openapi.json', () => json(200, adminOpenApiDocument(VERSION)));
  http.addMetrics(async (registry) => (await import('./bridge/metrics.js')).registerBridgeMetrics(registry, bridges));
  http.addStatusSection('bridges', () => ({ summary: bridges.statusLine(), rows: bridges.summaries().map((b) => ({ name: b.name, endpoint: b.endpoint, state: b.state, buffered: b.bufferSize, dropped: b.bufferDropped, oldestMs: b.oldestMs, sentPerSecond: b.sentPerSecond, receivedPerSecond: b.receivedPerSecond })) }));
  // GET /api/cluster answers on a single node too (the console's Cluster page says so)
  http.router.get('/api/cluster', () => json(200, cluster ? { enabled: true, ...cluster.status() } : { enabled: false }));
  if (cluster) {
    const c = cluster;
    http.addReadinessCheck('cluster', () => c.notReady());
    http.addStatusSection('cluster', () => c.statusSection());
    http.addMetrics(async (registry) => (await import('./cluster/metrics.js')).registerClusterMetrics(registry, c));
  }

  // the document from EDB_RULES_FILE (or the data folder) is active before clients arrive
  try {
    await rules.ready;
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    await broker.close(0);
    await backup.close();
    await undoRestore();
    await Promise.all(services.map((s) => Promise.resolve(s.close()).catch(() => undefined)));
    await storage.close().catch(() => undefined);
    throw err;
  }

  try {
    if (config.mqttPort >= 0) listeners.push(await startTcpListener(broker, config.host, config.mqttPort));
    listeners.push(...(await startTlsAndWebSocketListeners(broker, config, log))); // web: MQTTS, WS, WSS
    if (config.rulesPort >= 0) {
      // the rules port answers to the same access rules as /rules on the HTTP port
      const guard: RulesHttpGuard = (req, next) => http.access.guard(req, requiredAccess(req.method, req.path === '/' ? '/rules' : `/rules${req.path}`, config.metricsAuth), next);
      const tls = loadTlsOptions(config);
      listeners.push(await startRulesHttpServer(rules, config.host, config.rulesPort, { guard, ...(tls ? { tls } : {}) }));
    }
  } catch (err) {
    // a port in use (say): undo everything started so far, then report
    await Promise.all(listeners.map((l) => l.close()));
    await broker.close(0);
    await backup.close();
    await undoRestore();
    for (const svc of [...services].reverse()) await Promise.resolve(svc.close()).catch(() => undefined);
    await storage.close().catch(() => undefined);
    throw await explainListenError(err, config);
  }
  await bridges.start(); // an unreachable remote never stops the start: each bridge retries on its own
  // SIGHUP: the bridges of the config file (and environment) again; others are not touched
  const onSighup = (): void => {
    let next: Config['bridges'];
    try {
      next = loadConfig().bridges;
    } catch (err) {
      log.error({ err: (err as Error).message }, `SIGHUP: bridges not reloaded: ${(err as Error).message}`);
      return;
    }
    bridges.reload(next).then(
      (r) => log.info(r, `SIGHUP: bridges reloaded: ${r.added.length} added, ${r.changed.length} changed, ${r.removed.length} removed`),
      (err: Error) => log.error({ err: err.message }, 'SIGHUP: reloading the bridges failed'),
    );
  };
  process.on('SIGHUP', onSighup);
  services.push({ close: () => void process.off('SIGHUP', onSighup) });
  for (const l of listeners) log.info({ listener: l.name, engine: l.engine, host: config.host, port: l.port }, `listening: ${l.name} on port ${l.port} (${l.engine})`);
  for (const l of listeners) http.trackListener(l); // web
  http.setReady(true); // web

  let stopping: Promise<void> | undefined;
  return {
    broker,
    listeners,
    config,
    stateStore,
    backup,
    storage,
    bridges,
    cluster,
    port(name: string): number {
      const l = listeners.find((x) => x.name === name);
      if (!l) throw new Error(`no listener named ${name}`);
      return l.port;
    },
    stop(): Promise<void> {
      stopping ??= (async () => {
        http.setReady(false); // web
        const closing = listeners.map((l) => l.close());
        await broker.close();
        await backup.close();
        try {
          if (!durable) await backup.save();
        } catch (err) {
          log.error({ err }, 'backup failed');
        }
        for (const s of [...services].reverse()) {
          try {
            await s.close();
          } catch (err) {
            log.error({ err }, 'service failed to close');
          }
        }
        await Promise.all(closing);
        try {
          sessionLog?.flush(); // what the disconnects just changed
          clusterSessions?.sessionLog.flush();
          await storage.close();
        } catch (err) {
          log.error({ err }, 'storage failed to close');
        }
      })();
      return stopping;
    },
  };
}
