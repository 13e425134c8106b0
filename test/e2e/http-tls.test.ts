/**
 * With EDB_TLS_CERT and EDB_TLS_KEY set, the HTTP port and the rules port speak HTTPS (both
 * engines of the HTTP port), and plain HTTP gets no page.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { request as plainRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { makeTestCertificates, type TestCertificates } from '../helpers/certs.js';
import { loadUws } from '../../src/transport/uws.js';

function get(port: number, path: string, ca: Buffer, method = 'GET', body?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, ca, servername: 'localhost', headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

let certs: TestCertificates;
beforeAll(() => {
  certs = makeTestCertificates();
});

const engines = loadUws().ok ? (['uws', 'ws'] as const) : (['ws'] as const);

describe.each(engines)('HTTPS on the HTTP and rules ports (engine %s)', (wsEngine) => {
  let server: EdbServer;
  beforeAll(async () => {
    server = await startEdb(testConfig({ host: '127.0.0.1', httpPort: 0, rulesPort: 0, mqttsPort: -1, wsEngine, tlsCert: certs.serverCert, tlsKey: certs.serverKey }), silentLogger());
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('answers over TLS with a certificate the CA vouches for', async () => {
    const ca = readFileSync(certs.caCert);
    const health = await get(server.port('http'), '/healthz', ca);
    expect(health.status).toBe(200);
    const status = await get(server.port('http'), '/api/status', ca);
    expect(status.status).toBe(200);
    const rules = await get(server.port('rules'), '/', ca);
    expect(rules.status).toBe(200);
    expect(JSON.parse(rules.body)).toEqual({ filters: [], rules: [] });
  });

  it('does not answer plain HTTP', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const req = plainRequest({ host: '127.0.0.1', port: server.port('http'), path: '/healthz', timeout: 5000 }, (res) => resolve(`answered ${res.statusCode}`));
      req.on('error', () => resolve('refused'));
      req.on('timeout', () => {
        req.destroy();
        resolve('refused');
      });
      req.end();
    });
    expect(outcome === 'refused' || outcome === 'answered 400').toBe(true);
  });
});
