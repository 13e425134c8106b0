/**
 * One HTTP server for operators (status page, /metrics, health, REST API), on
 * uWebSockets.js when it loads and on node:http otherwise, with a tiny router other parts
 * mount handlers on. Handlers see a plain request (method, path, query, headers, whole
 * body) and return a plain response; the engine never leaks into them. A response may
 * instead be a stream of server-sent events (`eventStream`): the handler gets a small sink,
 * the same on both engines.
 */
import { listenServer } from '../transport/listen.js';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { TlsServerOptions } from '../transport/tls-options.js';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Listener } from '../transport/connection.js';
import { chooseEngine, loadUws, uwsAddressText, type UwsListenSocket, type WsEngineSetting } from '../transport/uws.js';

export interface HttpRequest {
  /** Upper case: "GET", "POST", ... */
  method: string;
  /** The path without the query string, e.g. "/rules/house". */
  path: string;
  /** The raw query string without "?", "" when none. */
  query: string;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: Buffer;
  remoteAddress: string;
  /** Who is asking, set by the router's guard (src/http/access.ts) before the handler runs. */
  principal?: { user: string; role: 'viewer' | 'operator' | 'admin'; via: string; aclUser: string | undefined };
}

export interface HttpResponse {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Instead of a body: the response stays open and `open` writes to it (server-sent events). */
  stream?: (out: ResponseStream) => void;
}

/** An open response (server-sent events). */
export interface ResponseStream {
  /**
   * Sends text now. A client that does not read is not buffered for: a write while the
   * previous one is still waiting for the socket closes the stream (an EventSource reconnects).
   */
  write(text: string): void;
  close(): void;
  /** Called once when the stream ends: closed here, by the client, or by the server stopping. */
  onClose(callback: () => void): void;
  readonly closed: boolean;
}

/** A text/event-stream response: `open` gets the stream once the headers are sent. */
export function eventStream(open: (out: ResponseStream) => void): HttpResponse {
  return {
    status: 200,
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' },
    stream: open,
  };
}

/** The engine-independent half of a stream: close-once and the close callbacks. */
class StreamState {
  closed = false;
  private readonly callbacks: (() => void)[] = [];
  onClose(callback: () => void): void {
    if (this.closed) callback();
    else this.callbacks.push(callback);
  }
  /** Marks the stream closed; true the first time. */
  end(): boolean {
    if (this.closed) return false;
    this.closed = true;
    for (const cb of this.callbacks.splice(0)) {
      try {
        cb();
      } catch {
        // a callback's failure must not keep the others from running
      }
    }
    return true;
  }
}

export type HttpHandler = (req: HttpRequest) => Promise<HttpResponse> | HttpResponse;

/** Runs before every handler (access control): answers itself, or calls `next`. */
export type HttpGuard = (req: HttpRequest, next: (req: HttpRequest) => Promise<HttpResponse>) => Promise<HttpResponse>;

export function json(status: number, value: unknown, headers: Record<string, string> = {}): HttpResponse {
  return { status, headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers }, body: JSON.stringify(value) };
}

export function text(status: number, body: string, contentType = 'text/plain; charset=utf-8'): HttpResponse {
  return { status, headers: { 'content-type': contentType }, body };
}

/**
 * Exact routes by method and path, and mounted prefixes (a handler mounted at "/rules"
 * gets "/rules" and everything under "/rules/", with the full path, any method).
 */
export class HttpRouter {
  private readonly routes = new Map<string, Map<string, HttpHandler>>();
  private readonly mounts: { prefix: string; handler: HttpHandler }[] = [];
  private guard: HttpGuard | undefined;

  constructor(private readonly log?: Logger) {}

  /** `method` "GET" also answers HEAD. */
  route(method: string, path: string, handler: HttpHandler): this {
    let byMethod = this.routes.get(path);
    if (!byMethod) this.routes.set(path, (byMethod = new Map()));
    if (byMethod.has(method.toUpperCase())) throw new Error(`HTTP route ${method} ${path} is already taken`);
    byMethod.set(method.toUpperCase(), handler);
    return this;
  }

  get(path: string, handler: HttpHandler): this {
    return this.route('GET', path, handler);
  }

  mount(prefix: string, handler: HttpHandler): this {
    const clean = prefix.replace(/\/+$/, '');
    if (!clean.startsWith('/')) throw new Error(`HTTP mount point must start with "/": ${prefix}`);
    if (this.mounts.some((m) => m.prefix === clean)) throw new Error(`HTTP mount point ${clean} is already taken`);
    this.mounts.push({ prefix: clean, handler });
    // Longest prefix first.
    this.mounts.sort((a, b) => b.prefix.length - a.prefix.length);
    return this;
  }

  /** Put `guard` in front of every route (one guard; access control). */
  setGuard(guard: HttpGuard): this {
    this.guard = guard;
    return this;
  }

  /** Never throws: a failing handler becomes a 500 with a log line. */
  async handle(req: HttpRequest): Promise<HttpResponse> {
    try {
      if (this.guard) return await this.guard(req, (r) => this.dispatch(r));
      return await this.dispatch(req);
    } catch (err) {
      this.log?.error({ err, method: req.method, path: req.path }, 'HTTP handler failed');
      return json(500, { error: 'internal', message: 'the request failed; see the broker log' });
    }
  }

  private async dispatch(req: HttpRequest): Promise<HttpResponse> {
    {
      const byMethod = this.routes.get(req.path);
      if (byMethod) {
        const handler = byMethod.get(req.method) ?? (req.method === 'HEAD' ? byMethod.get('GET') : undefined);
        if (!handler) return { ...json(405, { error: 'method_not_allowed', message: `${req.method} is not allowed on ${req.path}` }), headers: { allow: [...byMethod.keys()].join(', '), 'content-type': 'application/json; charset=utf-8' } };
        return await handler(req);
      }
      for (const m of this.mounts) {
        if (req.path === m.prefix || req.path.startsWith(`${m.prefix}/`)) return await m.handler(req);
      }
      return json(404, { error: 'not_found', message: `nothing at ${req.path}` });
    }
  }
}

export interface HttpServerOptions {
  host: string;
  port: number;
  engine: WsEngineSetting;
  router: HttpRouter;
  log: Logger;
  /** Request bodies larger than this get 413. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Serve HTTPS with this certificate and key (client certificates are not asked for). */
  tls?: TlsServerOptions;
}

export interface HttpListener extends Listener {
  readonly transport: 'http';
  readonly engine: 'uWebSockets.js' | 'node:http';
  readonly fallbackReason: string | undefined;
  readonly listening: boolean;
  readonly secure: boolean;
}

function statusLine(status: number): string {
  return `${status} ${STATUS_CODES[status] ?? 'Unknown'}`;
}

function bodyBytes(body: string | Buffer | undefined): Buffer {
  if (body === undefined) return Buffer.alloc(0);
  return typeof body === 'string' ? Buffer.from(body) : body;
}

/** Starts the HTTP server on the engine asked for (falling back to node:http) and resolves once bound. */
export async function startHttpServer(options: HttpServerOptions): Promise<HttpListener> {
  const choice = chooseEngine(options.engine);
  const log = options.log.child({ listener: 'http' });
  const listener = choice.engine === 'uWebSockets.js' ? await startUwsHttp(options) : await startNodeHttp(options, choice.fallbackReason);
  log.info(
    { port: listener.port, engine: listener.engine, ...(listener.fallbackReason ? { fallbackReason: listener.fallbackReason } : {}) },
    `${options.tls ? 'HTTPS' : 'HTTP'} (console, status, metrics, API) on port ${listener.port} (engine ${listener.engine})`,
  );
  return listener;
}

async function startUwsHttp(options: HttpServerOptions): Promise<HttpListener> {
  const loaded = loadUws();
  if (!loaded.ok) throw new Error(`uWebSockets.js cannot load: ${loaded.reason}`);
  const uws = loaded.uws;
  const maxBody = options.maxBodyBytes ?? 1024 * 1024;
  const app = options.tls ? uws.SSLApp({ cert_file_name: options.tls.files.cert, key_file_name: options.tls.files.key }) : uws.App();
  let listening = false;

  app.any('/*', (res, req) => {
    // Everything from `req` must be read now: it is invalid after this callback returns.
    const method = req.getMethod().toUpperCase();
    const path = req.getUrl();
    const query = req.getQuery() ?? '';
    const headers: Record<string, string> = {};
    req.forEach((k, v) => {
      headers[k] = v;
    });
    const remoteAddress = uwsAddressText(res.getRemoteAddressAsText());
    let aborted = false;
    let stream: StreamState | undefined;
    res.onAborted(() => {
      aborted = true;
      stream?.end();
    });

    const respond = (response: HttpResponse): void => {
      if (aborted) return;
      if (response.stream && method !== 'HEAD') {
        const state = (stream = new StreamState());
        let waiting = false;
        res.onWritable(() => {
          waiting = false;
          return true;
        });
        const send = (text: string): void => {
          if (state.closed) return;
          if (waiting) {
            out.close();
            return;
          }
          res.cork(() => {
            waiting = !res.write(text);
          });
        };
        const out: ResponseStream = {
          write: send,
          close() {
            if (state.end() && !aborted) res.cork(() => res.end());
          },
          onClose: (cb) => state.onClose(cb),
          get closed() {
            return state.closed;
          },
        };
        res.cork(() => {
          res.writeStatus(statusLine(response.status));
          for (const [k, v] of Object.entries(response.headers ?? {})) res.writeHeader(k, v);
          // a comment line sends the headers now
          res.write(': open\n\n');
        });
        response.stream(out);
        return;
      }
      const body = bodyBytes(response.body);
      res.cork(() => {
        res.writeStatus(statusLine(response.status));
        for (const [k, v] of Object.entries(response.headers ?? {})) res.writeHeader(k, v);
        if (method === 'HEAD') res.endWithoutBody(body.length);
        else res.end(body);
      });
    };
    const dispatch = (body: Buffer): void => {
      void options.router.handle({ method, path, query, headers, body, remoteAddress }).then(respond);
    };

    const length = headers['content-length'];
    if (length === undefined && headers['transfer-encoding'] === undefined) {
      dispatch(Buffer.alloc(0));
      return;
    }
    if (length !== undefined && Number(length) > maxBody) {
      respond(json(413, { error: 'too_large', message: `request body over ${maxBody} bytes` }));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    res.onData((chunk, isLast) => {
      if (refused) return;
      size += chunk.byteLength;
      if (size > maxBody) {
        refused = true;
        respond(json(413, { error: 'too_large', message: `request body over ${maxBody} bytes` }));
        return;
      }
      // The ArrayBuffer is only valid during this call: copy.
      chunks.push(Buffer.copyBytesFrom(new Uint8Array(chunk)));
      if (isLast) dispatch(Buffer.concat(chunks, size));
    });
  });

  const listenSocket = await new Promise<UwsListenSocket>((resolve, reject) => {
    app.listen(options.host, options.port, (socket) => {
      if (socket) resolve(socket);
      else reject(new Error(`http: cannot listen on ${options.host}:${options.port} (port in use or address not available)`));
    });
  });
  listening = true;
  return {
    name: 'http',
    transport: 'http',
    engine: 'uWebSockets.js',
    fallbackReason: undefined,
    secure: options.tls !== undefined,
    port: uws.us_socket_local_port(listenSocket as never),
    get listening() {
      return listening;
    },
    async close() {
      if (!listening) return;
      listening = false;
      uws.us_listen_socket_close(listenSocket);
      app.close();
    },
  };
}

async function startNodeHttp(options: HttpServerOptions, fallbackReason: string | undefined): Promise<HttpListener> {
  const maxBody = options.maxBodyBytes ?? 1024 * 1024;
  const sockets = new Set<Socket>();
  let listening = false;

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    const address = req.socket.remoteAddress ?? '';
    const remoteAddress = address.startsWith('::ffff:') ? address.slice(7) : address;

    const respond = (response: HttpResponse): void => {
      if (res.destroyed) return;
      if (response.stream && method !== 'HEAD') {
        const state = new StreamState();
        res.on('close', () => state.end());
        res.writeHead(response.status, response.headers);
        res.write(': open\n\n'); // sends the headers now
        response.stream({
          write(text) {
            if (state.closed) return;
            // still waiting for the socket to take the last write: the client is not reading
            if (res.writableNeedDrain) this.close();
            else res.write(text);
          },
          close() {
            if (state.end()) res.end();
          },
          onClose: (cb) => state.onClose(cb),
          get closed() {
            return state.closed;
          },
        });
        return;
      }
      const body = bodyBytes(response.body);
      res.writeHead(response.status, { ...response.headers, 'content-length': String(body.length) });
      res.end(method === 'HEAD' ? undefined : body);
    };
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > maxBody) {
        refused = true;
        res.setHeader('connection', 'close');
        respond(json(413, { error: 'too_large', message: `request body over ${maxBody} bytes` }));
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (refused) return;
      void options.router.handle({ method, path, query, headers, body: Buffer.concat(chunks, size), remoteAddress }).then(respond);
    });
    req.on('error', () => res.destroy());
  };
  const server = options.tls ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, onRequest) : createServer(onRequest);
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const port = await listenServer(server, 'http', options.host, options.port);
  listening = true;
  return {
    name: 'http',
    transport: 'http',
    engine: 'node:http',
    fallbackReason,
    secure: options.tls !== undefined,
    port,
    get listening() {
      return listening;
    },
    async close() {
      if (!listening) return;
      listening = false;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
