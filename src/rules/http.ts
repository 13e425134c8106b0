/**
 * The rules HTTP API as a framework-agnostic handler, mounted by the standalone server
 * (EDB_RULES_PORT, below) and by the main HTTP layer under /rules.
 *
 *   GET / | POST / | PATCH / | DELETE /   the document (spec table), ETag / If-Match
 *   GET /openapi.json                     OpenAPI 3
 *   GET /docs                             Swagger UI (served from swagger-ui-dist, no CDN)
 *   GET /source                           the generated AssemblyScript of the active document
 *   POST /test                            a dry run: what a document would publish and write
 */
import { listenServer } from '../transport/listen.js';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Listener } from '../transport/connection.js';
import { RulesError, RulesErrorCode } from './errors.js';
import { openApiDocument } from './openapi.js';
import type { RulesService, WriteResult } from './service.js';
import type { RulesAuthor } from './author-check.js';
import { createServer as createHttpsServer } from 'node:https';
import type { TlsServerOptions } from '../transport/tls-options.js';

export interface RulesHttpRequest {
  method: string;
  /** Path below the mount point, or the full path starting with the handler's basePath (query string allowed). */
  path: string;
  /** Lower-case header names. */
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** Who is asking (set by the access guard); becomes the author of an uploaded document. */
  principal?: { user: string; via: string; aclUser: string | undefined };
}

/**
 * Access control in front of the standalone server (the main HTTP port's, see
 * src/http/access.ts): answers itself, or calls `next` with the request and its principal.
 */
export type RulesHttpGuard = (
  req: { method: string; path: string; query: string; headers: Record<string, string>; body: Buffer; remoteAddress: string },
  next: (req: RulesHttpRequest) => Promise<RulesHttpResponse>,
) => Promise<{ status: number; headers?: Record<string, string>; body?: string | Buffer }>;

export interface RulesHttpResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer | string;
}

export type RulesHttpHandler = (req: RulesHttpRequest) => Promise<RulesHttpResponse>;

/** Largest document accepted, in bytes. */
export const MAX_BODY_BYTES = 16 * 1024 * 1024;

const SWAGGER_ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'application/javascript; charset=utf-8',
  'swagger-ui-standalone-preset.js': 'application/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
  'favicon-16x16.png': 'image/png',
};

let swaggerDir: string | undefined;
function swaggerAsset(name: string): Buffer | undefined {
  if (!(name in SWAGGER_ASSETS)) return undefined;
  if (swaggerDir === undefined) {
    const require = createRequire(import.meta.url);
    swaggerDir = join(require.resolve('swagger-ui-dist/package.json'), '..');
  }
  return readFileSync(join(swaggerDir, name));
}

function docsPage(basePath: string): string {
  const b = basePath.replace(/"/g, '');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Edge Data Broker rules API</title>
<link rel="stylesheet" href="${b}/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="${b}/docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="${b}/docs/swagger-ui-bundle.js"></script>
<script src="${b}/docs/swagger-ui-standalone-preset.js"></script>
<script src="${b}/docs/init.js"></script>
</body>
</html>
`;
}

function initScript(basePath: string): string {
  return `window.ui = SwaggerUIBundle({ url: ${JSON.stringify(`${basePath}/openapi.json`)}, dom_id: '#swagger-ui', presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: 'StandaloneLayout' });\n`;
}

function json(status: number, value: unknown, headers: Record<string, string> = {}): RulesHttpResponse {
  return { status, headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers }, body: JSON.stringify(value, null, 2) + '\n' };
}

function header(req: RulesHttpRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

function written(result: WriteResult): RulesHttpResponse {
  return json(200, result, { etag: result.etag });
}

/** Builds the handler; `basePath` is where it is mounted ("" standalone, "/rules" on the main port). */
export function createRulesHttpHandler(service: RulesService, options: { basePath?: string } = {}): RulesHttpHandler {
  const basePath = (options.basePath ?? '').replace(/\/+$/, '');
  const openapi = JSON.stringify(openApiDocument(basePath), null, 2);
  return async function handleRulesHttp(req: RulesHttpRequest): Promise<RulesHttpResponse> {
    let path = req.path.split('?')[0] || '/';
    // mounted under basePath by a router that passes the full path ("/rules/docs")
    if (basePath !== '' && (path === basePath || path.startsWith(`${basePath}/`))) path = path.slice(basePath.length) || '/';
    const method = req.method.toUpperCase();
    const p = req.principal;
    // a trusted address (no user name) uploads unchecked, like the rules file
    const author: RulesAuthor | undefined = p ? { user: p.aclUser, via: p.via === 'trusted' ? 'trusted' : p.user } : undefined;
    try {
      if (path === '/' || path === '') {
        const ifMatch = header(req, 'if-match');
        if (req.body.length > MAX_BODY_BYTES) throw new RulesError(RulesErrorCode.tooLarge, '', `a document is at most ${MAX_BODY_BYTES} bytes`);
        switch (method) {
          case 'GET':
          case 'HEAD': {
            const { text, etag } = service.currentText();
            if (header(req, 'if-none-match')?.split(',').some((t) => t.trim() === etag)) return { status: 304, headers: { etag }, body: '' };
            const by = service.author();
            const res: RulesHttpResponse = {
              status: 200,
              headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', etag, ...(by ? { 'x-edb-uploaded-by': encodeURIComponent(by.via), 'x-edb-uploaded-at': by.at } : {}) },
              body: text,
            };
            return method === 'HEAD' ? { ...res, body: '' } : res;
          }
          case 'POST':
          case 'PUT':
            return written(await service.replace(req.body.toString('utf8'), ifMatch, author));
          case 'PATCH':
            return written(await service.patch(req.body.toString('utf8'), ifMatch, author));
          case 'DELETE':
            return written(await service.clear(ifMatch, author));
          default:
            return json(405, { error: { code: 'EDB_METHOD_NOT_ALLOWED', message: `${method} is not supported on /` } }, { allow: 'GET, HEAD, POST, PUT, PATCH, DELETE' });
        }
      }
      if (path === '/test') {
        if (method !== 'POST') return json(405, { error: { code: 'EDB_METHOD_NOT_ALLOWED', message: `${method} is not supported on /test` } }, { allow: 'POST' });
        if (req.body.length > MAX_BODY_BYTES) throw new RulesError(RulesErrorCode.tooLarge, '', `a test is at most ${MAX_BODY_BYTES} bytes`);
        return json(200, service.test(req.body.toString('utf8'), author));
      }
      if (method !== 'GET' && method !== 'HEAD') return json(405, { error: { code: 'EDB_METHOD_NOT_ALLOWED', message: `${method} is not supported on ${path}` } }, { allow: 'GET, HEAD' });
      if (path === '/source') return { status: 200, headers: { 'content-type': 'text/plain; charset=utf-8', etag: service.current().etag }, body: service.source() };
      if (path === '/openapi.json') return { status: 200, headers: { 'content-type': 'application/json; charset=utf-8' }, body: openapi };
      if (path === '/docs' || path === '/docs/') return { status: 200, headers: { 'content-type': 'text/html; charset=utf-8' }, body: docsPage(basePath) };
      if (path === '/docs/init.js') return { status: 200, headers: { 'content-type': 'application/javascript; charset=utf-8' }, body: initScript(basePath) };
      if (path.startsWith('/docs/')) {
        const name = path.slice('/docs/'.length);
        const asset = swaggerAsset(name);
        if (asset) return { status: 200, headers: { 'content-type': SWAGGER_ASSETS[name]!, 'cache-control': 'public, max-age=86400' }, body: asset };
      }
      return json(404, { error: { code: 'EDB_NOT_FOUND', message: `no such path: ${path}` } });
    } catch (err) {
      if (err instanceof RulesError) return json(err.status, err.toJSON());
      return json(500, { error: { code: 'EDB_INTERNAL', message: (err as Error).message } });
    }
  };
}

export interface RulesServerOptions {
  /** The same access control as the main HTTP port. */
  guard?: RulesHttpGuard;
  /** HTTPS with this certificate and key. */
  tls?: TlsServerOptions;
}

/** The standalone rules API server (EDB_RULES_PORT) on node:http (node:https with a certificate). */
export async function startRulesHttpServer(service: RulesService, host: string, port: number, options: RulesServerOptions = {}): Promise<Listener> {
  const handle = createRulesHttpHandler(service);
  const guard = options.guard;
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) tooLarge = true;
      else chunks.push(c);
    });
    req.on('error', () => res.destroy());
    req.on('end', () => {
      const send = (r: RulesHttpResponse): void => {
        res.writeHead(r.status, r.headers);
        res.end(r.body);
      };
      if (tooLarge) {
        const e = new RulesError(RulesErrorCode.tooLarge, '', `a document is at most ${MAX_BODY_BYTES} bytes`);
        send({ status: e.status, headers: { 'content-type': 'application/json; charset=utf-8', connection: 'close' }, body: JSON.stringify(e.toJSON()) + '\n' });
        return;
      }
      const url = req.url ?? '/';
      const method = (req.method ?? 'GET').toUpperCase();
      const body = Buffer.concat(chunks);
      const fail = (err: Error): void => {
        send({ status: 500, headers: { 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify({ error: { code: 'EDB_INTERNAL', message: err.message } }) });
      };
      if (!guard) {
        handle({ method, path: url, headers: req.headers, body }).then(send, fail);
        return;
      }
      const q = url.indexOf('?');
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
      const address = req.socket.remoteAddress ?? '';
      guard(
        { method, path: q < 0 ? url : url.slice(0, q), query: q < 0 ? '' : url.slice(q + 1), headers, body, remoteAddress: address.startsWith('::ffff:') ? address.slice(7) : address },
        (r) => handle({ ...r, path: url }),
      ).then((r) => send({ status: r.status, headers: r.headers ?? {}, body: r.body ?? '' }), fail);
    });
  };
  const server = options.tls ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, onRequest) : createServer(onRequest);
  const bound = await listenServer(server, 'rules', host, port);
  return {
    name: 'rules',
    transport: 'http',
    engine: 'node:http',
    port: bound,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}
