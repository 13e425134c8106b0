/**
 * The operators' HTTP service on EDB_HTTP_PORT: status page, /metrics, /healthz, /readyz,
 * /api/clients, /api/subscriptions, /api/status. Other parts mount their own handlers on
 * `router` (the rules API at /rules) and add status-page sections and metric series.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { gzipSync } from 'node:zlib';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { BrokerApi } from '../broker/api.js';
import type { Config } from '../config/schema.js';
import type { Listener } from '../transport/connection.js';
import { clientsHandler, statusHandler, subscriptionsHandler, type StatusSection } from './api.js';
import { healthzHandler, readyzHandler } from './health.js';
import type { ListenerState } from './metrics.js';
import { RateHistory } from './rates.js';
import { HttpRouter, startHttpServer, type HttpHandler, type HttpListener, type HttpRequest, type HttpResponse } from './server.js';
import type { WsEngineSetting } from '../transport/uws.js';
import { STATUS_HTML, STATUS_JS, TRY_HTML, TRY_JS } from './status/page.js';
import { HttpAccess, requiredAccess } from './access.js';
import { mountConsole } from './console.js';
import { loadTlsOptions } from '../transport/tls-options.js';

export interface HttpService {
  /** Mount more handlers here (e.g. `router.mount('/rules', rulesHandler)`). */
  readonly router: HttpRouter;
  /**
   * Adds a part's series to /metrics (`registers: [registry]`). prom-client and every series
   * are set up on the first scrape, not at start (a broker nobody scrapes never loads them),
   * so `register` runs then; added after that, it runs at once.
   */
  addMetrics(register: (registry: Registry) => void | Promise<void>): void;
  /** Who may use the HTTP surfaces (shared with the standalone rules port). */
  readonly access: HttpAccess;
  /** The bound HTTP listener, or undefined when EDB_HTTP_PORT is -1. */
  readonly listener: HttpListener | undefined;
  /** Adds a block to the status page ("rules", "state"), read at each refresh. */
  addStatusSection(name: string, read: StatusSection): void;
  /** Tells the service about a listener (shown on /status, /metrics and checked by /readyz). */
  trackListener(listener: Listener): void;
  /** Marks start-up done: /readyz answers 200 while every tracked listener is up. */
  setReady(ready: boolean): void;
  /** A part that can hold /readyz at 503: `check` returns why (shown under "waiting"), or undefined when fine. */
  addReadinessCheck(name: string, check: () => string | undefined): void;
  close(): Promise<void>;
}

interface PackageInfo {
  version: string;
}

function packageInfo(): PackageInfo {
  try {
    const require = createRequire(import.meta.url);
    // src/http/service.ts and dist/src/http/service.js both sit under the package root.
    for (const rel of ['../../package.json', '../../../package.json']) {
      try {
        const pkg = require(rel) as { name?: string; version?: string };
        if (pkg.name === 'edge-data-broker' && pkg.version) return { version: pkg.version };
      } catch {
        // try the next
      }
    }
  } catch {
    // fall through
  }
  return { version: 'unknown' };
}

/** MQTT.js's browser bundle, read once and kept (with a gzip copy) for the status page. */
function mqttBundleHandler(): HttpHandler {
  let plain: Buffer | undefined;
  let gzipped: Buffer | undefined;
  return (req: HttpRequest): HttpResponse => {
    if (!plain) {
      const require = createRequire(import.meta.url);
      plain = readFileSync(require.resolve('mqtt/dist/mqtt.min'));
      gzipped = gzipSync(plain, { level: 9 });
    }
    const headers = { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'public, max-age=3600', vary: 'accept-encoding' };
    if (/\bgzip\b/.test(req.headers['accept-encoding'] ?? '')) return { status: 200, headers: { ...headers, 'content-encoding': 'gzip' }, body: gzipped! };
    return { status: 200, headers, body: plain };
  };
}

function asset(body: string, contentType: string): HttpHandler {
  const bytes = Buffer.from(body);
  return () => ({ status: 200, headers: { 'content-type': contentType, 'cache-control': 'no-cache' }, body: bytes });
}

function listenerState(l: Listener): ListenerState {
  const listening = (l as Listener & { listening?: boolean }).listening;
  return { name: l.name, transport: l.transport, engine: l.engine, port: l.port, up: listening ?? true };
}

export interface HttpServiceOptions {
  /** Seconds between rate samples for the status chart (default 5; 120 samples are kept). */
  rateIntervalMs?: number;
}

/**
 * Builds the router and metrics and, unless EDB_HTTP_PORT is -1, binds the HTTP server
 * (engine per EDB_WS_ENGINE, like the WebSocket listener).
 */
export async function startHttpService(broker: BrokerApi, config: Config, log: Logger, options: HttpServiceOptions = {}): Promise<HttpService> {
  const router = new HttpRouter(log);
  const tracked: Listener[] = [];
  const sections = new Map<string, StatusSection>();
  const readinessChecks = new Map<string, () => string | undefined>();
  let ready = false;
  const listeners = (): ListenerState[] => tracked.map(listenerState);
  const metricParts: Array<(registry: Registry) => void | Promise<void>> = [];
  let registry: Promise<Registry> | undefined;
  const buildRegistry = async (): Promise<Registry> => {
    const { createBrokerMetrics } = await import('./metrics.js');
    const r = createBrokerMetrics(broker, listeners);
    for (const add of metricParts) await add(r);
    return r;
  };
  const metricsHandler: HttpHandler = async () => {
    const r = await (registry ??= buildRegistry());
    return { status: 200, headers: { 'content-type': r.contentType, 'cache-control': 'no-store' }, body: await r.metrics() };
  };
  const rates = new RateHistory(broker.stats, options.rateIntervalMs ?? 5000);
  const version = packageInfo().version;
  const tls = loadTlsOptions(config);
  const access = new HttpAccess(config, log, { secure: tls !== undefined });
  router.setGuard((req, next) => access.guard(req, requiredAccess(req.method, req.path, config.metricsAuth), next));

  router
    .get('/status', asset(STATUS_HTML, 'text/html; charset=utf-8'))
    .get('/status/app.js', asset(STATUS_JS, 'text/javascript; charset=utf-8'))
    .get('/status/try', asset(TRY_HTML, 'text/html; charset=utf-8'))
    .get('/status/try.js', asset(TRY_JS, 'text/javascript; charset=utf-8'))
    .get('/status/mqtt.min.js', mqttBundleHandler())
    .get('/metrics', metricsHandler)
    .get('/healthz', healthzHandler)
    .route('POST', '/api/login', (req) => access.login(req))
    .route('POST', '/api/logout', (req) => access.logout(req))
    .get('/api/session', (req) => access.session(req))
    .get('/readyz', readyzHandler({ get ready() { return ready; }, listeners, checks: () => {
      const out: Record<string, string> = {};
      for (const [name, check] of readinessChecks) {
        const why = check();
        if (why !== undefined) out[name] = why;
      }
      return out;
    } }))
    .get('/api/clients', clientsHandler(broker))
    .get('/api/subscriptions', subscriptionsHandler(broker))
    .get('/api/status', statusHandler(broker, { version, listeners, rates, sections }));

  mountConsole(router); // the console at /

  let listener: HttpListener | undefined;
  if (config.httpPort >= 0) {
    listener = await startHttpServer({ host: config.host, port: config.httpPort, engine: config.wsEngine as WsEngineSetting, router, log, ...(tls ? { tls } : {}) });
    tracked.push(listener);
  }
  rates.start();

  return {
    router,
    access,
    listener,
    addMetrics(register) {
      metricParts.push(register);
      if (registry) registry = registry.then(async (r) => (await register(r), r));
    },
    addStatusSection(name, read) {
      sections.set(name, read);
    },
    trackListener(l) {
      if (!tracked.includes(l)) tracked.push(l);
    },
    setReady(value) {
      ready = value;
    },
    addReadinessCheck(name, check) {
      readinessChecks.set(name, check);
    },
    async close() {
      ready = false;
      rates.stop();
      await listener?.close();
    },
  };
}
