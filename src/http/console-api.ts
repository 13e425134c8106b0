/**
 * The JSON API behind the console (see docs/console.md), mounted on the HTTP port beside
 * /api/status; access per src/http/access.ts (reads: viewer, publish: operator, state
 * writes and disconnects: admin).
 *
 *   GET    /api/topics?prefix=a/b            children of a branch: counts, rates, retained
 *   GET    /api/topics/search?q=a/+/c        topics matching a filter (or containing a text)
 *   GET    /api/topics/message?topic=a/b/c   the last message of a topic (payload base64)
 *   POST   /api/publish                      {topic, payload, encoding?, qos?, retain?}
 *   GET    /api/state/keys?prefix=&after=&limit=   keys with version and expiry, paged
 *   GET    /api/state/key?key=               value, version, expiry
 *   GET    /api/state/watch?key=             server-sent events: the key now, then after each change
 *   PUT    /api/state/key?key=               {value, encoding?, ttlMs?}
 *   DELETE /api/state/key?key=
 *   DELETE /api/clients?clientId=            disconnect a client (v5: 0x98 Administrative action)
 */
import type { BrokerApi } from '../broker/api.js';
import type { StateStoreService } from '../state/service.js';
import type { TopicTree } from './topic-tree.js';
import { eventStream, json, type HttpRequest, type HttpRouter } from './server.js';

export interface ConsoleApiOptions {
  /** The ACL for a console user: publishing from the console is bounded by the user's ACL like an MQTT client's. */
  canPublish?: (aclUser: string, topic: string) => boolean;
}

const MAX_PAGE = 1000;
/** Watch streams open at once (each holds a connection and a listener on its key). */
export const MAX_STATE_WATCHES = 256;
/** A comment line this often keeps proxies and browsers from closing an idle stream. */
const WATCH_PING_MS = 25_000;

function params(req: HttpRequest): URLSearchParams {
  return new URLSearchParams(req.query);
}

function bodyJson(req: HttpRequest): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(req.body.toString('utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function bad(message: string) {
  return json(400, { error: 'bad_request', message });
}

/** A topic name a client could publish to: not empty, no wildcards, no NUL, at most 65535 bytes. */
export function topicNameProblem(topic: unknown): string | undefined {
  if (typeof topic !== 'string' || topic === '') return 'topic: a non-empty string';
  if (/[+#\u0000]/.test(topic)) return 'topic: no wildcards (+ #) or NUL in a topic name';
  if (Buffer.byteLength(topic) > 65535) return 'topic: at most 65535 bytes';
  return undefined;
}

function decodeValue(value: unknown, encoding: unknown, what: string): Buffer | string {
  if (typeof value !== 'string') return `${what}: a string`;
  if (encoding === 'base64') {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value)) return `${what}: not base64`;
    return Buffer.from(value, 'base64');
  }
  if (encoding !== undefined && encoding !== 'utf8') return 'encoding: "utf8" or "base64"';
  return Buffer.from(value, 'utf8');
}

/** A key or value for JSON: text when it is printable UTF-8, and always base64. */
function bytesJson(b: Buffer): { text?: string; base64: string } {
  const text = b.toString('utf8');
  const printable = Buffer.from(text, 'utf8').equals(b) && !/[\u0000-\u0008\u000e-\u001f]/.test(text);
  return { ...(printable ? { text } : {}), base64: b.toString('base64') };
}

export function mountConsoleApi(router: HttpRouter, broker: BrokerApi, tree: TopicTree, state: StateStoreService | undefined, options: ConsoleApiOptions = {}): void {
  router
    .get('/api/topics', (req) => {
      tree.touch();
      const prefix = params(req).get('prefix') ?? '';
      const { rows, more } = tree.children(prefix);
      return json(200, { prefix, rows, more, totalTopics: tree.entries.size, overflow: tree.overflow });
    })
    .get('/api/topics/search', (req) => {
      tree.touch();
      const q = params(req).get('q') ?? '';
      if (q === '') return bad('q: a topic filter (a/+/c, a/#) or a text');
      return json(200, { q, ...tree.search(q) });
    })
    .get('/api/topics/message', (req) => {
      tree.touch();
      const topic = params(req).get('topic') ?? '';
      const e = tree.entries.get(topic);
      if (!e) return json(404, { error: 'not_found', message: `no message seen on ${JSON.stringify(topic)}` });
      const m = e.last!;
      return json(200, {
        topic,
        messages: e.messages,
        rate: e.rate,
        at: e.lastAt,
        qos: m.qos,
        retain: m.retain,
        bytes: m.payload.length,
        payload: m.payload.subarray(0, 65536).toString('base64'),
        truncated: m.payload.length > 65536,
        ...(m.properties?.contentType ? { contentType: m.properties.contentType } : {}),
      });
    })
    .route('POST', '/api/publish', (req) => {
      const b = bodyJson(req);
      if (!b) return bad('expected {"topic": ..., "payload": ...}');
      const problem = topicNameProblem(b['topic']);
      if (problem) return bad(problem);
      const topic = b['topic'] as string;
      const payload = decodeValue(b['payload'] ?? '', b['encoding'], 'payload');
      if (typeof payload === 'string') return bad(payload);
      const qos = b['qos'] ?? 0;
      if (qos !== 0 && qos !== 1 && qos !== 2) return bad('qos: 0, 1 or 2');
      const user = req.principal?.aclUser;
      if (user !== undefined && options.canPublish && !options.canPublish(user, topic)) {
        return json(403, { error: 'forbidden', message: `${user} may not publish to ${JSON.stringify(topic)} (ACL)` });
      }
      broker.publish({ topic, payload, qos, retain: b['retain'] === true, origin: 'console' });
      return json(200, { ok: true, topic, bytes: payload.length });
    })
    .route('DELETE', '/api/clients', (req) => {
      const id = params(req).get('clientId');
      if (!id) return bad('clientId: the client to disconnect');
      const done = broker.disconnectClient(id, 0x98, `disconnected by ${req.principal?.user ?? 'an administrator'}`);
      return done ? json(200, { ok: true, clientId: id }) : json(404, { error: 'not_found', message: `no client ${JSON.stringify(id)} is connected` });
    });

  if (!state) return;
  let watches = 0;
  router
    .get('/api/state/keys', (req) => {
      const p = params(req);
      const limitText = p.get('limit') ?? '100';
      const limit = Number(limitText);
      if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) return bad(`limit: 1 to ${MAX_PAGE}`);
      const after = p.get('after');
      const { keys, more } = state.listKeys(Buffer.from(p.get('prefix') ?? '', 'utf8'), after === null ? undefined : Buffer.from(after, 'utf8'), limit);
      const rows = keys.map((k) => ({ key: bytesJson(k.key), bytes: k.bytes, version: k.version, expiresAt: k.expiresAt || null }));
      const last = keys[keys.length - 1];
      return json(200, { keys: rows, more, ...(more && last ? { next: last.key.toString('utf8') } : {}) });
    })
    .get('/api/state/key', (req) => {
      const key = params(req).get('key');
      if (!key) return bad('key: the key');
      const v = state.readKey(Buffer.from(key, 'utf8'));
      if (!v) return json(404, { error: 'not_found', message: `no key ${JSON.stringify(key)}` });
      return json(200, { key, value: bytesJson(v.value), bytes: v.value.length, version: v.version, expiresAt: v.expiresAt || null });
    })
    // "watch a key" in the console: pushed from the state store's own notifications (the
    // same changes KEYNOTIFY reports), not polled. Event "value": {key, value, bytes, version,
    // expiresAt} or {key, absent: true}; first the key as it is now, then after each change.
    .get('/api/state/watch', (req) => {
      const key = params(req).get('key');
      if (!key) return bad('key: the key');
      if (watches >= MAX_STATE_WATCHES) return json(503, { error: 'busy', message: `${MAX_STATE_WATCHES} keys are watched already; close a watch first` });
      const k = Buffer.from(key, 'utf8');
      return eventStream((out) => {
        watches++;
        const send = (value: Buffer | undefined, version: string | undefined, expiresAt: number): void => {
          const data = value === undefined ? { key, absent: true } : { key, value: bytesJson(value), bytes: value.length, version, expiresAt: expiresAt || null };
          out.write(`event: value\ndata: ${JSON.stringify(data)}\n\n`);
        };
        const current = state.readKey(k);
        send(current?.value, current?.version, current?.expiresAt ?? 0);
        // told in the middle of a write (or of the expiry sweep): the expiry is read once it is done
        const stop = state.watchKey(k, (value, version) => {
          if (value === undefined) send(undefined, version, 0);
          else
            queueMicrotask(() => {
              if (out.closed) return;
              const now = state.readKey(k);
              send(value, version, now && now.version === version ? now.expiresAt : 0);
            });
        });
        const ping = setInterval(() => out.write(': ping\n\n'), WATCH_PING_MS);
        ping.unref();
        out.onClose(() => {
          watches--;
          stop();
          clearInterval(ping);
        });
      });
    })
    .route('PUT', '/api/state/key', (req) => {
      const key = params(req).get('key');
      if (!key) return bad('key: the key');
      const b = bodyJson(req);
      if (!b) return bad('expected {"value": ..., "ttlMs"?: ...}');
      const value = decodeValue(b['value'], b['encoding'], 'value');
      if (typeof value === 'string') return bad(value);
      const ttl = b['ttlMs'] ?? 0;
      if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 0) return bad('ttlMs: a whole number of milliseconds (0: no expiry)');
      const r = state.writeKey(Buffer.from(key, 'utf8'), value, ttl);
      return r.ok ? json(200, { ok: true, key, version: r.version }) : json(409, { error: 'refused', message: r.error });
    })
    .route('DELETE', '/api/state/key', (req) => {
      const key = params(req).get('key');
      if (!key) return bad('key: the key');
      const r = state.deleteKey(Buffer.from(key, 'utf8'));
      if (!r.ok) return json(409, { error: 'refused', message: r.error });
      return r.deleted ? json(200, { ok: true, key }) : json(404, { error: 'not_found', message: `no key ${JSON.stringify(key)}` });
    });
}
