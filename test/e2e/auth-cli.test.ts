import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBrokerProcess, CLI, type BrokerProcess } from '../helpers/process.js';
import { collect, connect, end, makeCertificates, run, tmpDir, waitFor, type TlsFiles } from './auth-stack.js';

/**
 * Authentication and the ACL through the real `edb` process: `edb passwd` writes the file,
 * `edb start` loads it with the ACL, mosquitto clients log in with -u/-P and with client
 * certificates, and SIGHUP reloads the ACL.
 */

describe('edb start with a password file, an ACL and client certificates', () => {
  let dir: string;
  let tls: TlsFiles;
  let broker: BrokerProcess;
  let aclFile: string;

  beforeAll(async () => {
    dir = tmpDir('edb-auth-cli-');
    tls = await makeCertificates();
    const pw = join(dir, 'passwd');
    for (const [user, password] of [
      ['alice', 'pw-alice'],
      ['bob', 'pw-bob'],
    ]) {
      const r = await run(process.execPath, [CLI, 'passwd', pw, user!, '--password', password!]);
      expect(r.code, r.stderr).toBe(0);
    }
    aclFile = join(dir, 'acl.conf');
    writeFileSync(aclFile, 'user alice\ntopic readwrite sensors/#\nuser bob\ntopic read sensors/#\nuser device-7\ntopic write sensors/device-7/#\n');
    broker = await startBrokerProcess(
      {
        EDB_ALLOW_ANONYMOUS: 'false',
        EDB_PASSWORD_FILE: pw,
        EDB_ACL_FILE: aclFile,
        EDB_TLS_CERT: tls.serverCert,
        EDB_TLS_KEY: tls.serverKey,
        EDB_TLS_CA: tls.ca,
        EDB_CERT_IDENTITY_FIELD: 'CN',
      },
      ['mqtt', 'mqtts'],
    );
  }, 60_000);

  afterAll(async () => {
    await broker?.stop();
  });

  it('logs the anonymous setting, refuses bad logins, lets users and certificates in per the ACL', async () => {
    const url = `mqtt://127.0.0.1:${broker.ports['mqtt']}`;
    const bob = await connect(url, { protocolVersion: 5, username: 'bob', password: 'pw-bob' });
    const got = collect(bob);
    await bob.subscribeAsync('sensors/#', { qos: 1 });
    const mqtt = ['-h', '127.0.0.1', '-p', String(broker.ports['mqtt']), '-q', '1'];
    expect((await run('mosquitto_pub', [...mqtt, '-u', 'alice', '-P', 'pw-alice', '-t', 'sensors/a', '-m', 'from alice'])).code).toBe(0);
    expect((await run('mosquitto_pub', [...mqtt, '-u', 'alice', '-P', 'nope', '-t', 'sensors/a', '-m', 'x'])).code).not.toBe(0);
    expect((await run('mosquitto_pub', [...mqtt, '-t', 'sensors/a', '-m', 'x'])).code).not.toBe(0);
    const tlsArgs = ['-h', '127.0.0.1', '-p', String(broker.ports['mqtts']), '--cafile', tls.ca, '--cert', tls.clientCert, '--key', tls.clientKey, '-q', '1', '-V', 'mqttv5'];
    expect((await run('mosquitto_pub', [...tlsArgs, '-t', 'sensors/device-7/t', '-m', 'from device-7'])).code).toBe(0);
    const denied = await run('mosquitto_pub', [...tlsArgs, '-t', 'sensors/other', '-m', 'x']);
    expect(denied.stderr).toMatch(/not authori[sz]ed/i);
    await waitFor(() => got.length === 2, 'both messages');
    expect(got.map((m) => m.payload).sort()).toEqual(['from alice', 'from device-7']);
    expect(broker.logs.some((l) => l['msg'] === 'login refused')).toBe(true);
    await end(bob);
  });

  it('reloads the ACL on SIGHUP', async () => {
    writeFileSync(aclFile, 'user alice\ntopic read sensors/#\n');
    broker.child.kill('SIGHUP');
    await waitFor(() => broker.logs.some((l) => l['msg'] === 'SIGHUP: reloading password file and ACL'), 'the SIGHUP');
    await waitFor(() => broker.logs.some((l) => l['msg'] === 'auth rules reloaded'), 'the reload');
    const alice = await connect(`mqtt://127.0.0.1:${broker.ports['mqtt']}`, { protocolVersion: 5, username: 'alice', password: 'pw-alice' });
    await expect(alice.publishAsync('sensors/a', 'x', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    await end(alice);
  });
});
