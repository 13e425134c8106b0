// Backup and restore across a real restart: `edb start` as a process, stopped with SIGTERM,
// started again on the same data folder. Also `edb state` as a real process.
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { CLI, startBrokerProcess } from '../helpers/process.js';
import { StateStoreClient } from '../../src/state/client.js';
import { ERRORS } from '../../src/state/protocol.js';
import { formatHlc } from '../../src/state/hlc.js';

const run = promisify(execFile);

async function store(port: number, clientId: string) {
  const m = await mqtt.connectAsync({ port, protocolVersion: 5, clientId, reconnectPeriod: 0 });
  return { m, s: await StateStoreClient.create(m) };
}

async function cli(port: number, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, 'state', ...args, '--url', `mqtt://127.0.0.1:${port}`], { timeout: 15_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

// the backup is what keeps state in memory mode; durable storage (the default) is covered by
// test/e2e/storage-process.test.ts and test/fault/storage-kill.test.ts
describe('backup across a real restart (EDB_STORAGE=memory)', () => {
  it('keeps keys, versions, fencing tokens, retained and queued messages; a corrupted backup leads to a clean start', { timeout: 300_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-restart-'));
    const backupFile = join(dataDir, 'backup', 'snapshot.edb');
    const env = { EDB_DATA_DIR: dataDir, EDB_STORAGE: 'memory' };

    // ---- first life
    const p1 = await startBrokerProcess(env);
    const port1 = p1.ports['mqtt']!;
    const { m: m1, s: s1 } = await store(port1, 'app');
    const plain = await s1.set('plain', 'hello');
    const token = (await s1.set('lock', 'app', { condition: 'nex', expiresInMs: 3_600_000 })).version!;
    await s1.set('fenced', 'guarded', { fencingToken: token });
    await s1.set(Buffer.from([0, 1, 0xff]), Buffer.from([9, 8, 7]));
    for (let i = 0; i < 500; i++) await s1.set(`bulk/${i}`, `value-${i}`);
    await m1.publishAsync('status/plant', 'running', { qos: 1, retain: true });
    // a persistent session with messages queued while it is offline
    const keeper = await mqtt.connectAsync({ port: port1, protocolVersion: 5, clientId: 'keeper', clean: false, properties: { sessionExpiryInterval: 3600 }, reconnectPeriod: 0 });
    await keeper.subscribeAsync('jobs/#', { qos: 1 });
    await keeper.endAsync();
    await m1.publishAsync('jobs/1', 'first', { qos: 1 });
    await m1.publishAsync('jobs/2', 'second', { qos: 1 });
    // the CLI, as a real process
    expect(await cli(port1, 'set', 'from-cli', 'yes', '--px', '3600000')).toMatchObject({ code: 0, stdout: expect.stringMatching(/^OK \d{15}:\d{5}:edb\n$/) });
    expect(await cli(port1, 'set', 'from-cli', 'no', '--nx')).toMatchObject({ code: 1, stdout: 'not applied\n' });
    await s1.close();
    await m1.endAsync();

    expect(await p1.stop('SIGTERM')).toBe(0);
    expect(existsSync(backupFile)).toBe(true);
    expect(p1.logs.some((l) => l['msg'] === 'backup written')).toBe(true);

    // ---- second life: everything is back, and the backup is gone
    const p2 = await startBrokerProcess(env);
    const port2 = p2.ports['mqtt']!;
    expect(p2.logs.some((l) => l['msg'] === 'backup restored')).toBe(true);
    expect(existsSync(backupFile)).toBe(false);
    const { m: m2, s: s2 } = await store(port2, 'app2');
    const got = await s2.get('plain');
    expect(got.value?.toString()).toBe('hello');
    expect(formatHlc(got.version!)).toBe(formatHlc(plain.version!));
    expect((await s2.get(Buffer.from([0, 1, 0xff]))).value).toEqual(Buffer.from([9, 8, 7]));
    expect((await s2.get('bulk/499')).value?.toString()).toBe('value-499');
    await expect(s2.set('fenced', 'x')).rejects.toThrow(ERRORS.fencingRequired);
    expect((await s2.set('lock', 'someone-else', { condition: 'nex' })).applied).toBe(false);
    // new versions stay ahead of the restored ones
    const next = await s2.set('plain', 'again');
    expect(formatHlc(next.version!) > formatHlc(plain.version!)).toBe(true);
    expect(await cli(port2, 'get', 'from-cli')).toMatchObject({ code: 0, stdout: 'yes' });
    expect(await cli(port2, 'get', 'nothing-here')).toMatchObject({ code: 1 });

    const retained = new Promise<string>((resolve) => m2.once('message', (t, p) => resolve(`${t}=${p.toString()}`)));
    await m2.subscribeAsync('status/#', { qos: 1 });
    expect(await retained).toBe('status/plant=running');

    const back = mqtt.connect({ port: port2, protocolVersion: 5, clientId: 'keeper', clean: false, properties: { sessionExpiryInterval: 3600 }, reconnectPeriod: 0 });
    const queued: string[] = [];
    back.on('message', (t, p) => queued.push(`${t}=${p.toString()}`));
    await new Promise((resolve, reject) => back.once('connect', resolve).once('error', reject));
    for (let i = 0; i < 50 && queued.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(queued).toEqual(['jobs/1=first', 'jobs/2=second']);
    await back.endAsync();
    await s2.close();
    await m2.endAsync();
    expect(await p2.stop('SIGTERM')).toBe(0);
    expect(existsSync(backupFile)).toBe(true);

    // ---- a corrupted backup: logged, deleted, clean start
    const bytes = readFileSync(backupFile);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x5a;
    writeFileSync(backupFile, bytes);
    const p3 = await startBrokerProcess(env);
    expect(p3.logs.some((l) => l['msg'] === 'backup is unusable; deleted it and starting clean')).toBe(true);
    expect(existsSync(backupFile)).toBe(false);
    const { m: m3, s: s3 } = await store(p3.ports['mqtt']!, 'app3');
    expect((await s3.get('plain')).value).toBeUndefined();
    expect((await s3.set('fenced', 'free again')).applied).toBe(true);
    await s3.close();
    await m3.endAsync();
    expect(await p3.stop('SIGINT')).toBe(0);

    // ---- garbage in place of the backup: still starts
    writeFileSync(backupFile, 'garbage');
    const p4 = await startBrokerProcess(env);
    expect(existsSync(backupFile)).toBe(false);
    const { m: m4, s: s4 } = await store(p4.ports['mqtt']!, 'app4');
    expect((await s4.get('fenced')).value).toBeUndefined();
    await s4.close();
    await m4.endAsync();
    expect(await p4.stop('SIGTERM')).toBe(0);
  });
});
