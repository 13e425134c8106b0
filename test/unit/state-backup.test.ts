// The backup framework: snapshot file format, atomic writes, restore, bad backups.
import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupManager } from '../../src/persistence/backup.js';
import { crc32, parseSnapshot, writeSnapshot, type SnapshotSection } from '../../src/persistence/snapshot.js';
import { silentLogger } from '../../src/log.js';
import { Harness } from './state-harness.js';

const dir = () => mkdtempSync(join(tmpdir(), 'edb-backup-'));

function memorySection(name: string, initial = ''): SnapshotSection & { value: string; resets: number } {
  const s = {
    name,
    value: initial,
    resets: 0,
    save: () => Buffer.from(s.value),
    restore: (b: Buffer) => {
      if (b.toString().startsWith('bad')) throw new Error('refused');
      s.value = b.toString();
    },
    reset: () => {
      s.value = '';
      s.resets++;
    },
  };
  return s;
}

describe('snapshot file', () => {
  it('crc32 matches the standard check value', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
  });

  it('round-trips sections, including empty and binary ones', async () => {
    const d = dir();
    const file = join(d, 'snap.edb');
    const data = Buffer.from([0, 1, 2, 255]);
    await writeSnapshot(file, [{ name: 'a', data }, { name: 'empty', data: Buffer.alloc(0) }, { name: 'ünï', data: Buffer.from('x') }], 1234);
    const snap = parseSnapshot(readFileSync(file));
    expect(snap.createdAt).toBe(1234);
    expect([...snap.sections.keys()]).toEqual(['a', 'empty', 'ünï']);
    expect(snap.sections.get('a')).toEqual(data);
    expect(snap.sections.get('empty')!.length).toBe(0);
    expect(readdirSync(d)).toEqual(['snap.edb']); // no temp file left
  });

  it('a failed write leaves no temp file behind', async () => {
    const d = dir();
    // the target is a folder that is not empty: the temp file is written, the rename fails
    const file = join(d, 'snap.edb');
    mkdirSync(file);
    writeFileSync(join(file, 'keep'), 'x');
    await expect(writeSnapshot(file, [{ name: 'a', data: Buffer.from('data') }])).rejects.toThrow();
    expect(readdirSync(d)).toEqual(['snap.edb']);
    await expect(writeSnapshot(join(d, 'b.edb'), [{ name: 'n'.repeat(300), data: Buffer.alloc(0) }])).rejects.toThrow(/1-255 bytes/);
    expect(readdirSync(d)).toEqual(['snap.edb']);
  });

  it('detects any flipped byte and any truncation', async () => {
    const d = dir();
    const file = join(d, 'snap.edb');
    await writeSnapshot(file, [{ name: 'a', data: Buffer.from('hello world') }]);
    const good = readFileSync(file);
    for (let i = 0; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i]! ^= 0x10;
      expect(() => parseSnapshot(bad), `byte ${i}`).toThrow();
    }
    for (let n = 0; n < good.length; n++) expect(() => parseSnapshot(good.subarray(0, n))).toThrow();
  });
});

describe('backup manager', () => {
  it('saves every section, restores them at the next start, then deletes the file', async () => {
    const d = dir();
    const m1 = new BackupManager(d, silentLogger());
    const a = memorySection('a', 'alpha');
    const b = memorySection('b', 'beta');
    m1.register(a);
    m1.register(b);
    expect(() => m1.register(memorySection('a'))).toThrow(/twice/);
    await m1.save();
    expect(existsSync(m1.file)).toBe(true);

    const m2 = new BackupManager(d, silentLogger());
    const a2 = memorySection('a');
    const b2 = memorySection('b');
    m2.register(a2);
    m2.register(b2);
    const outcome = await m2.restore();
    expect(outcome.status).toBe('restored');
    expect(outcome.sections).toEqual(['a', 'b']);
    expect([a2.value, b2.value]).toEqual(['alpha', 'beta']);
    expect(existsSync(m2.file)).toBe(false);
    expect((await m2.restore()).status).toBe('none');
  });

  it('a corrupted backup is logged, deleted, every section reset: a clean start', async () => {
    const d = dir();
    const m1 = new BackupManager(d, silentLogger());
    m1.register(memorySection('a', 'alpha'));
    await m1.save();
    const bytes = readFileSync(m1.file);
    bytes[bytes.length - 10]! ^= 0xff;
    writeFileSync(m1.file, bytes);
    const m2 = new BackupManager(d, silentLogger());
    const a = memorySection('a', 'left over');
    m2.register(a);
    const outcome = await m2.restore();
    expect(outcome.status).toBe('discarded');
    expect(outcome.error).toMatch(/checksum/);
    expect(a.value).toBe('');
    expect(a.resets).toBe(1);
    expect(existsSync(m2.file)).toBe(false);
  });

  it('garbage, an empty file, and a section that refuses its data all lead to a clean start', async () => {
    for (const make of [
      (f: string) => writeFileSync(f, 'not a snapshot at all'),
      (f: string) => writeFileSync(f, ''),
      async (f: string) => void (await writeSnapshot(f, [{ name: 'a', data: Buffer.from('ok') }, { name: 'b', data: Buffer.from('bad data') }])),
    ]) {
      const d = dir();
      const m = new BackupManager(d, silentLogger());
      const a = memorySection('a');
      const b = memorySection('b');
      m.register(a);
      m.register(b);
      await make(m.file);
      const outcome = await m.restore();
      expect(outcome.status).toBe('discarded');
      expect(a.value).toBe('');
      expect(b.value).toBe('');
      expect(existsSync(m.file)).toBe(false);
    }
  });

  it('periodic snapshots write the file on their own', async () => {
    const d = dir();
    const m = new BackupManager(d, silentLogger(), 0.05);
    m.register(memorySection('a', 'x'));
    m.startPeriodic();
    for (let i = 0; i < 100 && !existsSync(m.file); i++) await new Promise((r) => setTimeout(r, 20));
    await m.close();
    expect(existsSync(m.file)).toBe(true);
  });

  it('carries the state store through a save and a restore', async () => {
    const d = dir();
    const h1 = new Harness();
    const m1 = new BackupManager(d, silentLogger());
    m1.register(h1.service.snapshotSection());
    for (let i = 0; i < 1000; i++) h1.request(['SET', `k${i}`, `v${i}`]);
    const ts = h1.ask(['GET', 'k500']).ts;
    await m1.save();
    const h2 = new Harness();
    const m2 = new BackupManager(d, silentLogger());
    m2.register(h2.service.snapshotSection());
    expect((await m2.restore()).status).toBe('restored');
    expect(h2.service.table.size).toBe(1000);
    const got = h2.ask(['GET', 'k500']);
    expect(got).toMatchObject({ type: 'bulk' });
    expect(got.ts).toBe(ts);
  });
});
