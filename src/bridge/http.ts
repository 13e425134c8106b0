/**
 * The bridges in the admin API (read: viewer; change: operator, src/http/access.ts):
 *
 *   GET    /api/bridges              every bridge: its state, buffer and counters, and its settings (no password)
 *   GET    /api/bridges/NAME         one
 *   POST   /api/bridges              {name, url, topics, ...}: add (409 when the name exists)
 *   PUT    /api/bridges/NAME         {url, topics, ...}: add or change in place (its backlog stays)
 *   DELETE /api/bridges/NAME         stop it and forget its backlog
 *   GET    /api/openapi.json         the OpenAPI 3 document of these routes
 *
 * A bad body is a 400 naming the bridge and the field, like the config file's errors.
 */
import { BridgeConfigError, parseBridge, type BridgeConfig } from '../config/bridges.js';
import { json, type HttpHandler, type HttpRequest } from '../http/server.js';
import { BridgeExistsError, BridgeNotFoundError, type BridgeService, type BridgeSummary } from './service.js';

/** A bridge's settings in the input form (what POST/PUT take), without the password. */
export function bridgeInput(c: BridgeConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {
    url: c.url,
    topics: c.topics.map((t) => t.line),
    protocolVersion: c.protocolVersion === 5 ? '5' : '3.1.1',
    clientId: c.clientId,
    keepAlive: c.keepAlive,
    cleanSession: c.cleanSession,
    sessionExpiry: c.sessionExpiry,
    reconnectMin: `${c.reconnectMinMs}ms`,
    reconnectMax: `${c.reconnectMaxMs}ms`,
    maxOutgoingBufferedMessages: c.maxOutgoingBufferedMessages,
    maxOutgoingBufferedBytes: c.maxOutgoingBufferedBytes,
    maxOutgoingBufferedAge: `${c.maxOutgoingBufferedAgeMs}ms`,
    maxInflight: c.maxInflight,
    maxHops: c.maxHops,
  };
  if (c.username !== undefined) out['username'] = c.username;
  if (c.password !== undefined) out['passwordSet'] = true;
  if (c.localUsername !== undefined) out['localUsername'] = c.localUsername;
  const tls: Record<string, unknown> = { verify: c.tls.verify };
  if (c.tls.ca) tls['ca'] = c.tls.ca;
  if (c.tls.cert) tls['cert'] = c.tls.cert;
  if (c.tls.key) tls['key'] = c.tls.key;
  if (c.tls.serverName) tls['serverName'] = c.tls.serverName;
  if (c.url.startsWith('mqtts:')) out['tls'] = tls;
  return out;
}

export type BridgeRow = BridgeSummary & { settings: Record<string, unknown> };

function row(service: BridgeService, name: string): BridgeRow | undefined {
  const b = service.get(name);
  return b && { ...service.summary(b), settings: bridgeInput(b.config) };
}

function body(req: HttpRequest): Record<string, unknown> | string {
  try {
    const v = JSON.parse(req.body.toString('utf8')) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
    return 'the body must be a JSON object with url, topics and other bridge settings';
  } catch {
    return 'the body is not JSON';
  }
}

const bad = (message: string) => json(400, { error: 'invalid_bridge', message });

export function bridgesHandler(service: BridgeService): HttpHandler {
  return async (req) => {
    const rest = req.path.slice('/api/bridges'.length).replace(/^\/+/, '');
    const name = rest === '' ? undefined : decodeURIComponent(rest);
    if (name !== undefined && name.includes('/')) return json(404, { error: 'not_found', message: `nothing at ${req.path}` });
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    try {
      if (name === undefined) {
        if (method === 'GET') return json(200, service.list().map((b) => row(service, b.name)));
        if (method === 'POST') {
          const b = body(req);
          if (typeof b === 'string') return bad(b);
          if (typeof b['name'] !== 'string') return bad('name: missing; give the bridge a name (lower-case letters, digits, - and _)');
          const config = parseBridge(b['name'], b);
          await service.add(config, 'api');
          return json(201, row(service, config.name));
        }
        return json(405, { error: 'method_not_allowed', message: `${req.method} is not allowed on /api/bridges (GET, POST)` });
      }
      if (method === 'GET') {
        const r = row(service, name);
        return r ? json(200, r) : json(404, { error: 'not_found', message: `no bridge ${name}` });
      }
      if (method === 'PUT') {
        const b = body(req);
        if (typeof b === 'string') return bad(b);
        if (b['name'] !== undefined && b['name'] !== name) return bad(`name: the body says ${String(b['name'])}, the path ${name}; a bridge cannot be renamed`);
        const existing = service.get(name);
        // the password is never shown, so an edit that leaves it out keeps it
        if (existing?.config.password !== undefined && b['password'] === undefined && (b['username'] === undefined || b['username'] === existing.config.username)) {
          b['password'] = existing.config.password;
          b['username'] ??= existing.config.username;
        }
        delete b['passwordSet'];
        const config = parseBridge(name, b);
        if (existing) await service.update(config, 'api');
        else await service.add(config, 'api');
        return json(existing ? 200 : 201, row(service, name));
      }
      if (method === 'DELETE') {
        await service.remove(name);
        return { status: 204, headers: {}, body: '' };
      }
      return json(405, { error: 'method_not_allowed', message: `${req.method} is not allowed on /api/bridges/${name} (GET, PUT, DELETE)` });
    } catch (err) {
      if (err instanceof BridgeConfigError) return bad(err.message);
      if (err instanceof BridgeNotFoundError) return json(404, { error: 'not_found', message: err.message });
      if (err instanceof BridgeExistsError) return json(409, { error: 'exists', message: err.message });
      throw err;
    }
  };
}

const settingsSchema = {
  type: 'object',
  required: ['url'],
  properties: {
    name: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,63}$', description: 'POST only; the path names it for PUT' },
    url: { type: 'string', example: 'mqtts://cloud.example:8883', description: 'mqtt://host:port, mqtts://host:port or host:port' },
    topics: { type: 'array', items: { type: 'string' }, example: ['sensors/# out 1 "" site1/', 'cmd/# in 1'], description: 'pattern [in|out|both [qos [local-prefix [remote-prefix]]]]; * means #' },
    protocolVersion: { type: 'string', enum: ['3.1.1', '5'] },
    clientId: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string', writeOnly: true, description: 'never shown; a PUT without it keeps the current one' },
    keepAlive: { type: 'integer', minimum: 1, maximum: 65535 },
    cleanSession: { type: 'boolean' },
    sessionExpiry: { type: 'integer', minimum: 0 },
    tls: { type: 'object', properties: { ca: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, serverName: { type: 'string' }, verify: { type: 'boolean' } } },
    reconnectMin: { type: 'string', example: '1s' },
    reconnectMax: { type: 'string', example: '2m' },
    maxOutgoingBufferedMessages: { type: 'integer', minimum: 1 },
    maxOutgoingBufferedBytes: { type: 'integer', minimum: 0 },
    maxOutgoingBufferedAge: { type: 'string', example: '1h' },
    maxInflight: { type: 'integer', minimum: 1, maximum: 65535 },
    maxHops: { type: 'integer', minimum: 1, maximum: 255, description: 'bridges a message may have crossed (edb-bridge-path) and still go over this one' },
    localUsername: { type: 'string', description: 'the ACL identity of what the bridge publishes locally' },
  },
};

const bridgeSchema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    endpoint: { type: 'string' },
    state: { type: 'string', enum: ['connecting', 'connected', 'disconnected', 'stopped'] },
    source: { type: 'string', enum: ['config', 'api'] },
    protocolVersion: { type: 'integer', enum: [4, 5] },
    topics: { type: 'array', items: { type: 'string' } },
    bufferSize: { type: 'integer', description: 'messages held for the remote (QoS 1/2 backlog + QoS 0 buffer)' },
    bufferMax: { type: 'integer' },
    bufferDropped: { type: 'integer', description: 'dropped, oldest first: by the bounds, or with a generation the durable log dropped (the sum of dropped)' },
    dropped: { type: 'object', description: 'messages dropped by reason: buffer_full, too_old (the bridge\'s bounds); retention, size_cap (the durable log dropped the generation holding them)', properties: { buffer_full: { type: 'integer' }, too_old: { type: 'integer' }, retention: { type: 'integer' }, size_cap: { type: 'integer' } } },
    backlogMessages: { type: 'integer' },
    backlogBytes: { type: 'integer' },
    qos0Buffered: { type: 'integer' },
    oldestMs: { type: 'integer', description: 'age of the oldest message held' },
    sentPerSecond: { type: 'integer' },
    receivedPerSecond: { type: 'integer' },
    messagesOut: { type: 'integer' },
    messagesIn: { type: 'integer' },
    reconnects: { type: 'integer' },
    connectedSince: { type: 'integer' },
    lastError: { type: 'string' },
    nextAttemptInMs: { type: 'integer', description: 'while disconnected: ms until the next connection attempt (back-off from reconnectMin doubling to reconnectMax, +-20 % jitter)' },
    settings: settingsSchema,
  },
};

const error = { description: 'error', content: { 'application/json': { schema: { type: 'object', properties: { error: { type: 'string' }, message: { type: 'string' } } } } } };
const nameParam = { name: 'name', in: 'path', required: true, schema: { type: 'string' } };
const one = { description: 'the bridge', content: { 'application/json': { schema: { $ref: '#/components/schemas/Bridge' } } } };
const input = { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/BridgeSettings' } } } };

/** OpenAPI 3 for /api/bridges (GET /api/openapi.json). */
export function adminOpenApiDocument(version: string): Record<string, unknown> {
  return {
    openapi: '3.0.3',
    info: { title: 'Edge Data Broker admin API: bridges', version, description: 'Bridges to other brokers (docs/bridges.md). Reading needs the viewer role; changing, operator.' },
    paths: {
      '/api/bridges': {
        get: { summary: 'every bridge', responses: { 200: { description: 'the bridges', content: { 'application/json': { schema: { type: 'array', items: { $ref: '#/components/schemas/Bridge' } } } } } } },
        post: { summary: 'add a bridge', requestBody: input, responses: { 201: one, 400: error, 409: error } },
      },
      '/api/bridges/{name}': {
        parameters: [nameParam],
        get: { summary: 'one bridge', responses: { 200: one, 404: error } },
        put: { summary: 'add or change a bridge in place (its backlog stays)', requestBody: input, responses: { 200: one, 201: one, 400: error } },
        delete: { summary: 'remove a bridge and its backlog', responses: { 204: { description: 'removed' }, 404: error } },
      },
    },
    components: { schemas: { Bridge: bridgeSchema, BridgeSettings: settingsSchema } },
  };
}
