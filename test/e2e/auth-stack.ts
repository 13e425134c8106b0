import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient, type Packet } from 'mqtt';
import { Broker } from '../../src/broker/broker.js';
import { testConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { createAuthService, type AuthService } from '../../src/auth/service.js';
import { createClientLimits } from '../../src/auth/rate-limit.js';
import { startTcpListener, startTlsListener } from '../../src/transport/tcp.js';
import type { Listener } from '../../src/transport/connection.js';

/**
 * A broker with the auth service and real listeners on port 0, composed the way
 * src/server.ts does it (Broker, then services registering hooks, then listeners).
 */
export interface AuthStack {
  broker: Broker;
  auth: AuthService;
  config: Config;
  port: number;
  tlsPort: number | undefined;
  url: string;
  stop(): Promise<void>;
}

export interface TlsFiles {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  /** Client certificate for "CN=device-7,O=Acme". */
  clientCert: string;
  clientKey: string;
  /** A self-signed client certificate the CA did not sign. */
  strangerCert: string;
  strangerKey: string;
}

export async function startAuthStack(overrides: Partial<Config>, tls?: TlsFiles): Promise<AuthStack> {
  const config = testConfig({ host: '127.0.0.1', ...overrides });
  // EDB_TEST_LOG=debug shows the broker's log while debugging a test
  const log = process.env['EDB_TEST_LOG'] ? createLogger(process.env['EDB_TEST_LOG'], 'json') : silentLogger();
  const broker = new Broker(config, log);
  const auth = createAuthService(broker, config, log, { handleSighup: false, watchDebounceMs: 20 });
  broker.setLimits(createClientLimits(config));
  const listeners: Listener[] = [await startTcpListener(broker, '127.0.0.1', 0)];
  let tlsPort: number | undefined;
  if (tls) {
    const l = await startTlsListener(broker, '127.0.0.1', 0, {
      cert: readFileSync(tls.serverCert),
      key: readFileSync(tls.serverKey),
      ca: readFileSync(tls.ca),
      requestCert: true,
      rejectUnauthorized: true,
    });
    listeners.push(l);
    tlsPort = l.port;
  }
  const port = listeners[0]!.port;
  return {
    broker,
    auth,
    config,
    port,
    tlsPort,
    url: `mqtt://127.0.0.1:${port}`,
    async stop() {
      const closing = listeners.map((l) => l.close());
      await broker.close(500);
      await auth.close();
      await Promise.all(closing);
    },
  };
}

export function tmpDir(prefix = 'edb-e2e-auth-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command without blocking the event loop (the broker runs in this process). */
export function run(cmd: string, args: string[], timeoutMs = 10_000, input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    // A child that exits before reading its input (a refused login, say) closes the pipe: EPIPE here is
    // not the test's failure; its exit code and output are what the test judges.
    child.stdin.on('error', () => {});
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

/** A CA, a server certificate for 127.0.0.1, a client certificate it signed, and a stranger's. */
export async function makeCertificates(): Promise<TlsFiles> {
  const dir = tmpDir('edb-e2e-tls-');
  const p = (name: string): string => join(dir, name);
  const ok = async (args: string[]): Promise<void> => {
    const r = await run('openssl', args, 30_000);
    if (r.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  writeFileSync(p('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  writeFileSync(p('client.ext'), 'extendedKeyUsage=clientAuth\n');
  await ok(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=edb test CA', '-keyout', p('ca.key'), '-out', p('ca.crt')]);
  for (const [name, subject, ext] of [
    ['server', '/CN=localhost', 'server.ext'],
    ['client', '/O=Acme/CN=device-7', 'client.ext'],
  ] as const) {
    await ok(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', subject, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`)]);
    await ok(['x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', p(ext), '-out', p(`${name}.crt`)]);
  }
  await ok(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=device-7', '-keyout', p('stranger.key'), '-out', p('stranger.crt')]);
  return {
    dir,
    ca: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    strangerCert: p('stranger.crt'),
    strangerKey: p('stranger.key'),
  };
}

/** Connect with MQTT.js; resolves with the client, or rejects with the CONNACK error (err.code = reason). */
export function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    client.once('connect', () => resolve(client));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

/** The SUBACK codes for one SUBSCRIBE (errors for refused filters are expected and swallowed). */
export function subscribeCodes(client: MqttClient, filter: string | string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
  return new Promise((resolve) => {
    const onPacket = (packet: Packet): void => {
      if (packet.cmd === 'suback') {
        client.off('packetreceive', onPacket);
        resolve(packet.granted as number[]);
      }
    };
    client.on('packetreceive', onPacket);
    client.subscribe(filter, { qos }, () => undefined);
  });
}

/** Collect messages a client receives. */
export function collect(client: MqttClient): { topic: string; payload: string; retain: boolean }[] {
  const got: { topic: string; payload: string; retain: boolean }[] = [];
  client.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), retain: packet.retain }));
  return got;
}

export async function waitFor(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function end(...clients: (MqttClient | undefined)[]): Promise<void> {
  await Promise.all(clients.map((c) => (c ? c.endAsync(true).catch(() => undefined) : undefined)));
}
