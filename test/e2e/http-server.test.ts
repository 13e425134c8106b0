/**
 * The HTTP server and router on both engines, with real HTTP requests: routes, mounts
 * (as the rules API will use), bodies, limits, errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { HttpRouter, json, startHttpServer, type HttpListener, type HttpRequest } from '../../src/http/server.js';
import { loadUws } from '../../src/transport/uws.js';

/** The body of the router's error answers (404, 405, 413, 500). */
interface ErrorBody {
  error: string;
  message: string;
}

describe.each(['uws', 'ws'] as const)('HTTP server, engine %s', (engine) => {
  let listener: HttpListener;
  let base: string;
  const seen: HttpRequest[] = [];

  beforeAll(async () => {
    const router = new HttpRouter(silentLogger());
    router
      .get('/hello', () => ({ status: 200, headers: { 'content-type': 'text/plain', 'x-edb': 'yes' }, body: 'hello' }))
      .route('POST', '/echo', async (req) => {
        seen.push(req);
        return json(201, { method: req.method, path: req.path, query: req.query, length: req.body.length, type: req.headers['content-type'], sum: [...req.body].reduce((a, b) => a + b, 0) });
      })
      .get('/boom', () => {
        throw new Error('handler failure');
      })
      .mount('/rules', async (req) => json(200, { mounted: true, method: req.method, path: req.path, body: req.body.toString() }));
    listener = await startHttpServer({ host: '127.0.0.1', port: 0, engine, router, log: silentLogger(), maxBodyBytes: 64 * 1024 });
    base = `http://127.0.0.1:${listener.port}`;
  });

  afterAll(async () => {
    await listener.close();
  });

  it('reports its engine', () => {
    expect(listener.engine).toBe(engine === 'uws' && loadUws().ok ? 'uWebSockets.js' : 'node:http');
    expect(listener.transport).toBe('http');
  });

  it('serves a GET route with its headers', async () => {
    const res = await fetch(`${base}/hello`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-edb')).toBe('yes');
    expect(await res.text()).toBe('hello');
  });

  it('answers HEAD for a GET route without a body', async () => {
    const res = await fetch(`${base}/hello`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('');
  });

  it('passes method, path, query, headers and the whole body to the handler', async () => {
    const body = Buffer.alloc(40 * 1024, 3); // several TCP reads
    const res = await fetch(`${base}/echo?a=1&b=two`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    expect(res.status).toBe(201);
    expect(await res.json()).toEqual({ method: 'POST', path: '/echo', query: 'a=1&b=two', length: body.length, type: 'application/octet-stream', sum: body.length * 3 });
  });

  it('refuses a body over the limit with 413', async () => {
    const res = await fetch(`${base}/echo`, { method: 'POST', body: Buffer.alloc(65 * 1024, 1) });
    expect(res.status).toBe(413);
  });

  it('answers 404 for unknown paths and 405 (with Allow) for a wrong method', async () => {
    const missing = await fetch(`${base}/nothing-here`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as ErrorBody).error).toBe('not_found');
    const wrong = await fetch(`${base}/hello`, { method: 'DELETE' });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('GET');
  });

  it('turns a failing handler into a 500 and keeps serving', async () => {
    const res = await fetch(`${base}/boom`);
    expect(res.status).toBe(500);
    expect(((await res.json()) as ErrorBody).error).toBe('internal');
    expect((await fetch(`${base}/hello`)).status).toBe(200);
  });

  it('routes everything under a mount point, any method, with the full path', async () => {
    const a = await fetch(`${base}/rules`);
    expect(await a.json()).toEqual({ mounted: true, method: 'GET', path: '/rules', body: '' });
    const b = await fetch(`${base}/rules/house/compile`, { method: 'PUT', body: 'doc' });
    expect(await b.json()).toEqual({ mounted: true, method: 'PUT', path: '/rules/house/compile', body: 'doc' });
    expect((await fetch(`${base}/rulesx`)).status).toBe(404);
  });
});

describe('HttpRouter', () => {
  it('refuses a route or mount point registered twice', () => {
    const router = new HttpRouter();
    router.get('/a', () => json(200, {})).mount('/m', () => json(200, {}));
    expect(() => router.get('/a', () => json(200, {}))).toThrow(/already taken/);
    expect(() => router.mount('/m/', () => json(200, {}))).toThrow(/already taken/);
    expect(() => router.mount('m', () => json(200, {}))).toThrow(/must start/);
  });

  it('prefers the longest mount point', async () => {
    const router = new HttpRouter();
    router.mount('/api', () => json(200, { at: 'api' })).mount('/api/rules', () => json(200, { at: 'rules' }));
    const req = (path: string) => router.handle({ method: 'GET', path, query: '', headers: {}, body: Buffer.alloc(0), remoteAddress: '' });
    expect(JSON.parse(String((await req('/api/rules/x')).body))).toEqual({ at: 'rules' });
    expect(JSON.parse(String((await req('/api/other')).body))).toEqual({ at: 'api' });
  });
});
