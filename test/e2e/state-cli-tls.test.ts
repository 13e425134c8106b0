// `edb state` over MQTTS and WebSocket (ws://, wss://), with the TLS options, as real processes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { CLI } from '../helpers/process.js';
import { makeTestCertificates, type TestCertificates } from '../helpers/certs.js';

const run = promisify(execFile);
let server: EdbServer;
let certs: TestCertificates;

// the broker starts its rules engine first (a compile that takes long on a loaded machine)
beforeAll(async () => {
  certs = makeTestCertificates();
  server = await startEdb(
    testConfig({ host: '127.0.0.1', wsPort: 0, mqttsPort: 0, wssPort: 0, tlsCert: certs.serverCert, tlsKey: certs.serverKey }),
    silentLogger(),
  );
}, 120_000);
afterAll(async () => {
  await server.stop();
});

async function edb(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, 'state', ...args], { timeout: 20_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('edb state over TLS and WebSocket', () => {
  it('works over mqtts://, ws:// and wss://, and refuses an unverified certificate', { timeout: 60_000 }, async () => {
    const mqtts = `mqtts://localhost:${server.port('mqtts')}`;
    const ws = `ws://localhost:${server.port('ws')}/mqtt`;
    const wss = `wss://localhost:${server.port('wss')}/mqtt`;
    expect(await edb('--url', mqtts, '--ca', certs.caCert, 'set', 'tls:k', 'over-tls')).toMatchObject({ code: 0 });
    expect(await edb('--url', ws, 'get', 'tls:k')).toMatchObject({ code: 0, stdout: 'over-tls' });
    expect(await edb('--url', wss, '--ca', certs.caCert, 'del', 'tls:k')).toMatchObject({ code: 0, stdout: '1\n' });
    // without the CA the broker's certificate is not trusted; --insecure skips the check
    expect((await edb('--url', mqtts, '--timeout', '5000', 'get', 'tls:k')).code).toBe(3);
    expect(await edb('--url', mqtts, '--insecure', 'get', 'tls:k')).toMatchObject({ code: 1 });
  });
});
