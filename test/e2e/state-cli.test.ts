// `edb state get|set|del|watch` as real processes against the real broker.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { CLI } from '../helpers/process.js';

const run = promisify(execFile);
let server: EdbServer;
let url: string;

beforeAll(async () => {
  server = await startEdb(testConfig({ stateSweepIntervalMs: 50 }), silentLogger());
  url = `mqtt://127.0.0.1:${server.port('mqtt')}`;
}, 120_000);
afterAll(async () => {
  await server.stop();
});

async function edb(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, 'state', '--url', url, ...args], { timeout: 15_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('edb state', () => {
  it('sets, gets and deletes, with conditions, expiry, hex and exit codes', { timeout: 60_000 }, async () => {
    expect(await edb('set', 'cli:k', 'v1')).toMatchObject({ code: 0, stdout: expect.stringMatching(/^OK \d{15}:\d{5}:edb\n$/) });
    expect(await edb('get', 'cli:k')).toMatchObject({ code: 0, stdout: 'v1' });
    expect(await edb('set', 'cli:k', 'v2', '--nx')).toMatchObject({ code: 1, stdout: 'not applied\n' });
    expect(await edb('set', 'cli:k', 'v1', '--nex', '--px', '60000')).toMatchObject({ code: 0 });
    expect(await edb('del', 'cli:k', '--value', 'other')).toMatchObject({ code: 1, stdout: '-1\n' });
    expect(await edb('del', 'cli:k')).toMatchObject({ code: 0, stdout: '1\n' });
    expect(await edb('get', 'cli:k')).toMatchObject({ code: 1, stderr: '(nil)\n' });
    expect(await edb('--hex', 'set', '00ff', '0d0a')).toMatchObject({ code: 0 });
    expect(await edb('--hex', 'get', '00ff')).toMatchObject({ code: 0, stdout: '0d0a\n' });
    expect(await edb('set', 'cli:k', 'v', '--px', '0')).toMatchObject({ code: 2 });
    expect(await edb('set', 'cli:k', 'v', '--nx', '--nex')).toMatchObject({ code: 2 });
    // an error answered by the state store is printed and exits 1 (the operation failed)
    await edb('set', 'cli:fenced', 'v', '--fencing-token', `${Date.now()}:0:me`);
    expect(await edb('set', 'cli:fenced', 'w')).toMatchObject({ code: 1, stderr: 'edb state: the state store answered: ERR a fencing token is required for this request\n' });
  });

  it('reports a broker it cannot reach with exit code 3', async () => {
    const r = await run(process.execPath, [CLI, 'state', '--url', 'mqtt://127.0.0.1:1', '--timeout', '2000', 'get', 'k']).catch((e: { code: number; stderr: string }) => e);
    expect((r as { code: number }).code).toBe(3);
  });

  it('watches a key until interrupted', async () => {
    const child = spawn(process.execPath, [CLI, 'state', '--url', url, 'watch', 'cli:w'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise<void>((resolve) => child.stderr.on('data', (d: Buffer) => d.toString().includes('watching') && resolve()));
    await edb('set', 'cli:w', 'hello', '--px', '100');
    for (let i = 0; i < 100 && !out.includes('DELETE'); i++) await new Promise((r) => setTimeout(r, 30));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(0);
    expect(out).toMatch(/^SET hello \d{15}:\d{5}:edb\nDELETE \d{15}:\d{5}:edb\n$/);
  });
});
