/**
 * The message log on real files: batching, generations, retention and the size cap, torn or
 * corrupt tails, garbage in the folder, and folders that cannot be opened.
 */
import { appendFileSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../../src/mqtt/message.js';
import { HEADER_BYTES, MessageLog, type LogPosition, type MessageLogOptions } from '../../src/storage/log.js';
import { StorageFullError, StorageOpenError } from '../../src/storage/errors.js';
import { DurableStorage } from '../../src/storage/durable.js';
import { checkLmdbFile } from '../../src/storage/kv.js';
import { decodeMessage, encodeMessage, LAYOUT_VERSION } from '../../src/storage/record.js';
import { crc32 } from '../../src/persistence/snapshot.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'edb-log-'));
  dirs.push(d);
  return d;
}

/** A logger that keeps what it was told. */
function recordingLog() {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

const msg = (i: number, size = 10): Message => ({ topic: `t/${i}`, payload: Buffer.alloc(size, i & 0xff), qos: 1, retain: false });

function openLog(dir: string, over: Partial<MessageLogOptions> = {}) {
  const rec = recordingLog();
  const log = MessageLog.open({ dir, log: rec.log, batchSize: 8, flushIntervalMs: 1, generationMs: 3_600_000, retentionMs: 0, maxBytes: 0, ...over });
  return { log, lines: rec.lines };
}

describe('message log', () => {
  it('writes batches of at most EDB_STORAGE_BATCH_SIZE messages, one commit each', async () => {
    const dir = tempDir();
    const { log } = openLog(dir, { batchSize: 10, flushIntervalMs: 50 });
    for (let i = 0; i < 35; i++) log.append(msg(i));
    await log.flushed();
    expect(log.metrics.messagesAppended).toBe(35);
    expect(log.metrics.commits).toBe(4); // 10 + 10 + 10 + the 5 the flush closed
    await log.close();
  });

  it('writes up to three batches at once and hands them out as durable in log order, each callback after every earlier one', async () => {
    const dir = tempDir();
    const { log } = openLog(dir, { batchSize: 4, flushIntervalMs: 50 });
    const order: number[] = [];
    const durableAt: number[] = [];
    const done: Promise<void>[] = [];
    for (let turn = 0; turn < 12; turn++) {
      for (let i = 0; i < 4; i++) log.append(msg(turn * 4 + i)); // one full batch per turn: it starts writing at once
      done.push(
        new Promise<void>((resolve) =>
          log.onDurable((err) => {
            expect(err).toBeUndefined();
            order.push(turn);
            durableAt.push(log.generations().at(-1)!.bytes);
            resolve();
          }),
        ),
      );
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(done);
    expect(order).toEqual([...Array(12).keys()]);
    // what is durable only grows, and covers the batch whose callback runs
    for (let i = 1; i < durableAt.length; i++) expect(durableAt[i]!).toBeGreaterThan(durableAt[i - 1]!);
    expect(log.metrics.commits).toBe(12);
    const { entries } = log.read(log.head, 100);
    expect(entries.map((e) => e.message.topic)).toEqual([...Array(48).keys()].map((i) => `t/${i}`));
    await log.close();
    // and the file reads back whole
    const again = openLog(dir);
    expect(again.log.read(again.log.head, 100).entries).toHaveLength(48);
    expect(again.log.metrics.tornBytes).toBe(0);
    await again.log.close();
  });

  it('records of every size across batch buffers (one larger than a buffer, UTF-8 topics, properties) read back whole after a reopen', async () => {
    const dir = tempDir();
    const { log } = openLog(dir, { batchSize: 64, flushIntervalMs: 1 });
    const sent: Message[] = [];
    // 3 x 1.1 MiB of small and middle records cross the 1 MiB buffers several times, in and between batches
    for (let i = 0; i < 3000; i++) {
      const m: Message = { topic: `t/${i}/é/日本`, payload: Buffer.alloc(i % 7 === 0 ? 5000 : 300, i & 0xff), qos: 1, retain: i % 2 === 0, senderId: `c-${i % 3}` };
      if (i % 11 === 0) m.properties = { contentType: 'ä/b', userProperties: { k: 'v' }, correlationData: Buffer.from([i & 0xff, 1]) };
      if (i % 13 === 0) m.expiresAt = 1_900_000_000_000 + i;
      sent.push(m);
      log.append(m, 1000 + i, i % 17 === 0);
      if (i === 1500) sent.push({ topic: 'big', payload: Buffer.alloc(2 * 1024 * 1024 + 3, 9), qos: 2, retain: false, inboundQos2Id: 77 });
      if (i === 1500) log.append(sent[sent.length - 1]!, 5);
      if (i % 500 === 0) await log.flushed();
    }
    await log.flushed();
    await log.close();
    const again = openLog(dir);
    const got: Message[] = [];
    let from = again.log.head;
    for (;;) {
      const { entries, next } = again.log.read(from, 1000, 64 << 20);
      if (entries.length === 0) break;
      for (const e of entries) got.push(e.message);
      from = next;
    }
    expect(again.lines.filter((l) => l.msg.includes('torn'))).toEqual([]);
    expect(got.length).toBe(sent.length);
    for (let i = 0; i < sent.length; i++) {
      const a = sent[i]!;
      const b = got[i]!;
      expect({ topic: b.topic, retain: b.retain, qos: b.qos, senderId: b.senderId, expiresAt: b.expiresAt, properties: b.properties, len: b.payload.length }).toEqual({
        topic: a.topic, retain: a.retain, qos: a.qos, senderId: a.senderId, expiresAt: a.expiresAt, properties: a.properties, len: a.payload.length,
      });
      expect(b.payload.equals(a.payload)).toBe(true);
    }
    expect(got.find((m) => m.topic === 'big')?.inboundQos2Id).toBe(77);
    await again.log.close();
  });

  it('cuts a torn tail (a record cut short) with one log line, keeping every whole record', async () => {
    const dir = tempDir();
    const a = openLog(dir);
    const positions = [];
    for (let i = 0; i < 20; i++) positions.push(a.log.append(msg(i, 100)));
    await a.log.close();
    const file = join(dir, 'gen-00000001.log');
    const size = statSync(file).size;
    truncateSync(file, size - 37); // mid-record: the last one is cut short
    const b = openLog(dir);
    const cut = b.lines.filter((l) => /torn or corrupt tail/.test(l.msg));
    expect(cut).toHaveLength(1);
    expect(cut[0]!['records']).toBe(19);
    const { entries } = b.log.read(positions[0]!, 100);
    expect(entries.map((e) => e.message.topic)).toEqual(positions.slice(0, 19).map((_, i) => `t/${i}`));
    // appending goes on after the last whole record
    const p = b.log.append(msg(99));
    expect(p).toEqual(positions[19]);
    await b.log.flushed();
    expect(b.log.read(positions[18]!, 10).entries.map((e) => e.message.topic)).toEqual(['t/18', 't/99']);
    await b.log.close();
  });

  it('cuts garbage written after the last record (bad checksum) and zero-filled pages', async () => {
    for (const tail of [Buffer.from('garbage that is not a record at all, really'), Buffer.alloc(4096)]) {
      const dir = tempDir();
      const a = openLog(dir);
      for (let i = 0; i < 5; i++) a.log.append(msg(i));
      await a.log.close();
      const file = join(dir, 'gen-00000001.log');
      const before = statSync(file).size;
      appendFileSync(file, tail);
      const b = openLog(dir);
      expect(b.lines.filter((l) => /torn or corrupt tail/.test(l.msg))).toHaveLength(1);
      expect(statSync(file).size).toBe(before);
      expect(b.log.read({ gen: 1, offset: HEADER_BYTES }, 100).entries).toHaveLength(5);
      await b.log.close();
    }
  });

  it('a start checks only the records past the checkpoint (written at close); a torn tail past it is cut', async () => {
    const dir = tempDir();
    const a = openLog(dir);
    const positions = [];
    for (let i = 0; i < 20; i++) positions.push(a.log.append(msg(i, 100)));
    await a.log.close(); // checkpoint: the end of record 19
    expect(existsSync(join(dir, 'tail.checkpoint'))).toBe(true);
    const b = openLog(dir);
    for (let i = 20; i < 25; i++) positions.push(b.log.append(msg(i, 100)));
    await b.log.flushed(); // then a crash: no close, no new checkpoint
    const file = join(dir, 'gen-00000001.log');
    truncateSync(file, statSync(file).size - 37);
    const c = openLog(dir);
    const cut = c.lines.filter((l) => /torn or corrupt tail/.test(l.msg));
    expect(cut).toHaveLength(1);
    expect(cut[0]!['checkpoint']).toBe(positions[20]!.offset);
    expect(cut[0]!['records']).toBe(4); // records 20-23 checked, 24 cut
    expect(c.lines.filter((l) => /not part of the log/.test(l.msg))).toEqual([]);
    expect(c.log.read(positions[0]!, 100).entries.map((e) => e.message.topic)).toEqual(positions.slice(0, 24).map((_, i) => `t/${i}`));
    await c.log.close();
  });

  it('a checkpoint that does not match the file (its last record changed, or past the end) is not used: every record is checked', async () => {
    const dir = tempDir();
    const a = openLog(dir);
    const positions = [];
    for (let i = 0; i < 10; i++) positions.push(a.log.append(msg(i, 100)));
    await a.log.close();
    const file = join(dir, 'gen-00000001.log');
    // one byte of the last record's body changed: the checkpoint names that record, so it is refused
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.from([0x55]), 0, 1, positions[9]!.offset + 30);
    closeSync(fd);
    const b = openLog(dir);
    const cut = b.lines.filter((l) => /torn or corrupt tail/.test(l.msg));
    expect(cut).toHaveLength(1);
    expect(cut[0]!['checkpoint']).toBeUndefined();
    expect(cut[0]!['records']).toBe(9);
    await b.log.close();
    // damage before the checkpoint is not looked for at start, but a read never hands it out:
    // it skips the damaged record (one line, counted) and goes on with the next whole one
    const fd2 = openSync(file, 'r+');
    writeSync(fd2, Buffer.from([0x55]), 0, 1, positions[3]!.offset + 30);
    closeSync(fd2);
    const c = openLog(dir);
    expect(c.lines.filter((l) => /torn or corrupt tail/.test(l.msg))).toEqual([]);
    const topics = (from: LogPosition) => c.log.read(from, 100).entries.map((e) => e.message.topic);
    expect(topics(positions[0]!)).toEqual(['t/0', 't/1', 't/2', 't/4', 't/5', 't/6', 't/7', 't/8']);
    expect(topics(positions[3]!)).toEqual(['t/4', 't/5', 't/6', 't/7', 't/8']); // a reader positioned on it
    const skipped = c.lines.filter((l) => /damaged record/.test(l.msg));
    expect(skipped).toHaveLength(1); // once per damaged spot, however many reads pass it
    expect(skipped[0]).toMatchObject({ generation: 1, offset: positions[3]!.offset, bytes: positions[4]!.offset - positions[3]!.offset, next: positions[4]!.offset });
    expect(c.log.metrics.damagedBytes).toBe(positions[4]!.offset - positions[3]!.offset);
    // messages appended after it are read too (the newest generation: a reader is never stuck before them)
    const p10 = c.log.append(msg(10, 100));
    await c.log.flushed();
    expect(topics(positions[2]!)).toEqual(['t/2', 't/4', 't/5', 't/6', 't/7', 't/8', 't/10']);
    expect(p10.offset).toBe(positions[8]!.offset + (positions[8]!.offset - positions[7]!.offset));
    await c.log.close();
    // without the checkpoint, the start finds it and cuts there
    unlinkSync(join(dir, 'tail.checkpoint'));
    const d = openLog(dir);
    const cut2 = d.lines.filter((l) => /torn or corrupt tail/.test(l.msg));
    expect(cut2).toHaveLength(1);
    expect(cut2[0]!['records']).toBe(3);
    await d.log.close();
  });

  it('a read past damage in a closed generation: a frame whose length is garbage is skipped to the next whole record, the rest of the generation is read', async () => {
    const dir = tempDir();
    let now = 1_000_000;
    const a = openLog(dir, { generationMs: 1000, now: () => now });
    const positions = [];
    for (let i = 0; i < 6; i++) positions.push(a.log.append(msg(i, 100)));
    await a.log.flushed();
    now += 1500;
    positions.push(a.log.append(msg(6, 100))); // generation 2: generation 1 is closed
    await a.log.close();
    // record 2's length word overwritten: its end cannot be known from its frame
    const fd = openSync(join(dir, 'gen-00000001.log'), 'r+');
    writeSync(fd, Buffer.from([0xff, 0xff, 0x00, 0x00]), 0, 4, positions[2]!.offset);
    closeSync(fd);
    const b = openLog(dir);
    expect(b.log.read(positions[0]!, 100).entries.map((e) => e.message.topic)).toEqual(['t/0', 't/1', 't/3', 't/4', 't/5', 't/6']);
    expect(b.lines.filter((l) => /damaged record in generation 1/.test(l.msg))).toHaveLength(1);
    // the whole rest of a generation damaged: skipped to its end, then the next generation
    const fd2 = openSync(join(dir, 'gen-00000001.log'), 'r+');
    writeSync(fd2, Buffer.alloc(statSync(join(dir, 'gen-00000001.log')).size - positions[3]!.offset, 0xee), 0, undefined, positions[3]!.offset);
    closeSync(fd2);
    await b.log.close();
    const c = openLog(dir);
    expect(c.log.read(positions[0]!, 100).entries.map((e) => e.message.topic)).toEqual(['t/0', 't/1', 't/6']);
    expect(c.lines.filter((l) => /damaged record in generation 1/.test(l.msg))).toHaveLength(1); // from record 2 to the end, in one
    await c.log.close();
  });

  it('sets aside a generation file without a valid header and ignores foreign files', async () => {
    const dir = tempDir();
    const a = openLog(dir);
    a.log.append(msg(1));
    await a.log.close();
    writeFileSync(join(dir, 'gen-00000002.log'), 'not a log file');
    writeFileSync(join(dir, 'notes.txt'), 'hello');
    const b = openLog(dir);
    expect(b.lines.some((l) => /without a valid header/.test(l.msg))).toBe(true);
    expect(b.lines.some((l) => /not part of the log/.test(l.msg))).toBe(true);
    expect(existsSync(join(dir, 'gen-00000002.log.damaged'))).toBe(true);
    expect(b.log.read({ gen: 1, offset: 0 }, 10).entries.map((e) => e.message.topic)).toEqual(['t/1']);
    await b.log.close();
  });

  it('starts a new generation when the time bound passes, and reads across generations', async () => {
    const dir = tempDir();
    let now = 1_000_000;
    const { log } = openLog(dir, { generationMs: 1000, now: () => now });
    const first = log.append(msg(1));
    now += 1500;
    const second = log.append(msg(2));
    expect(first.gen).toBe(1);
    expect(second.gen).toBe(2);
    await log.flushed();
    expect(readdirSync(dir).sort()).toEqual(['gen-00000001.log', 'gen-00000002.log']);
    expect(log.read(first, 10).entries.map((e) => e.message.topic)).toEqual(['t/1', 't/2']);
    await log.close();
  });

  it('retention drops whole closed generations, logged; positions in them continue at the oldest kept', async () => {
    const dir = tempDir();
    let now = 1_000_000;
    const { log, lines } = openLog(dir, { generationMs: 1000, retentionMs: 5000, now: () => now });
    const p1 = log.append(msg(1));
    now += 1500;
    log.append(msg(2));
    now += 1500;
    const p3 = log.append(msg(3));
    await log.flushed();
    now += 4000; // generation 1 ended at +1500, now older than 5 s; generation 2 not yet
    const heard: unknown[] = [];
    log.onDropped((d) => heard.push(d));
    expect(log.sweep()).toBe(1);
    expect(heard).toEqual([{ gen: 1, reason: 'retention', bytes: expect.any(Number) }]);
    expect(log.metrics.generationsDropped).toBe(1);
    expect(lines.some((l) => /generation 1 dropped \(retention\)/.test(l.msg))).toBe(true);
    expect(log.generations().map((g) => g.id)).toEqual([2, 3]);
    expect(log.read(p1, 10).entries.map((e) => e.message.topic)).toEqual(['t/2', 't/3']);
    expect(log.read(p3, 10).entries.map((e) => e.message.topic)).toEqual(['t/3']);
    await log.close();
  });

  it('the size cap drops old generations first, then refuses appends (StorageFullError)', async () => {
    const dir = tempDir();
    let now = 1_000_000;
    const { log, lines } = openLog(dir, { generationMs: 1000, maxBytes: 8000, now: () => now });
    for (let i = 0; i < 5; i++) log.append(msg(i, 1000));
    await log.flushed();
    now += 1500;
    for (let i = 5; i < 8; i++) log.append(msg(i, 1000));
    await log.flushed();
    // generation 1 (about 5 KB) goes to make room; generation 2 then fills up to the cap
    for (let i = 8; i < 12; i++) log.append(msg(i, 1000));
    await log.flushed();
    expect(log.metrics.generationsDropped).toBe(1);
    expect(lines.some((l) => /generation 1 dropped \(size cap\)/.test(l.msg))).toBe(true);
    expect(() => {
      for (let i = 0; i < 10; i++) log.append(msg(i, 1000));
    }).toThrow(StorageFullError);
    expect(log.full).toBe(true);
    expect(log.metrics.refused).toBeGreaterThan(0);
    expect(lines.filter((l) => /EDB_STORAGE_MAX_BYTES/.test(l.msg))).toHaveLength(1); // once per minute
    // still refusing: no new line within the minute, one more once a minute has passed
    now += 59_000;
    expect(() => log.append(msg(20, 1000))).toThrow(StorageFullError);
    expect(lines.filter((l) => /EDB_STORAGE_MAX_BYTES/.test(l.msg))).toHaveLength(1);
    now += 1_000;
    expect(() => log.append(msg(21, 1000))).toThrow(StorageFullError);
    expect(() => log.append(msg(22, 1000))).toThrow(StorageFullError);
    expect(lines.filter((l) => /EDB_STORAGE_MAX_BYTES/.test(l.msg))).toHaveLength(2);
    expect(log.metrics.bytes).toBeLessThan(8000);
    await log.close();
  });

  it('layout 2 keeps a QoS 2 publisher packet id with the message; a layout 1 generation stays readable and new messages go to a new generation', async () => {
    expect(LAYOUT_VERSION).toBe(2);
    const dir = tempDir();
    // a generation as the previous release wrote it: layout 1 header, one record (no flag 32)
    const h = Buffer.alloc(HEADER_BYTES);
    Buffer.from('EDBLOG01', 'latin1').copy(h, 0);
    h.writeUInt32LE(1, 8);
    h.writeUInt32LE(1, 12);
    h.writeDoubleLE(Date.now(), 16);
    h.writeUInt32LE(crc32(h.subarray(0, 28)) >>> 0, 28);
    const body = encodeMessage({ ...msg(1), senderId: 'old' }, Date.now());
    const frame = Buffer.alloc(8);
    frame.writeUInt32LE(body.length, 0);
    frame.writeUInt32LE(crc32(body) >>> 0, 4);
    writeFileSync(join(dir, 'gen-00000001.log'), Buffer.concat([h, frame, body]));
    const { log } = openLog(dir);
    const p = log.append({ ...msg(2), qos: 2, senderId: 'pub', inboundQos2Id: 4321 });
    const d = log.append({ ...msg(3), qos: 2, senderId: 'pub', inboundQos2Id: 99 }, undefined, true);
    await log.flushed();
    expect(p.gen).toBe(2);
    expect(log.generations().map((g) => g.layout)).toEqual([1, 2]);
    const { entries } = log.read({ gen: 1, offset: HEADER_BYTES }, 10);
    expect(entries.map((e) => [e.message.topic, e.message.senderId, e.message.inboundQos2Id])).toEqual([
      ['t/1', 'old', undefined],
      ['t/2', 'pub', 4321],
      ['t/3', 'pub', undefined], // a direct copy never carries it: it is not the publisher's message
    ]);
    expect(d.gen).toBe(2);
    // flag 32 in a layout 1 record is damage, not a packet id
    const withId = encodeMessage({ ...msg(4), inboundQos2Id: 7 }, 0);
    expect(decodeMessage(withId, 2).message.inboundQos2Id).toBe(7);
    expect(() => decodeMessage(withId, 1)).toThrow(RangeError);
    await log.close();
  });

  it('a folder that cannot be opened is a StorageOpenError naming it', () => {
    const dir = tempDir();
    const notADir = join(dir, 'file');
    writeFileSync(notADir, 'x');
    expect(() => openLog(join(notADir, 'log'))).toThrow(StorageOpenError);
    expect(() => openLog(join(notADir, 'log'))).toThrow(notADir);
  });
});

describe('keyed store (LMDB) file checks', () => {
  it('refuses a data.mdb that is garbage, or truncated, without mapping it', async () => {
    const dir = tempDir();
    const kv = join(dir, 'kv');
    mkdirSync(kv, { recursive: true });
    writeFileSync(join(kv, 'data.mdb'), Buffer.alloc(20000, 0x41));
    expect(() => checkLmdbFile(kv)).toThrow(/not an LMDB file/);
    rmSync(kv, { recursive: true });

    const s = new DurableStorage({ dir, log: pino({ level: 'silent' }), batchSize: 8, flushIntervalMs: 1, generationMs: 3_600_000, retentionMs: 0, maxBytes: 0 });
    for (let i = 0; i < 200; i++) s.setRetained({ topic: `r/${i}`, payload: Buffer.alloc(500, 1), qos: 1, retain: true });
    await s.close();
    checkLmdbFile(kv); // whole: fine
    const file = join(kv, 'data.mdb');
    truncateSync(file, Math.floor(statSync(file).size / 2));
    expect(() => new DurableStorage({ dir, log: pino({ level: 'silent' }), batchSize: 8, flushIntervalMs: 1, generationMs: 3_600_000, retentionMs: 0, maxBytes: 0 })).toThrow(/truncated/);
  });

  it('reads the meta pages of a 32-bit build (armhf) too: whole is fine, truncated is refused', () => {
    // the first 96 bytes of both meta pages of a data.mdb written by lmdb-js on armhf
    // (Debian 13, emulated): 3 keys, 11 pages of 4096 bytes, the newest meta (txn 4) on page 0
    const meta0 = '00000000000000000000080000000000dec0efbe02000000000000000000020000100000080001000000000001000000' +
      '00000000020000000a000000000000000000010000000000010000000000000001000000020000000a00000004000000';
    const meta1 = '01000000000000000000080000000000dec0efbe02000000000000000000020000100000080001000000000001000000' +
      '000000000200000008000000000000000000010000000000010000000000000001000000060000000800000003000000';
    const dir = tempDir();
    const file = join(dir, 'data.mdb');
    const image = Buffer.alloc(11 * 4096);
    Buffer.from(meta0, 'hex').copy(image, 0);
    Buffer.from(meta1, 'hex').copy(image, 4096);
    writeFileSync(file, image);
    checkLmdbFile(dir);
    // page 1's meta (txn 3) ends at page 8: the newest one's last page (10) decides
    truncateSync(file, 10 * 4096);
    expect(() => checkLmdbFile(dir)).toThrow(/truncated: 40960 bytes, its last page ends at 45056/);
  });
});
