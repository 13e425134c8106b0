/**
 * The message log: each message stored once, in append order, however many sessions will
 * read it. Sessions keep positions (generation, byte offset) in it, never copies.
 *
 * Generations: one file per period of time (`gen-00000001.log`, ...). New messages go only to
 * the newest; older ones are read-only and leave whole, by retention or the size cap (never
 * while opening; readers holding positions there hear of it through onDropped). Each
 * file starts with a header naming its layout version, so a later layout starts a new
 * generation while older files stay readable. Layout 1 has one stream per generation.
 *
 * Writes are batched: a batch closes at EDB_STORAGE_BATCH_SIZE messages or
 * EDB_STORAGE_FLUSH_INTERVAL_MS after its first one, and is written with one write and one
 * fdatasync; up to COMMITS_IN_FLIGHT batches are written at once, handed out as durable in
 * log order. Positions are handed out at append time (synchronously); `onDurable` tells when
 * everything appended so far is on disk.
 *
 * File layout (little endian):
 *   header, 32 bytes: "EDBLOG01", u32 layout, u32 generation id, f64 created at (ms),
 *                     u32 reserved (0), u32 CRC-32 of the 28 bytes before it
 *   records:          u32 body length, u32 CRC-32 of the body, body (record.ts)
 * A record that is cut short or fails its checksum ends the file: at start, the newest
 * generation is cut back to its last whole record (one log line says how much was lost).
 *
 * Checkpoint (`tail.checkpoint`, 48 bytes): "EDBCKPT1", u32 generation id, u32 0, f64 the
 * generation's created at, f64 an offset up to which its records were durable (fdatasync) when
 * written, f64 where the last record before that offset starts, u32 that record's CRC field,
 * u32 CRC-32 of the 44 bytes before it. Written (not synced: a lost or torn one only means a
 * longer start) every CHECKPOINT_BYTES of durable log, at close and after the start's check,
 * so a start checks only the records past it instead of the whole generation (a million
 * records: about 0.8 s of CRCs). It is used only if the generation's header matches and the
 * record before the offset is whole and has the CRC named; else the start checks everything.
 * Records before it are still checked by every read (a bad one is never handed out).
 */
import { close, closeSync, constants as fsConstants, fdatasync, fdatasyncSync, fsyncSync, mkdirSync, open, openSync, readdirSync, readSync, renameSync, statSync, ftruncateSync, unlinkSync, writeFileSync, writev, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Message } from '../mqtt/message.js';
import { crc32, crc32Range } from '../persistence/snapshot.js';
import { StorageFullError, StorageOpenError } from './errors.js';
import { decodeMessage, encodeMessageInto, LAYOUT_VERSION, maxEncodedSize } from './record.js';

/** Called once what it waited for is on disk (err: it could not be written); `arg` as passed to onDurable. Re-exported by store.ts, which imports this module (so not the other way round: no import circle). */
export type DurableCallback = (err: Error | undefined, arg: number) => void;

export const HEADER_BYTES = 32;
const MAGIC = Buffer.from('EDBLOG01', 'latin1');
const FRAME = 8;
/** Smallest body of layout 1 (see record.ts): shorter lengths are damage (zero-filled pages). */
const MIN_BODY = 24;
const MAX_BODY = 300 * 1024 * 1024;
const FILE_RE = /^gen-(\d{8})\.log$/;
/** Bytes read at a time when a generation is checked at start. */
const SCAN_CHUNK = 8 * 1024 * 1024;
/**
 * Records are encoded straight into buffers of this size, one after the other, and a batch is
 * written as the stretch of buffer its records fill: no buffer per record, one writev part per
 * batch (a record larger than this gets a buffer of its own size).
 */
const SLAB_BYTES = 1024 * 1024;
const CHECKPOINT = 'tail.checkpoint';
const CHECKPOINT_MAGIC = Buffer.from('EDBCKPT1', 'latin1');
const CHECKPOINT_LEN = 48;
/** Durable bytes of the current generation between two checkpoints. */
const CHECKPOINT_BYTES = 8 * 1024 * 1024;
/** Bytes read at a time by read() (a longer record is read on its own). */
const READ_CHUNK = 64 * 1024;

/** A place in the log: a generation and a byte offset in its file. */
export interface LogPosition {
  readonly gen: number;
  readonly offset: number;
}

export function comparePositions(a: LogPosition, b: LogPosition): number {
  return a.gen !== b.gen ? a.gen - b.gen : a.offset - b.offset;
}

/**
 * Where each stored message is in one log (store-once: the second session finds it here),
 * kept on the message itself under a key of this instance: a WeakMap with an entry per message
 * made every minor GC walk its ephemeron table (14% of the durable broker's main thread under
 * QoS 1 fan-in, 5% more in the map's get/set). Two logs (local storage and a cluster's stream)
 * use two instances, so their positions never mix.
 */
export class MessagePositions {
  private readonly key = Symbol('log position');

  get(m: Message): LogPosition | undefined {
    return (m as unknown as Record<symbol, LogPosition | undefined>)[this.key];
  }

  has(m: Message): boolean {
    return (m as unknown as Record<symbol, LogPosition | undefined>)[this.key] !== undefined;
  }

  set(m: Message, pos: LogPosition): this {
    (m as unknown as Record<symbol, LogPosition | undefined>)[this.key] = pos;
    return this;
  }

  delete(m: Message): boolean {
    const had = this.has(m);
    if (had) (m as unknown as Record<symbol, LogPosition | undefined>)[this.key] = undefined;
    return had;
  }
}

export interface LogEntry {
  readonly pos: LogPosition;
  /** Where the entry after this one starts. */
  readonly next: LogPosition;
  readonly message: Message;
  readonly storedAt: number;
  /** Stored for the sessions whose iterators name it (record.ts flag 16), not for a replay by topic. */
  readonly direct: boolean;
}

/** A generation the log dropped: readers holding positions in it lost what they had not read. */
export interface DroppedGeneration {
  readonly gen: number;
  readonly reason: 'retention' | 'size_cap';
  readonly bytes: number;
}

export interface GenerationInfo {
  readonly id: number;
  readonly layout: number;
  readonly createdAt: number;
  readonly bytes: number;
  readonly current: boolean;
}

export interface MessageLogOptions {
  dir: string;
  log: Logger;
  batchSize: number;
  flushIntervalMs: number;
  /** A generation is closed and a new one started after this long. */
  generationMs: number;
  /** Closed generations older than this are dropped (0: kept until the size cap). */
  retentionMs: number;
  /** Most bytes all generations may use (0: no cap). */
  maxBytes: number;
  now?: () => number;
  /** Batches written at once (default COMMITS_IN_FLIGHT; 1: one after the other, as before). */
  commitsInFlight?: number;
}

export interface LogMetrics {
  bytes: number;
  generations: number;
  messagesAppended: number;
  bytesAppended: number;
  commits: number;
  commitMillisTotal: number;
  commitMillisMax: number;
  lastBatchMessages: number;
  generationsDropped: number;
  bytesDropped: number;
  /** Bytes cut off a torn tail at the last start. */
  tornBytes: number;
  /** Bytes of damaged records a read skipped (found past the start's check: never handed out). */
  damagedBytes: number;
  refused: number;
  replayMillis: number;
}

interface Generation {
  id: number;
  layout: number;
  createdAt: number;
  /** Bytes on disk and durable (header included). */
  durable: number;
  /** Bytes handed out to appends (durable + batches not written yet). */
  end: number;
  /** The file exists on disk (a new generation is created by its first batch). */
  created: boolean;
  readFd: number | undefined;
  /** Where the last durable record starts and its CRC field (for the checkpoint); -1: none. */
  lastStart: number;
  lastCrc: number;
}

interface Checkpoint {
  gen: number;
  createdAt: number;
  end: number;
  lastStart: number;
  lastCrc: number;
}

interface Batch {
  gen: Generation;
  start: number;
  /** Written in this order: the generation's header (its first batch), stretches of slabs. */
  parts: Buffer[];
  /** Where this batch's records begin in the current slab (closed into `parts` when it fills or the batch closes). */
  slabStart: number;
  /** Where its last record starts and that record's CRC (for the checkpoint). */
  lastStart: number;
  lastCrc: number;
  bytes: number;
  count: number;
  callbacks: DurableCallback[];
  /** What each callback is handed back (onDurable's `arg`). */
  args: number[];
  /** 0 queued, 1 being written, 2 written and synced (waiting for the batches before it), 3 failed. */
  state: number;
  startedAt: number;
}

/**
 * Batches written at once (each its writev and its fdatasync): the next batch is committed
 * while the previous one's fdatasync runs, and ext4 folds concurrent fdatasyncs into one
 * journal commit. Acknowledgements still follow the log's order: a batch counts as durable
 * only once it and every batch before it are.
 */
const COMMITS_IN_FLIGHT = 3;

/**
 * The current generation's file is opened with O_DSYNC where the platform has it: each batch's
 * positioned writev then returns only once its data (and the file size) is on disk, as a
 * writev followed by fdatasync would, in one request to the thread pool instead of two (a
 * request costs the main thread a submission and a wake-up: at a thousand batches a second,
 * 5% of it under QoS 1 fan-in). Elsewhere (Windows): writev, then fdatasync.
 */
const O_DSYNC: number | undefined = fsConstants.O_DSYNC;

/** `cb(undefined, arg)` in a microtask (out of the callers, which then create no closure themselves). */
function callSoon(cb: DurableCallback, arg: number): void {
  queueMicrotask(() => cb(undefined, arg));
}

/** A little-endian u32 without readUInt32LE's argument checks (a million of them at start). */
function u32(b: Buffer, i: number): number {
  return (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16)) + b[i + 3]! * 0x1000000;
}

function genFile(dir: string, id: number): string {
  return join(dir, `gen-${String(id).padStart(8, '0')}.log`);
}

function header(id: number, createdAt: number, layout: number): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(h, 0);
  h.writeUInt32LE(layout, 8);
  h.writeUInt32LE(id, 12);
  h.writeDoubleLE(createdAt, 16);
  h.writeUInt32LE(crc32(h.subarray(0, 28)) >>> 0, 28);
  return h;
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // some file systems cannot fsync a folder
  }
}

export class MessageLog {
  private readonly gens: Generation[] = [];
  private current!: Generation;
  private batch: Batch | undefined;
  /** Closed batches, oldest first: the first `writing` of them are being written. */
  private readonly queue: Batch[] = [];
  private writing = 0;
  /** A batch failed: no new writes start; once those in flight settle, failFrom. */
  private writeError: Error | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  /** The open batch closes at the end of this turn (a commit slot was free). */
  private closeSoon = false;
  /** The file the batches are written to (opened by the first batch of its generation). */
  private appendFd: number | undefined;
  private appendFdGen = 0;
  /** Records are encoded here, batch after batch (SLAB_BYTES). */
  private slab: Buffer = Buffer.allocUnsafeSlow(SLAB_BYTES);
  private slabUsed = 0;
  private readonly now: () => number;
  /** While set, appends are refused (disk full) until this time, then tried again. */
  private fullUntil = 0;
  private fullLoggedAt = 0;
  /** The last batch could not be written (a full disk): until one is, storage reports itself full. */
  private writeFailed = false;
  private closed = false;
  /** The durable offset of the current generation at the last checkpoint. */
  private checkpointed = 0;
  private readonly dropListeners: ((d: DroppedGeneration) => void)[] = [];
  readonly metrics: LogMetrics = {
    bytes: 0, generations: 0, messagesAppended: 0, bytesAppended: 0, commits: 0, commitMillisTotal: 0, commitMillisMax: 0,
    lastBatchMessages: 0, generationsDropped: 0, bytesDropped: 0, tornBytes: 0, damagedBytes: 0, refused: 0, replayMillis: 0,
  };

  private readonly inFlight: number;

  private constructor(private readonly opts: MessageLogOptions) {
    this.now = opts.now ?? Date.now;
    this.inFlight = Math.max(1, opts.commitsInFlight ?? COMMITS_IN_FLIGHT);
  }

  /** Open (or create) the log in `opts.dir`. Throws StorageOpenError when the folder is unusable. */
  static open(opts: MessageLogOptions): MessageLog {
    const started = performance.now();
    const log = new MessageLog(opts);
    log.load();
    log.metrics.replayMillis = Math.round((performance.now() - started) * 1000) / 1000; // to the microsecond: a small log opens in well under 1 ms
    return log;
  }

  private load(): void {
    const { dir, log } = this.opts;
    let names: string[];
    try {
      mkdirSync(dir, { recursive: true });
      names = readdirSync(dir);
    } catch (err) {
      throw new StorageOpenError(dir, (err as Error).message);
    }
    const ids: number[] = [];
    for (const name of names) {
      const m = FILE_RE.exec(name);
      if (m) ids.push(Number(m[1]));
      else if (name !== CHECKPOINT && name !== `${CHECKPOINT}.tmp` && !name.endsWith('.damaged')) log.warn({ file: join(dir, name) }, 'storage: a file that is not part of the log; left alone');
    }
    ids.sort((a, b) => a - b);
    for (const id of ids) {
      const file = genFile(dir, id);
      const g = this.readHeader(file, id);
      if (g) this.gens.push(g);
    }
    const last = this.gens[this.gens.length - 1];
    if (last) {
      this.recoverTail(last);
      this.current = last;
      if (last.layout !== LAYOUT_VERSION) this.startGeneration();
    } else this.startGeneration();
    // no sweep here: retention and the size cap drop generations once the readers that hold
    // positions (bridges) have registered with onDropped (the owner's first sweep, or an append)
    this.updateSize();
  }

  /** A generation's header, or undefined (logged, file set aside) when it is not one. */
  private readHeader(file: string, id: number): Generation | undefined {
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (err) {
      throw new StorageOpenError(this.opts.dir, `${file}: ${(err as Error).message}`);
    }
    try {
      const h = Buffer.alloc(HEADER_BYTES);
      const n = readSync(fd, h, 0, HEADER_BYTES, 0);
      const size = statSync(file).size;
      const ok = n === HEADER_BYTES && h.subarray(0, 8).equals(MAGIC) && (crc32(h.subarray(0, 28)) >>> 0) === h.readUInt32LE(28) && h.readUInt32LE(12) === id;
      if (!ok) {
        closeSync(fd);
        renameSync(file, `${file}.damaged`);
        this.metrics.tornBytes += size;
        this.opts.log.error({ file, bytes: size }, 'storage: a log generation without a valid header; set aside as .damaged, its messages are lost');
        return undefined;
      }
      const layout = h.readUInt32LE(8);
      if (layout < 1 || layout > LAYOUT_VERSION) {
        closeSync(fd);
        throw new StorageOpenError(this.opts.dir, `${file} has log layout ${layout}, newer than this release reads (${LAYOUT_VERSION})`);
      }
      return { id, layout, createdAt: h.readDoubleLE(16), durable: size, end: size, created: true, readFd: fd, lastStart: -1, lastCrc: 0 };
    } catch (err) {
      if (err instanceof StorageOpenError) throw err;
      closeSync(fd);
      throw new StorageOpenError(this.opts.dir, `${file}: ${(err as Error).message}`);
    }
  }

  /**
   * Check the records of the newest generation past its checkpoint (all of them without a
   * usable one); cut a torn or corrupt tail; checkpoint the result.
   */
  private recoverTail(g: Generation): void {
    const ck = this.readCheckpoint(g);
    const from = ck ? ck.end : HEADER_BYTES;
    if (ck) {
      g.lastStart = ck.lastStart;
      g.lastCrc = ck.lastCrc;
    }
    const { end: pos, count, lastStart, lastCrc } = this.scanWhole(g, from);
    if (lastStart >= 0) {
      g.lastStart = lastStart;
      g.lastCrc = lastCrc;
    }
    if (pos < g.durable) {
      const lost = g.durable - pos;
      const file = genFile(this.opts.dir, g.id);
      try {
        const fd = openSync(file, 'r+');
        try {
          ftruncateSync(fd, pos);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      } catch (err) {
        throw new StorageOpenError(this.opts.dir, `${file}: cannot cut the damaged tail: ${(err as Error).message}`);
      }
      this.metrics.tornBytes += lost;
      const after = ck ? `the checkpoint at ${ck.end} and ${count} whole records past it` : `${count} whole records`;
      this.opts.log.warn({ file, offset: pos, bytes: lost, records: count, checkpoint: ck?.end }, `storage: torn or corrupt tail cut off: ${lost} bytes lost after ${after}`);
      g.durable = g.end = pos;
    } else if (pos > from) {
      // what a crash left in the page cache is checked now: on disk before it is checkpointed
      try {
        fdatasyncSync(this.readFd(g));
      } catch {
        return; // no checkpoint then: the next start checks it again
      }
    }
    if (!ck || pos !== ck.end) this.writeCheckpoint(g);
    else this.checkpointed = ck.end;
  }

  /** The checkpoint of `g`, if there is one that matches its file. */
  private readCheckpoint(g: Generation): Checkpoint | undefined {
    let b: Buffer;
    try {
      const fd = openSync(join(this.opts.dir, CHECKPOINT), 'r');
      try {
        b = Buffer.alloc(CHECKPOINT_LEN);
        if (readSync(fd, b, 0, CHECKPOINT_LEN, 0) !== CHECKPOINT_LEN) return undefined;
      } finally {
        closeSync(fd);
      }
    } catch {
      return undefined;
    }
    if (!b.subarray(0, 8).equals(CHECKPOINT_MAGIC) || (crc32(b.subarray(0, 44)) >>> 0) !== b.readUInt32LE(44)) return undefined;
    const c: Checkpoint = { gen: b.readUInt32LE(8), createdAt: b.readDoubleLE(16), end: b.readDoubleLE(24), lastStart: b.readDoubleLE(32), lastCrc: b.readUInt32LE(40) };
    if (c.gen !== g.id || c.createdAt !== g.createdAt || c.end > g.durable || c.end < HEADER_BYTES) return undefined;
    if (c.end === HEADER_BYTES) return c.lastStart === -1 ? c : undefined;
    // the record before the offset must be the one named, whole
    const len = c.end - c.lastStart - FRAME;
    if (c.lastStart < HEADER_BYTES || len < MIN_BODY || len > MAX_BODY) return undefined;
    const rec = Buffer.allocUnsafe(FRAME + len);
    const fd = this.readFd(g);
    if (readSync(fd, rec, 0, FRAME + len, c.lastStart) !== FRAME + len) return undefined;
    if (rec.readUInt32LE(0) !== len || rec.readUInt32LE(4) !== c.lastCrc || (crc32(rec.subarray(FRAME)) >>> 0) !== c.lastCrc) return undefined;
    return c;
  }

  /** Note how far `g` is durable (see the file comment); a failure only means a longer next start. */
  private writeCheckpoint(g: Generation): void {
    const b = Buffer.alloc(CHECKPOINT_LEN);
    CHECKPOINT_MAGIC.copy(b, 0);
    b.writeUInt32LE(g.id, 8);
    b.writeDoubleLE(g.createdAt, 16);
    b.writeDoubleLE(g.lastStart >= 0 ? g.durable : HEADER_BYTES, 24);
    b.writeDoubleLE(g.lastStart, 32);
    b.writeUInt32LE(g.lastCrc >>> 0, 40);
    b.writeUInt32LE(crc32(b.subarray(0, 44)) >>> 0, 44);
    const file = join(this.opts.dir, CHECKPOINT);
    try {
      writeFileSync(`${file}.tmp`, b, { mode: 0o600 });
      renameSync(`${file}.tmp`, file);
      this.checkpointed = g.durable;
    } catch {
      // next time
    }
  }

  /**
   * Where the whole records of `g` end: each frame's length and CRC checked, reading the file
   * in large chunks (a start with a million stored messages reads 100 MB; record by record,
   * with two reads each, that took 14 s, chunked well under one).
   */
  private scanWhole(g: Generation, from = HEADER_BYTES): { end: number; count: number; lastStart: number; lastCrc: number } {
    const fd = this.readFd(g);
    let buf = Buffer.allocUnsafe(Math.min(SCAN_CHUNK, Math.max(FRAME, g.durable - from)));
    let bufStart = from;
    let bufLen = 0;
    const fill = (at: number, need: number): boolean => {
      if (need > buf.length) buf = Buffer.allocUnsafe(need);
      bufStart = at;
      bufLen = 0;
      while (bufLen < need) {
        const n = readSync(fd, buf, bufLen, Math.min(buf.length, g.durable - at) - bufLen, at + bufLen);
        if (n <= 0) break;
        bufLen += n;
      }
      return bufLen >= need;
    };
    let pos = from;
    let count = 0;
    let lastStart = -1;
    let lastCrc = 0;
    while (pos + FRAME <= g.durable) {
      if (pos + FRAME > bufStart + bufLen && !fill(pos, FRAME)) break;
      const len = u32(buf, pos - bufStart);
      if (len < MIN_BODY || len > MAX_BODY || pos + FRAME + len > g.durable) break;
      if (pos + FRAME + len > bufStart + bufLen && !fill(pos, FRAME + len)) break;
      const at = pos - bufStart;
      const crc = u32(buf, at + 4);
      if (crc32Range(buf, at + FRAME, at + FRAME + len) !== crc) break;
      lastStart = pos;
      lastCrc = crc;
      pos += FRAME + len;
      count++;
    }
    return { end: pos, count, lastStart, lastCrc };
  }

  private readFd(g: Generation): number {
    if (g.readFd === undefined) g.readFd = openSync(genFile(this.opts.dir, g.id), 'r');
    return g.readFd;
  }

  private startGeneration(): void {
    const prev = this.gens[this.gens.length - 1];
    const id = (prev?.id ?? 0) + 1;
    const g: Generation = { id, layout: LAYOUT_VERSION, createdAt: this.now(), durable: 0, end: HEADER_BYTES, created: false, readFd: undefined, lastStart: -1, lastCrc: 0 };
    this.gens.push(g);
    this.current = g;
    this.checkpointed = 0;
  }

  get tail(): LogPosition {
    return { gen: this.current.id, offset: this.current.end };
  }

  /** Where the oldest message still stored starts. */
  get head(): LogPosition {
    const g = this.gens[0]!;
    return { gen: g.id, offset: HEADER_BYTES };
  }

  /** Appends are refused now (disk full or size cap): the caller answers 0x97. */
  get full(): boolean {
    if (this.fullUntil !== 0) {
      if (this.fullUntil > this.now()) return true;
      this.fullUntil = 0;
    }
    const cap = this.opts.maxBytes;
    if (cap > 0 && this.metrics.bytes + this.pendingBytes() >= cap) {
      this.enforceCap();
      return this.metrics.bytes + this.pendingBytes() >= cap;
    }
    return false;
  }

  /**
   * For operators (metrics, status): full while appends are refused, and also between the
   * retries of a full disk (`full` lets an append try again each second) until a batch is written.
   */
  get reportsFull(): boolean {
    return this.writeFailed || this.full;
  }

  private pendingBytes(): number {
    let n = this.batch?.bytes ?? 0;
    for (const b of this.queue) n += b.bytes;
    return n;
  }

  /**
   * Append a message. Returns its position, or throws StorageFullError when the disk is full
   * or the size cap is reached (nothing is stored then).
   */
  append(message: Message, storedAt = this.now(), direct = false): LogPosition {
    if (this.closed) throw new StorageFullError('storage is closed');
    if (this.full) {
      this.metrics.refused++;
      this.logFull(this.fullUntil > this.now() ? 'the disk is full' : `EDB_STORAGE_MAX_BYTES (${this.opts.maxBytes}) is reached`);
      throw new StorageFullError('storage full');
    }
    if (storedAt - this.current.createdAt >= this.opts.generationMs) this.roll();
    const g = this.current;
    let b = this.batch;
    if (!b || b.gen !== g) {
      if (b) this.closeBatch();
      b = this.batch = { gen: g, start: g.end, parts: [], slabStart: this.slabUsed, lastStart: -1, lastCrc: 0, bytes: 0, count: 0, callbacks: [], args: [], state: 0, startedAt: 0 };
      if (!g.created && g.end === HEADER_BYTES && g.durable === 0) {
        b.start = 0;
        b.parts.push(header(g.id, g.createdAt, g.layout));
        b.bytes += HEADER_BYTES;
      }
    }
    const room = FRAME + maxEncodedSize(message);
    if (this.slab.length - this.slabUsed < room) {
      // the slab is full: what this batch wrote in it so far becomes a part, a new slab follows
      if (this.slabUsed > b.slabStart) b.parts.push(this.slab.subarray(b.slabStart, this.slabUsed));
      this.slab = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, room));
      this.slabUsed = 0;
      b.slabStart = 0;
    }
    const slab = this.slab;
    const at = this.slabUsed;
    const end = encodeMessageInto(message, storedAt, direct, slab, at + FRAME);
    const len = end - at - FRAME;
    const crc = crc32Range(slab, at + FRAME, end);
    slab.writeUInt32LE(len, at);
    slab.writeUInt32LE(crc, at + 4);
    this.slabUsed = end;
    const pos: LogPosition = { gen: g.id, offset: g.end };
    b.lastStart = g.end;
    b.lastCrc = crc;
    b.bytes += FRAME + len;
    b.count++;
    g.end += FRAME + len;
    this.metrics.messagesAppended++;
    this.metrics.bytesAppended += FRAME + len;
    if (b.count >= this.opts.batchSize) this.closeBatch();
    else if (!this.flushTimer && !this.closeSoon) this.scheduleClose();
    return pos;
  }

  /**
   * A commit slot is free: the batch closes at the end of this turn (every message read in it
   * joins); all busy: it grows until one is free, at most EDB_STORAGE_FLUSH_INTERVAL_MS. Out of
   * append, which then creates no closure (a closure there made every append allocate a context).
   */
  private scheduleClose(): void {
    if (this.writing < this.inFlight && this.inFlight > 1) {
      this.closeSoon = true;
      this.closingBatch = this.batch;
      setImmediate(this.closeAtTurnEnd);
    } else this.flushTimer = setTimeout(this.closeOnTimer, this.opts.flushIntervalMs);
  }

  private closingBatch: Batch | undefined;
  private readonly closeOnTimer = (): void => this.closeBatch();
  private readonly closeAtTurnEnd = (): void => {
    this.closeSoon = false;
    const b = this.closingBatch;
    this.closingBatch = undefined;
    if (this.batch === b && this.writing < this.inFlight) this.closeBatch();
    else if (this.batch && !this.flushTimer) this.flushTimer = setTimeout(this.closeOnTimer, this.opts.flushIntervalMs);
  };

  /** The next append starts a new generation (time bound reached, or a new layout). */
  roll(): void {
    if (this.current.end === HEADER_BYTES && !this.current.created) return; // empty already
    if (this.batch) this.closeBatch();
    this.startGeneration();
  }

  /** `cb` runs once everything appended so far is durable (err: its batch could not be written). */
  onDurable(cb: DurableCallback, arg = 0): void {
    const target = this.batch ?? this.queue[this.queue.length - 1];
    if (target) {
      target.callbacks.push(cb);
      target.args.push(arg);
    } else callSoon(cb, arg);
  }

  /** Resolves once everything appended so far is durable. */
  flushed(): Promise<void> {
    if (this.batch) this.closeBatch();
    return new Promise((resolve, reject) => this.onDurable((err) => (err ? reject(err) : resolve())));
  }

  private closeBatch(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    const b = this.batch;
    if (!b) return;
    this.batch = undefined;
    if (this.slabUsed > b.slabStart) b.parts.push(this.slab.subarray(b.slabStart, this.slabUsed));
    this.queue.push(b);
    this.startWrites();
  }

  /** Start writing queued batches, up to COMMITS_IN_FLIGHT at once. */
  private startWrites(): void {
    for (let i = 0; i < this.queue.length && this.writeError === undefined && this.writing < this.inFlight; i++) {
      const b = this.queue[i]!;
      if (b.state !== 0) continue; // being written, or written and waiting for the ones before it
      // alongside others only in the same generation, once its file is open
      if (i > 0 && (b.gen !== this.queue[0]!.gen || this.appendFd === undefined || this.appendFdGen !== b.gen.id)) break;
      this.writing++;
      b.state = 1;
      b.startedAt = performance.now();
      this.writeBatch(b);
    }
  }

  /** A batch's write ended: hand out the batches durable in order, or fail from the first that is not. */
  private settle(b: Batch, err: Error | undefined): void {
    this.writing--;
    b.state = err ? 3 : 2;
    if (err) this.writeError ??= err;
    else {
      this.writeFailed = false;
      const ms = performance.now() - b.startedAt;
      const m = this.metrics;
      m.commits++;
      m.commitMillisTotal += ms;
      if (ms > m.commitMillisMax) m.commitMillisMax = ms;
      m.lastBatchMessages = b.count;
    }
    while (this.queue.length > 0 && this.queue[0]!.state === 2) {
      const done = this.queue.shift()!;
      const g = done.gen;
      g.durable = done.start + done.bytes;
      if (done.lastStart >= 0) {
        g.lastStart = done.lastStart;
        g.lastCrc = done.lastCrc;
      }
      this.updateSize();
      const cbs = done.callbacks;
      for (let i = 0; i < cbs.length; i++) cbs[i]!(undefined, done.args[i]!);
      if (g === this.current && g.durable - this.checkpointed >= CHECKPOINT_BYTES) this.writeCheckpoint(g);
    }
    if (this.writeError !== undefined) {
      if (this.writing > 0) return; // the others settle first: then the file is cut back once
      const failure = this.writeError;
      this.writeError = undefined;
      const first = this.queue[0];
      if (first) this.failFrom(first, failure);
      return;
    }
    // a slot is free: the open batch need not wait for its timer
    if (this.inFlight > 1 && this.batch && this.writing < this.inFlight && this.queue.every((q) => q.state !== 0)) this.closeBatch();
    this.startWrites();
  }

  /**
   * Write a batch (writev on a file opened with O_DSYNC, else writev then fdatasync) with the callback API: one request per step, no
   * promises (the promise API cost 8% of the main thread at a few thousand batches a second).
   * Ends in settle(b, err).
   */
  private writeBatch(b: Batch): void {
    const g = b.gen;
    if (this.appendFd === undefined || this.appendFdGen !== g.id) {
      const old = this.appendFd;
      this.appendFd = undefined;
      if (old !== undefined) close(old, () => undefined);
      const flags = g.created ? fsConstants.O_RDWR : fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC;
      open(genFile(this.opts.dir, g.id), O_DSYNC === undefined ? flags : flags | O_DSYNC, 0o600, (err, fd) => {
        if (err) return this.settle(b, err);
        this.appendFd = fd;
        this.appendFdGen = g.id;
        if (!g.created) {
          g.created = true;
          fsyncDir(this.opts.dir);
        }
        this.writeParts(b, fd, b.parts, b.start);
      });
      return;
    }
    this.writeParts(b, this.appendFd, b.parts, b.start);
  }

  private writeParts(b: Batch, fd: number, parts: Buffer[], off: number): void {
    writev(fd, parts, off, (err, bytesWritten) => {
      if (err) return this.settle(b, err);
      let rest = parts;
      if (bytesWritten < b.start + b.bytes - off) {
        // short write (rare): the rest again
        rest = [];
        let skip = bytesWritten;
        for (const p of parts) {
          if (skip >= p.length) skip -= p.length;
          else {
            rest.push(skip > 0 ? p.subarray(skip) : p);
            skip = 0;
          }
        }
        if (bytesWritten === 0) return this.settle(b, new Error('the log file took no bytes'));
        return this.writeParts(b, fd, rest, off + bytesWritten);
      }
      // O_DSYNC: the writev returned once the data was durable
      if (O_DSYNC !== undefined) this.settle(b, undefined);
      else fdatasync(fd, (err2) => this.settle(b, err2 ?? undefined));
    });
  }

  /**
   * A batch could not be written (disk full, I/O error): it and every later one are refused,
   * the file is cut back to what was durable, and appends are refused for a second.
   */
  private failFrom(b: Batch, err: Error): void {
    const failed = [...this.queue];
    this.queue.length = 0;
    if (this.batch) failed.push(this.batch);
    this.batch = undefined;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const g = b.gen;
    g.end = Math.max(g.durable, b.start);
    if (g.durable === 0 && b.start === 0) {
      // the generation's first batch: its file may hold a partial header
      g.end = HEADER_BYTES;
    }
    for (const other of failed) if (other.gen !== g) this.gens.splice(this.gens.indexOf(other.gen), 1);
    this.current = g;
    try {
      if (this.appendFd !== undefined && this.appendFdGen === g.id) {
        const fd = this.appendFd;
        ftruncateSync(fd, g.durable);
        if (g.durable === 0) {
          writeSync(fd, header(g.id, g.createdAt, g.layout), 0, HEADER_BYTES, 0);
          g.durable = HEADER_BYTES;
        }
      }
    } catch {
      // the tail is checked again at the next start
    }
    const full = (err as NodeJS.ErrnoException).code === 'ENOSPC' || (err as NodeJS.ErrnoException).code === 'EDQUOT';
    this.fullUntil = this.now() + 1000;
    this.writeFailed = true;
    this.logFull(full ? 'the disk is full' : `write failed: ${err.message}`);
    const refused = new StorageFullError(full ? 'disk full' : err.message);
    for (const x of failed) {
      this.metrics.refused += x.count; // appended, then refused by the disk
      for (let i = 0; i < x.callbacks.length; i++) x.callbacks[i]!(refused, x.args[i]!);
    }
  }

  private logFull(reason: string): void {
    const now = this.now();
    if (now - this.fullLoggedAt < 60_000) return;
    this.fullLoggedAt = now;
    this.opts.log.error({ reason, bytes: this.metrics.bytes, maxBytes: this.opts.maxBytes }, `storage: ${reason}; QoS 1/2 messages that need storage are refused (0x97) until there is room`);
  }

  private updateSize(): void {
    let n = 0;
    for (const g of this.gens) n += g.created ? g.durable : 0;
    this.metrics.bytes = n;
    this.metrics.generations = this.gens.length;
  }

  /** Drop closed generations past the retention and, above the cap, the oldest ones. Returns how many. */
  sweep(): number {
    let dropped = 0;
    const retention = this.opts.retentionMs;
    if (retention > 0) {
      const cutoff = this.now() - retention;
      // a closed generation's newest message is older than the next generation's start
      while (this.gens.length > 1 && this.gens[1]!.createdAt <= cutoff && this.gens[0] !== this.current) {
        this.dropOldest('retention');
        dropped++;
      }
    }
    dropped += this.enforceCap();
    return dropped;
  }

  private enforceCap(): number {
    const cap = this.opts.maxBytes;
    let dropped = 0;
    while (cap > 0 && this.metrics.bytes + this.pendingBytes() >= cap && this.gens.length > 1 && this.gens[0] !== this.current) {
      if (this.queue.some((b) => b.gen === this.gens[0])) break; // still being written
      this.dropOldest('size_cap');
      dropped++;
    }
    return dropped;
  }

  /** `listener` runs after each generation dropped by retention or the size cap. */
  onDropped(listener: (d: DroppedGeneration) => void): void {
    this.dropListeners.push(listener);
  }

  private dropOldest(reason: DroppedGeneration['reason']): void {
    const g = this.gens.shift()!;
    if (g.readFd !== undefined) closeSync(g.readFd);
    g.readFd = undefined;
    const file = genFile(this.opts.dir, g.id);
    try {
      unlinkSync(file);
    } catch {
      /* already gone */
    }
    fsyncDir(this.opts.dir);
    this.metrics.generationsDropped++;
    this.metrics.bytesDropped += g.durable;
    this.updateSize();
    this.opts.log.info({ generation: g.id, bytes: g.durable, reason }, `storage: generation ${g.id} dropped (${reason === 'size_cap' ? 'size cap' : reason})`);
    for (const listener of this.dropListeners) {
      try {
        listener({ gen: g.id, reason, bytes: g.durable });
      } catch (err) {
        this.opts.log.error({ err: (err as Error).message }, 'storage: a reader failed on a dropped generation');
      }
    }
  }

  /**
   * Read up to `max` durable entries (and about `maxBytes`) from `from` on, across generations.
   * A position in a dropped generation continues at the oldest one kept. `next` is where to read
   * on. Records are read in chunks of READ_CHUNK (one read per chunk, not two per record),
   * so that a session draining a long backlog costs a few reads per batch. A generation whose
   * last batches are not durable yet (just closed by a roll) is not passed over: the read stops
   * there until they are.
   */
  read(from: LogPosition, max: number, maxBytes = 1 << 20): { entries: LogEntry[]; next: LogPosition } {
    const entries: LogEntry[] = [];
    let pos = this.clamp(from);
    let budget = maxBytes;
    let chunk: Buffer | undefined;
    let chunkGen = -1;
    let chunkStart = 0;
    let chunkLen = 0;
    while (entries.length < max && budget > 0) {
      const gi = this.gens.findIndex((x) => x.id === pos.gen);
      if (gi < 0) break;
      const g = this.gens[gi]!;
      let r: { end: number; message: Message; storedAt: number; direct: boolean } | 'short' | undefined;
      if (g.created && pos.offset + FRAME <= g.durable) {
        // the record from the chunk in hand, or a new chunk read from its start
        const inChunk = chunk !== undefined && chunkGen === g.id && pos.offset >= chunkStart && pos.offset + FRAME <= chunkStart + chunkLen;
        if (!inChunk) {
          const want = Math.max(FRAME + MIN_BODY, Math.min(budget, g.durable - pos.offset, READ_CHUNK));
          if (!chunk || chunk.length < want) chunk = Buffer.allocUnsafe(READ_CHUNK);
          chunkLen = this.readAt(g, chunk, Math.min(want, g.durable - pos.offset), pos.offset);
          chunkGen = g.id;
          chunkStart = pos.offset;
        }
        r = this.recordIn(g, chunk!, chunkStart, chunkLen, pos.offset);
        if (r === 'short') {
          // longer than the chunk: read on its own
          chunkGen = -1;
          r = this.readRecord(g, pos.offset);
        }
      }
      if (r === undefined || r === 'short') {
        if (g.created && pos.offset < g.durable) {
          // durable bytes that are not a record (damaged after the start's check, which stops
          // at the checkpoint): never handed out; reading goes on at the next whole record
          pos = { gen: g.id, offset: this.skipDamaged(g, pos.offset) };
          chunkGen = -1;
          if (pos.offset < g.durable) continue;
        }
        const nextGen = this.gens[gi + 1];
        if (!nextGen) break; // the newest generation: new messages may still come
        if (g.durable < g.end) break; // its last batches are being written: not past them yet
        pos = { gen: nextGen.id, offset: HEADER_BYTES };
        continue;
      }
      const next = { gen: g.id, offset: r.end };
      entries.push({ pos, next, message: r.message, storedAt: r.storedAt, direct: r.direct });
      budget -= r.end - pos.offset;
      pos = next;
    }
    return { entries, next: pos };
  }

  /** Damaged spots already logged and counted (generation:offset -> where reading goes on). */
  private readonly damaged = new Map<string, number>();

  /**
   * The offset of the next whole record after `from` in a generation (a frame whose length
   * fits and whose CRC-32 matches), or its durable end when there is none. Logged and counted
   * once per damaged spot, however many readers pass it.
   */
  private skipDamaged(g: Generation, from: number): number {
    const key = `${g.id}:${from}`;
    const known = this.damaged.get(key);
    if (known !== undefined) return known;
    let to = g.durable;
    const buf = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(FRAME + MIN_BODY, g.durable - from)));
    search: for (let base = from + 1; base + FRAME + MIN_BODY <= g.durable; ) {
      const n = this.readAt(g, buf, Math.min(buf.length, g.durable - base), base);
      if (n < FRAME + MIN_BODY) break;
      const last = n - FRAME - MIN_BODY;
      for (let i = 0; i <= last; i++) {
        const len = buf.readUInt32LE(i);
        if (len < MIN_BODY || len > MAX_BODY || base + i + FRAME + len > g.durable) continue;
        const whole = i + FRAME + len <= n ? crc32Range(buf, i + FRAME, i + FRAME + len) === buf.readUInt32LE(i + 4) : this.readRecord(g, base + i) !== undefined;
        if (whole) {
          to = base + i;
          break search;
        }
      }
      base += last + 1;
    }
    this.damaged.set(key, to);
    this.metrics.damagedBytes += to - from;
    this.opts.log.error(
      { generation: g.id, offset: from, bytes: to - from, next: to },
      to < g.durable
        ? `storage: a damaged record in generation ${g.id} at offset ${from}: ${to - from} bytes skipped (never handed out), reading goes on at the next whole record (${to})`
        : `storage: a damaged record in generation ${g.id} at offset ${from}: the ${to - from} bytes to its end skipped (never handed out)`,
    );
    return to;
  }

  private readAt(g: Generation, buf: Buffer, len: number, at: number): number {
    const fd = this.readFd(g);
    let n = 0;
    while (n < len) {
      const got = readSync(fd, buf, n, len - n, at + n);
      if (got <= 0) break;
      n += got;
    }
    return n;
  }

  /** The record at `offset` from a chunk read at `start`; 'short' when it does not fit in the chunk. */
  private recordIn(g: Generation, buf: Buffer, start: number, len: number, offset: number): { end: number; message: Message; storedAt: number; direct: boolean } | 'short' | undefined {
    const at = offset - start;
    if (at + FRAME > len) return 'short';
    const bodyLen = buf.readUInt32LE(at);
    if (bodyLen < MIN_BODY || bodyLen > MAX_BODY || offset + FRAME + bodyLen > g.durable) return undefined;
    if (at + FRAME + bodyLen > len) return 'short';
    const body = buf.subarray(at + FRAME, at + FRAME + bodyLen);
    if ((crc32(body) >>> 0) !== buf.readUInt32LE(at + 4)) return undefined;
    try {
      // decodeMessage copies the payload: nothing keeps the chunk alive
      const { message, storedAt, direct } = decodeMessage(body, g.layout);
      return { end: offset + FRAME + bodyLen, message, storedAt, direct };
    } catch {
      return undefined;
    }
  }

  /** A position the log still holds: before the oldest generation means its start. */
  clamp(p: LogPosition): LogPosition {
    const first = this.gens[0]!;
    if (p.gen < first.id || (p.gen === first.id && p.offset < HEADER_BYTES)) return { gen: first.id, offset: HEADER_BYTES };
    const g = this.gens.find((x) => x.id === p.gen);
    if (!g) {
      const after = this.gens.find((x) => x.id > p.gen);
      return after ? { gen: after.id, offset: HEADER_BYTES } : this.tail;
    }
    if (p.offset > g.end) return { gen: g.id, offset: g.end };
    return p;
  }

  private readRecord(g: Generation, offset: number): { end: number; message: Message; storedAt: number; direct: boolean } | undefined {
    if (!g.created || offset + FRAME > g.durable) return undefined;
    const fd = this.readFd(g);
    const head = Buffer.allocUnsafe(FRAME);
    if (readSync(fd, head, 0, FRAME, offset) !== FRAME) return undefined;
    const len = head.readUInt32LE(0);
    if (len < MIN_BODY || len > MAX_BODY || offset + FRAME + len > g.durable) return undefined;
    const body = Buffer.allocUnsafe(len);
    if (readSync(fd, body, 0, len, offset + FRAME) !== len) return undefined;
    if ((crc32(body) >>> 0) !== head.readUInt32LE(4)) return undefined;
    try {
      const { message, storedAt, direct } = decodeMessage(body, g.layout);
      return { end: offset + FRAME + len, message, storedAt, direct };
    } catch {
      return undefined;
    }
  }

  generations(): GenerationInfo[] {
    return this.gens.map((g) => ({ id: g.id, layout: g.layout, createdAt: g.createdAt, bytes: g.created ? g.durable : 0, current: g === this.current }));
  }

  /** When the oldest stored message was stored, if there is one. */
  oldestStoredAt(): number | undefined {
    for (const g of this.gens) {
      const r = this.readRecord(g, HEADER_BYTES);
      if (r) return r.storedAt;
    }
    return undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.batch) this.closeBatch();
    await new Promise<void>((resolve) => this.onDurable(() => resolve()));
    this.closed = true;
    const g = this.current;
    if (g.created && g.durable !== this.checkpointed) this.writeCheckpoint(g);
    if (this.appendFd !== undefined) {
      try {
        closeSync(this.appendFd);
      } catch {
        // closed already
      }
    }
    this.appendFd = undefined;
    for (const g of this.gens) {
      if (g.readFd !== undefined) closeSync(g.readFd);
      g.readFd = undefined;
    }
  }
}
