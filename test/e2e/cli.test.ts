import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';
import net from 'node:net';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEdb } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { CLI, startBrokerProcess } from '../helpers/process.js';

const run = promisify(execFile);

describe('edb command', () => {
  it('prints help and version', async () => {
    const help = await run(process.execPath, [CLI, '--help']);
    expect(help.stdout).toContain('start');
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const version = await run(process.execPath, [CLI, '--version']);
    expect(version.stdout.trim()).toBe(pkg.version);
  });

  it('refuses an invalid setting with one message naming it and exit code 2', async () => {
    const err = await run(process.execPath, [CLI, 'start'], { env: { ...process.env, EDB_MQTT_PORT: '70000' } }).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).toBe(2);
    expect((err as { stderr: string }).stderr).toMatch(/EDB_MQTT_PORT=70000/);
    const bad = await run(process.execPath, [CLI, 'start'], { env: { ...process.env, EDB_LOG_LEVEL: 'loud' } }).catch((e: { code: number; stderr: string }) => e);
    expect((bad as { code: number }).code).toBe(2);
    expect((bad as { stderr: string }).stderr).toMatch(/EDB_LOG_LEVEL=loud/);
  });

  it('a port in use stops the start with the reason and exit code 1; startEdb rejects and undoes itself', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      await expect(startEdb(testConfig({ host: '127.0.0.1', mqttPort: port }), silentLogger())).rejects.toThrow(/already in use/);
      const err = await run(process.execPath, [CLI, 'start'], {
        env: { ...process.env, EDB_HOST: '127.0.0.1', EDB_MQTT_PORT: String(port), EDB_HTTP_PORT: '-1', EDB_WS_PORT: '-1', EDB_RULES_PORT: '-1', EDB_LOG_FORMAT: 'json', EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-cli-')) },
        timeout: 60_000,
      }).catch((e: { code: number; stdout: string }) => e);
      expect((err as { code: number }).code).toBe(1);
      expect((err as { stderr: string }).stderr).toBe(
        `edb start: port ${port} (EDB_MQTT_PORT) is already in use on 127.0.0.1; stop the program using it (ss -ltnp shows it), or set EDB_MQTT_PORT to another port (0 picks a free one, -1 turns the listener off)\n`,
      );
    } finally {
      blocker.close();
    }
  });

  it('a SIGTERM during start-up is honoured once the broker is up: exit 0, and the backup is written (EDB_STORAGE=memory)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-cli-early-'));
    // a rules document big enough that start-up spends a while compiling it
    const rules = { filters: Array.from({ length: 400 }, (_, i) => ({ topic: `site/${i}/#`, subtopic: 'alert/', statements: [{ condition: `$t > ${i}`, new_payload: 'x' }] })), rules: [] };
    const rulesFile = join(dataDir, 'rules-in.json');
    writeFileSync(rulesFile, JSON.stringify(rules));
    const child = spawn(process.execPath, [CLI, 'start'], {
      env: { ...process.env, EDB_MQTT_PORT: '0', EDB_HTTP_PORT: '-1', EDB_WS_PORT: '-1', EDB_RULES_PORT: '-1', EDB_LOG_FORMAT: 'json', EDB_DATA_DIR: dataDir, EDB_RULES_FILE: rulesFile, EDB_STORAGE: 'memory' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let signalled = false;
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      // the first log line comes before the rules compile: stop now, while still starting
      if (!signalled && !out.includes('"listener"')) {
        signalled = true;
        child.kill('SIGTERM');
      }
    });
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(signalled).toBe(true);
    expect(out).toMatch(/stop requested while starting/);
    expect(code).toBe(0);
    expect(existsSync(join(dataDir, 'backup', 'snapshot.edb'))).toBe(true);
  }, 120_000);

  it('starts on port 0, logs the port, and stops on SIGTERM with DISCONNECT 0x8B to v5 clients and exit 0', async () => {
    const broker = await startBrokerProcess();
    expect(broker.ports['mqtt']).toBeGreaterThan(0);
    const client = mqtt.connect({ port: broker.ports['mqtt'], protocolVersion: 5, reconnectPeriod: 0 });
    await new Promise((resolve, reject) => client.once('connect', resolve).once('error', reject));
    const disconnect = new Promise<number | undefined>((resolve) => client.once('disconnect', (p) => resolve(p.reasonCode)));
    const code = await broker.stop('SIGTERM');
    expect(await disconnect).toBe(0x8b);
    expect(code).toBe(0);
    client.end(true);
  });
});
