/**
 * MQTTS and WSS with certificates made by openssl at test time: mosquitto_pub/sub with
 * --cafile, MQTT.js over mqtts:// and wss:// (both engines), and client certificates whose
 * subject becomes the identity the auth hook sees.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { startEdb, type EdbServer } from '../../src/server.js';
import { ConfigError, testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import type { ConnectRequest } from '../../src/broker/hooks.js';
import { loadUws } from '../../src/transport/uws.js';
import { loadTlsOptions, subjectIdentity } from '../../src/transport/tls-options.js';
import { makeTestCertificates, type TestCertificates } from '../helpers/certs.js';

const run = promisify(execFile);
let certs: TestCertificates;

beforeAll(() => {
  certs = makeTestCertificates();
});

/** Starts mosquitto_sub for one message and resolves with what it printed. */
function mosquittoSubOnce(args: string[]): Promise<string> {
  const child = spawn('mosquitto_sub', [...args, '-C', '1', '-W', '15'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<string>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`mosquitto_sub exited ${code}: ${out}`))));
  });
  // awaited by the caller once the subscription shows up: an exit before that (or after a failed attempt) is reported there, not unhandled
  done.catch(() => undefined);
  return done;
}

async function until(check: () => boolean, what: string, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.each(['uws', 'ws'] as const)('TLS without client certificates, engine %s', (wsEngine) => {
  let server: EdbServer;

  beforeAll(async () => {
    server = await startEdb(
      testConfig({ host: '127.0.0.1', wsEngine, mqttsPort: 0, wssPort: 0, tlsCert: certs.serverCert, tlsKey: certs.serverKey }),
      silentLogger(),
    );
  });
  afterAll(async () => {
    await server.stop();
  });

  it('opens MQTTS and WSS, WSS on the engine asked for', () => {
    const names = server.listeners.map((l) => `${l.name}:${l.engine}`);
    expect(names).toContain('mqtts:node:tls');
    expect(names).toContain(`wss:${wsEngine === 'uws' && loadUws().ok ? 'uWebSockets.js' : 'ws'}`);
  });

  it('mosquitto_sub and mosquitto_pub talk over MQTTS, verifying the server with --cafile', async () => {
    const port = String(server.port('mqtts'));
    const output = mosquittoSubOnce(['-h', 'localhost', '-p', port, '--cafile', certs.caCert, '-t', 'tls/test', '-i', `msub-${wsEngine}`]);
    // mosquitto_sub's stdout is block-buffered on a pipe: watch the broker for its subscription instead.
    await until(() => server.broker.subscriptions().some((s) => s.clientId === `msub-${wsEngine}`), 'mosquitto_sub to subscribe');
    await run('mosquitto_pub', ['-h', 'localhost', '-p', port, '--cafile', certs.caCert, '-t', 'tls/test', '-m', 'secret hello', '-q', '1']);
    expect(await output).toContain('secret hello');
  });

  it('mosquitto_pub refuses a server it cannot verify (no --cafile means the system CAs)', async () => {
    await expect(run('mosquitto_pub', ['-h', 'localhost', '-p', String(server.port('mqtts')), '--capath', '/etc/ssl/certs', '-t', 'x', '-m', 'y'])).rejects.toThrow();
  });

  it('MQTT.js over wss:// and mqtts:// deliver to each other', async () => {
    const ca = readFileSync(certs.caCert);
    const wss = await mqtt.connectAsync(`wss://localhost:${server.port('wss')}/mqtt`, { ca, reconnectPeriod: 0, clientId: `wss-${wsEngine}` });
    const tls = await mqtt.connectAsync(`mqtts://localhost:${server.port('mqtts')}`, { ca, reconnectPeriod: 0, clientId: `mqtts-${wsEngine}` });
    try {
      await wss.subscribeAsync('sec/#', { qos: 1 });
      const got = new Promise<string>((resolve) => wss.once('message', (t, p) => resolve(`${t} ${p}`)));
      await tls.publishAsync('sec/a', 'over tls', { qos: 1 });
      expect(await got).toBe('sec/a over tls');
      const rows = server.broker.clients();
      expect(rows.find((r) => r.clientId === `wss-${wsEngine}`)?.transport).toBe('wss');
      expect(rows.find((r) => r.clientId === `mqtts-${wsEngine}`)?.transport).toBe('tls');
    } finally {
      wss.end(true);
      tls.end(true);
    }
  });
});

describe('TLS with client certificates required (EDB_TLS_CA)', () => {
  let server: EdbServer;
  const seen: ConnectRequest[] = [];

  beforeAll(async () => {
    server = await startEdb(
      testConfig({ host: '127.0.0.1', mqttsPort: 0, wssPort: 0, tlsCert: certs.serverCert, tlsKey: certs.serverKey, tlsCa: certs.caCert }),
      silentLogger(),
    );
    server.broker.addHooks({
      authenticate(request) {
        seen.push(request);
        return { ok: true };
      },
    });
  });
  afterAll(async () => {
    await server.stop();
  });

  it('our subject string is the one openssl prints (RFC 4514), escaping included', () => {
    expect(certs.clientSubject).toBe('CN=device-1,OU=line-2,O=Acme\\, Inc.,C=DE');
  });

  it('mosquitto_pub with a client certificate: its subject is the identity the auth hook sees (MQTTS)', async () => {
    await run('mosquitto_pub', ['-h', 'localhost', '-p', String(server.port('mqtts')), '--cafile', certs.caCert, '--cert', certs.clientCert, '--key', certs.clientKey, '-i', 'dev-mqtts', '-t', 'id/x', '-m', '1']);
    const req = seen.find((r) => r.clientId === 'dev-mqtts');
    expect(req?.transport).toBe('tls');
    expect(req?.certificateSubject).toBe(certs.clientSubject);
    expect(req?.certificateFields).toEqual({ C: 'DE', O: 'Acme, Inc.', OU: 'line-2', CN: 'device-1' });
  });

  it('MQTT.js over WSS with a client certificate: same identity (ws engine, which exposes the certificate)', async () => {
    const wssListener = server.listeners.find((l) => l.name === 'wss') as { engine: string; fallbackReason?: string };
    expect(wssListener.engine).toBe('ws');
    expect(wssListener.fallbackReason ?? '').toMatch(/client certificates|EDB_WS_ENGINE|cannot load/);
    const client = await mqtt.connectAsync(`wss://localhost:${server.port('wss')}/mqtt`, {
      ca: readFileSync(certs.caCert),
      cert: readFileSync(certs.clientCert),
      key: readFileSync(certs.clientKey),
      clientId: 'dev-wss',
      reconnectPeriod: 0,
    });
    client.end(true);
    const req = seen.find((r) => r.clientId === 'dev-wss');
    expect(req?.transport).toBe('wss');
    expect(req?.certificateSubject).toBe(certs.clientSubject);
  });

  it('refuses clients without a certificate or with one from another CA, before MQTT starts', async () => {
    const before = seen.length;
    const port = String(server.port('mqtts'));
    await expect(run('mosquitto_pub', ['-h', 'localhost', '-p', port, '--cafile', certs.caCert, '-i', 'nocert', '-t', 'x', '-m', '1'])).rejects.toThrow();
    await expect(
      run('mosquitto_pub', ['-h', 'localhost', '-p', port, '--cafile', certs.caCert, '--cert', certs.strangerCert, '--key', certs.strangerKey, '-i', 'stranger', '-t', 'x', '-m', '1']),
    ).rejects.toThrow();
    await expect(
      mqtt.connectAsync(`wss://localhost:${server.port('wss')}/mqtt`, { ca: readFileSync(certs.caCert), reconnectPeriod: 0, connectTimeout: 3000, clientId: 'nocert-wss' }),
    ).rejects.toThrow();
    expect(seen.length).toBe(before);
  });
});

describe('TLS settings', () => {
  it('needs certificate and key together, and readable files', () => {
    expect(loadTlsOptions({ tlsCert: null, tlsKey: null, tlsCa: null })).toBeUndefined();
    expect(() => loadTlsOptions({ tlsCert: certs.serverCert, tlsKey: null, tlsCa: null })).toThrow(ConfigError);
    expect(() => loadTlsOptions({ tlsCert: null, tlsKey: null, tlsCa: certs.caCert })).toThrow(/EDB_TLS_CA/);
    expect(() => loadTlsOptions({ tlsCert: '/nonexistent.pem', tlsKey: certs.serverKey, tlsCa: null })).toThrow(/EDB_TLS_CERT=\/nonexistent.pem: cannot read: ENOENT/);
    const withCa = loadTlsOptions({ tlsCert: certs.serverCert, tlsKey: certs.serverKey, tlsCa: certs.caCert })!;
    expect(withCa.requestCert).toBe(true);
    expect(withCa.rejectUnauthorized).toBe(true);
  });

  it('startEdb refuses half a TLS configuration before opening anything', async () => {
    await expect(startEdb(testConfig({ tlsCert: certs.serverCert }), silentLogger())).rejects.toThrow(ConfigError);
  });

  it('writes repeated and special attributes the RFC 4514 way', () => {
    expect(subjectIdentity({ C: 'DE', OU: ['a', 'b'], CN: ' lead#,+"<>;=' } as never)).toEqual({
      certificateSubject: 'CN=\\ lead#\\,\\+\\"\\<\\>\\;\\=,OU=a+OU=b,C=DE',
      certificateFields: { CN: ' lead#,+"<>;=', OU: 'a,b', C: 'DE' },
    });
    expect(subjectIdentity({} as never)).toEqual({});
  });
});
