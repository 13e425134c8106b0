/**
 * Damage in the durable storage folder, with a real `edb start` process and real files:
 * - a torn tail (the newest generation cut mid-record after a SIGKILL, so no checkpoint names
 *   the end): cut off at the next start with one log line saying how many bytes were lost after
 *   how many whole records; every whole record is delivered, the torn one is not;
 * - garbage appended after a graceful stop (the checkpoint written at the stop names the end):
 *   the records past it are checked and the garbage cut, one line;
 * - garbage in the folder: a generation file without a valid header (set aside as .damaged,
 *   logged) and a file that is not part of the log (left alone, logged);
 * - a record damaged before the checkpoint (not checked at start): the session's read skips it
 *   with one line and goes on with the records after it, never handing it out;
 * and along the way what an operator reads: the storage metrics on /metrics (bytes,
 * generations, commits and their latency, batch size, replay time at start), the status
 * page's storage line and `edb storage show` (generations with sizes, the log's tail, the
 * oldest message, sessions and their lag).
 */
import { execFile } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { CLI, startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const HEADER = 32; // generation header (log.ts)
const FRAME = 8; // u32 length, u32 CRC-32 before each record

let broker: BrokerProcess | undefined;
afterEach(async () => {
  await broker?.stop('SIGKILL');
  broker = undefined;
});

function start(dataDir: string): Promise<BrokerProcess> {
  return startBrokerProcess({ EDB_DATA_DIR: dataDir, EDB_BACKUP: 'false', EDB_HTTP_PORT: '0' }, ['mqtt', 'http']);
}

/** Where each record of a generation file starts (walking the frames; stops at the first that does not fit). */
function recordStarts(file: string): number[] {
  const buf = readFileSync(file);
  const out: number[] = [];
  for (let at = HEADER; at + FRAME <= buf.length; ) {
    const len = buf.readUInt32LE(at);
    if (len === 0 || at + FRAME + len > buf.length) break;
    out.push(at);
    at += FRAME + len;
  }
  return out;
}

/** The offline persistent session `keeper` reconnects and collects what it is owed until `want` came (or 10 s). */
async function drainKeeper(port: number, want: number): Promise<string[]> {
  const got: string[] = [];
  const c = mqtt.connect({ port, protocolVersion: 5, clientId: 'keeper', clean: false, properties: { sessionExpiryInterval: 3600 }, reconnectPeriod: 0 });
  c.on('message', (_t, p) => got.push(p.toString().split(':')[0]!));
  await new Promise<void>((resolve, reject) => c.once('connect', () => resolve()).once('error', reject));
  for (let i = 0; i < 200 && got.length < want; i++) await sleep(50);
  await sleep(300); // anything more (the torn record, a duplicate) has a moment to arrive
  await c.endAsync(); // acknowledged: the position moves past them
  return got;
}

async function publish(port: number, from: number, to: number): Promise<void> {
  const pub = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: `pub-${from}`, reconnectPeriod: 0 });
  for (let i = from; i < to; i++) await pub.publishAsync('d/x', `m${i}:` + 'p'.repeat(200), { qos: 1 });
  await pub.endAsync();
}

async function metrics(b: BrokerProcess): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${b.ports['http']}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(edb_storage_\w+) ([\d.e+-]+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

const tornLines = (b: BrokerProcess) => b.logs.filter((l) => /torn or corrupt tail/.test(String(l['msg'])));
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `m${from + i}`);

describe('durable storage: damage in the folder, with a real broker process', () => {
  it('a torn tail after SIGKILL, garbage after a graceful stop, a bad generation file and a foreign file: each cut or set aside with one log line, the broker starts, every whole record is delivered', { timeout: 120_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-damage-'));
    const logDir = join(dataDir, 'storage', 'log');
    const gen1 = join(logDir, 'gen-00000001.log');

    // ---- 40 acknowledged QoS 1 messages for an offline persistent session, then SIGKILL
    broker = await start(dataDir);
    let port = broker.ports['mqtt']!;
    const keeper = await mqtt.connectAsync({ port, protocolVersion: 5, clientId: 'keeper', clean: false, properties: { sessionExpiryInterval: 3600 }, reconnectPeriod: 0 });
    await keeper.subscribeAsync('d/#', { qos: 1 });
    await keeper.endAsync();
    await publish(port, 0, 40);
    await sleep(100); // the session's iterator is written at the end of the turn

    // what an operator reads: metrics, the status page's storage line, edb storage show
    const m = await metrics(broker);
    const size1 = statSync(gen1).size;
    expect(m.get('edb_storage_bytes')).toBe(size1);
    expect(m.get('edb_storage_generations')).toBe(1);
    expect(m.get('edb_storage_messages_total')).toBe(40);
    expect(m.get('edb_storage_bytes_written_total')).toBe(size1 - HEADER);
    const commits = m.get('edb_storage_commits_total')!;
    expect(commits).toBeGreaterThanOrEqual(1);
    expect(commits).toBeLessThanOrEqual(40);
    expect(m.get('edb_storage_commit_seconds_total')).toBeGreaterThan(0);
    expect(m.get('edb_storage_commit_max_seconds')).toBeGreaterThan(0);
    expect(m.get('edb_storage_commit_max_seconds')).toBeLessThanOrEqual(m.get('edb_storage_commit_seconds_total')!);
    expect(m.get('edb_storage_last_batch_messages')).toBeGreaterThanOrEqual(1);
    expect(m.get('edb_storage_replay_seconds')).toBeGreaterThan(0); // opening the (new) log at start
    expect(m.get('edb_storage_full')).toBe(0);
    const status = (await (await fetch(`http://127.0.0.1:${broker.ports['http']}/api/status`)).json()) as { sections: { storage: { summary: string } } };
    expect(status.sections.storage.summary).toMatch(/^Storage: durable, \d+\.\d MiB in 1 generation\(s\), 1 sessions, \d+ retained, \d+\.\d ms per commit$/);
    const { stdout } = await run(process.execPath, [CLI, 'storage', 'show', '--json', '--data-dir', dataDir], { timeout: 20_000 });
    const report = JSON.parse(stdout) as { generations: { id: number; layout: number; bytes: number; valid: boolean }[]; bytes: number; tail: { gen: number; offset: number }; oldestStoredAt: number; sessions: { clientId: string; subscriptions: number; online: boolean; lagBytes: number }[] };
    expect(report.generations).toEqual([{ id: 1, layout: expect.any(Number), createdAt: expect.any(Number), bytes: size1, valid: true }]);
    expect(report.tail).toEqual({ gen: 1, offset: size1 });
    expect(report.oldestStoredAt).toBeGreaterThan(Date.now() - 120_000);
    expect(report.sessions).toEqual([{ clientId: 'keeper', expiryInterval: 3600, subscriptions: 1, online: false, lagBytes: size1 - HEADER }]);
    const text = (await run(process.execPath, [CLI, 'storage', 'show', '--data-dir', dataDir], { timeout: 20_000 })).stdout;
    expect(text).toContain(`log: ${(size1 / 1048576).toFixed(2)} MiB in 1 generation(s), oldest message stored`);
    expect(text).toMatch(new RegExp(`^\\s+1\\s+\\d+\\s+\\S+\\s+${size1}$`, 'm'));
    expect(text).toMatch(/^keeper\s+1\s+3600\s+no\s+\d+$/m);

    expect(await broker.stop('SIGKILL')).toBeNull();

    // ---- tear the last record (a crash mid-write), put garbage in the folder
    const starts = recordStarts(gen1);
    expect(starts).toHaveLength(40);
    const lastStart = starts[39]!;
    truncateSync(gen1, size1 - 50); // mid-record: its frame says more bytes than there are
    writeFileSync(join(logDir, 'gen-00000007.log'), 'not a log generation at all, just garbage');
    writeFileSync(join(logDir, 'README.txt'), 'an operator left this here');

    broker = await start(dataDir);
    port = broker.ports['mqtt']!;
    const torn = tornLines(broker);
    expect(torn, JSON.stringify(torn)).toHaveLength(1);
    expect(torn[0]!['msg']).toBe(`storage: torn or corrupt tail cut off: ${size1 - 50 - lastStart} bytes lost after 39 whole records`);
    expect(broker.logs.filter((l) => /without a valid header/.test(String(l['msg'])))).toHaveLength(1);
    expect(existsSync(join(logDir, 'gen-00000007.log.damaged'))).toBe(true);
    expect(broker.logs.filter((l) => /not part of the log/.test(String(l['msg'])) && String(l['file']).endsWith('README.txt'))).toHaveLength(1);
    expect(readFileSync(join(logDir, 'README.txt'), 'utf8')).toBe('an operator left this here'); // left alone
    expect(statSync(gen1).size).toBe(lastStart); // cut at the last whole record
    expect((await metrics(broker)).get('edb_storage_replay_seconds')).toBeGreaterThan(0);
    // every whole record, in order, once; the torn one never handed out
    expect(await drainKeeper(port, 39)).toEqual(range(0, 39));

    // ---- graceful stop (the checkpoint names the end), then garbage appended after it
    await publish(port, 40, 50);
    expect(await broker.stop('SIGTERM')).toBe(0);
    const size2 = statSync(gen1).size;
    const garbage = Buffer.from('\x17\x00\x00\x00garbage after the last record, not a frame'); // a frame of 23 bytes whose CRC is wrong
    appendFileSync(gen1, garbage);
    broker = await start(dataDir);
    port = broker.ports['mqtt']!;
    const torn2 = tornLines(broker);
    expect(torn2, JSON.stringify(torn2)).toHaveLength(1);
    expect(torn2[0]!['msg']).toBe(`storage: torn or corrupt tail cut off: ${garbage.length} bytes lost after the checkpoint at ${size2} and 0 whole records past it`);
    expect(statSync(gen1).size).toBe(size2);
    expect(await drainKeeper(port, 10)).toEqual(range(40, 50));
    // nothing of the damage is left behind: the next start finds nothing to cut
    expect(await broker.stop('SIGKILL')).toBeNull();
    broker = await start(dataDir);
    expect(tornLines(broker)).toEqual([]);
    expect(broker.logs.filter((l) => /without a valid header/.test(String(l['msg'])))).toEqual([]);

    // ---- a record damaged before the checkpoint (a bad disk, after a graceful stop): the start
    // does not look there, the session's read finds it, skips it with one line, never hands it
    // out, and goes on with the records after it
    await publish(broker.ports['mqtt']!, 50, 60);
    expect(await broker.stop('SIGTERM')).toBe(0);
    const all = recordStarts(gen1);
    const bad = all[all.length - 5]!; // m55
    const body = readFileSync(gen1).subarray(bad, bad + 300);
    const flip = bad + 8 + body.indexOf('ppp', 8); // a byte of its payload
    const fd = openSync(gen1, 'r+');
    writeSync(fd, Buffer.from('Q'), 0, 1, flip);
    closeSync(fd);
    broker = await start(dataDir);
    expect(tornLines(broker)).toEqual([]);
    expect(await drainKeeper(broker.ports['mqtt']!, 9)).toEqual([...range(50, 55), ...range(56, 60)]);
    const damaged = broker.logs.filter((l) => /damaged record/.test(String(l['msg'])));
    expect(damaged, JSON.stringify(damaged)).toHaveLength(1);
    expect(damaged[0]).toMatchObject({ generation: 1, offset: bad, next: all[all.length - 4] });
    expect((await metrics(broker)).get('edb_storage_damaged_bytes_total')).toBe(all[all.length - 4]! - bad);
  });
});
