/**
 * Durable storage with a real `edb start` process: folders it cannot use.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from '../helpers/process.js';

async function runStart(env: Record<string, string>): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn(process.execPath, [CLI, 'start'], {
    env: { ...process.env, EDB_MQTT_PORT: '0', EDB_MQTTS_PORT: '-1', EDB_WS_PORT: '-1', EDB_WSS_PORT: '-1', EDB_HTTP_PORT: '-1', EDB_RULES_PORT: '-1', EDB_LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stderr, stdout };
}

describe('edb start with EDB_STORAGE=durable', () => {
  it('a storage folder it cannot open: a clear error naming it, exit code 2, no stack trace', async () => {
    const base = mkdtempSync(join(tmpdir(), 'edb-bad-'));
    const blocker = join(base, 'storage');
    writeFileSync(blocker, 'a file where the storage folder should be');
    const r = await runStart({ EDB_STORAGE: 'durable', EDB_DATA_DIR: base });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(blocker);
    expect(r.stderr).toMatch(/cannot open the storage folder/);
    expect(r.stderr + r.stdout).not.toMatch(/\n\s+at /);
  });

  it('a data.mdb that is not LMDB: exit code 2 naming the file', async () => {
    const base = mkdtempSync(join(tmpdir(), 'edb-bad-'));
    const kv = join(base, 'storage', 'kv');
    (await import('node:fs')).mkdirSync(kv, { recursive: true });
    writeFileSync(join(kv, 'data.mdb'), Buffer.alloc(16384, 0x55));
    const r = await runStart({ EDB_STORAGE: 'durable', EDB_DATA_DIR: base });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(join(kv, 'data.mdb'));
    expect(r.stderr).toMatch(/not an LMDB file/);
  });

  it('a retention that is not a duration is a configuration error (exit code 2)', async () => {
    const base = mkdtempSync(join(tmpdir(), 'edb-bad-'));
    const r = await runStart({ EDB_STORAGE: 'durable', EDB_DATA_DIR: base, EDB_STORAGE_RETENTION: 'seven days' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/EDB_STORAGE_RETENTION=seven days/);
  });
});

// What survives a SIGKILL: test/fault/storage-kill.test.ts (a slow fault suite).
