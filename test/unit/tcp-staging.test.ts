/**
 * The TCP transport's output staging (src/transport/tcp.ts): what one turn writes is copied or
 * encoded in place into one buffer per connection and leaves in one socket write. Real sockets
 * on port 0; the bytes are numbered so that a staging buffer written again while the socket
 * still held it (a peer that does not read) would show up as corrupted or reordered data.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Connection, ConnectionEvents, Listener } from '../../src/transport/connection.js';
import { startTcpListener } from '../../src/transport/tcp.js';

interface Served {
  listener: Listener;
  conn: Promise<Connection>;
  drains: { count: number; wait: () => Promise<void> };
}

let served: Served | undefined;
let sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets = [];
  await served?.listener.close();
  served = undefined;
});

async function serve(): Promise<Served> {
  let resolveConn!: (c: Connection) => void;
  const conn = new Promise<Connection>((r) => (resolveConn = r));
  let drainWaiter: (() => void) | undefined;
  const drains = {
    count: 0,
    wait: () => new Promise<void>((r) => (drainWaiter = r)),
  };
  const listener = await startTcpListener(
    {
      accept(c: Connection): ConnectionEvents {
        resolveConn(c);
        return {
          onData() {},
          onDrain() {
            drains.count++;
            drainWaiter?.();
          },
          onClose() {},
        };
      },
    },
    '127.0.0.1',
    0,
  );
  served = { listener, conn, drains };
  return served;
}

function connect(port: number, read = true): { socket: net.Socket; received: () => Buffer; ended: Promise<void> } {
  const socket = net.connect(port, '127.0.0.1');
  sockets.push(socket);
  const chunks: Buffer[] = [];
  if (read) socket.on('data', (c) => chunks.push(c));
  const ended = new Promise<void>((r) => socket.on('end', () => r()));
  return { socket, received: () => Buffer.concat(chunks), ended };
}

/** A packet-like record: 4-byte sequence number, then `size - 4` bytes derived from it. */
function record(seq: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32BE(seq, 0);
  for (let i = 4; i < size; i++) b[i] = (seq * 31 + i) & 0xff;
  return b;
}

/** Writes record `seq` through reserve/commit (in place) when the transport offers it. */
function writeInPlace(conn: Connection, rec: Buffer): boolean {
  const staged = conn.reserve?.(rec.length);
  if (staged === undefined) return conn.write(rec);
  rec.copy(staged, conn.reservedAt!);
  return conn.commit!(rec.length);
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('TCP output staging', () => {
  it('keeps the order and the bytes of small, in-place and large writes within and across turns', async () => {
    const { listener, conn } = await serve();
    const client = connect(listener.port);
    const c = await conn;
    expect(typeof c.reserve).toBe('function');
    const expected: Buffer[] = [];
    let seq = 0;
    // sizes around the staging limits: tiny, the copy-loop boundary, 4 KiB (largest staged), larger
    const sizes = [4, 5, 32, 33, 350, 4096, 4097, 20_000, 16_384, 1000];
    for (let turn = 0; turn < 5; turn++) {
      // more than one staging buffer's worth in one turn: flushed in the middle, in order
      for (let i = 0; i < 120; i++) {
        const rec = record(seq++, sizes[i % sizes.length]!);
        expected.push(rec);
        if (i % 2 === 0) c.write(rec);
        else writeInPlace(c, rec);
      }
      await new Promise((r) => setImmediate(r));
    }
    const want = Buffer.concat(expected);
    await until(() => client.received().length >= want.length);
    expect(client.received().equals(want)).toBe(true);
    expect(c.bufferedAmount()).toBe(0);
  });

  it('never reuses memory the socket still holds: a peer that stops reading gets every byte intact after it resumes', async () => {
    const { listener, conn, drains } = await serve();
    const client = connect(listener.port, false);
    const c = await conn;
    const expected: Buffer[] = [];
    let seq = 0;
    let blockedAt = -1;
    // write until the transport reports backpressure (the kernel's buffers fill: writes go async)
    for (let turn = 0; turn < 2000 && blockedAt < 0; turn++) {
      for (let i = 0; i < 64; i++) {
        const rec = record(seq++, 200 + (seq % 300));
        expected.push(rec);
        const ok = i % 3 === 0 ? c.write(rec) : writeInPlace(c, rec);
        if (!ok) {
          blockedAt = seq;
          break;
        }
      }
      await new Promise((r) => setImmediate(r));
    }
    expect(blockedAt).toBeGreaterThan(0);
    expect(c.bufferedAmount()).toBeGreaterThan(0);
    // keep writing a little while blocked, as a broker finishing a turn would
    for (let i = 0; i < 50; i++) {
      const rec = record(seq++, 300);
      expected.push(rec);
      writeInPlace(c, rec);
    }
    const drained = drains.wait();
    const chunks: Buffer[] = [];
    client.socket.on('data', (d) => chunks.push(d));
    await drained;
    expect(drains.count).toBeGreaterThan(0);
    const want = Buffer.concat(expected);
    await until(() => chunks.reduce((n, b) => n + b.length, 0) >= want.length, 20_000);
    const got = Buffer.concat(chunks);
    expect(got.length).toBe(want.length);
    // compare record by record for a readable failure
    let pos = 0;
    for (const rec of expected) {
      const seen = got.subarray(pos, pos + rec.length);
      if (!seen.equals(rec)) throw new Error(`record ${rec.readUInt32BE(0)} at byte ${pos} differs (saw seq ${seen.readUInt32BE(0)})`);
      pos += rec.length;
    }
  });

  it('a connection writing one packet a turn gets no staging buffer (reserve says no), a second packet in the turn does', async () => {
    const { listener, conn } = await serve();
    const client = connect(listener.port);
    const c = await conn;
    const expected: Buffer[] = [];
    for (let turn = 0; turn < 3; turn++) {
      expect(c.reserve!(10)).toBeUndefined(); // nothing written yet this turn, no buffer: encode into your own
      const one = record(turn, 40);
      expected.push(one);
      c.write(one);
      expect(c.bufferedAmount()).toBeGreaterThanOrEqual(40);
      await new Promise((r) => setImmediate(r));
    }
    const a = record(10, 40);
    const b = record(11, 12);
    c.write(a);
    expect(writeInPlace(c, b)).toBe(true);
    expect(c.reserve!(10)).toBeDefined(); // the second packet gave it a buffer
    expected.push(a, b);
    const want = Buffer.concat(expected);
    await until(() => client.received().length >= want.length);
    expect(client.received().equals(want)).toBe(true);
  });

  it('sends what is staged before closing', async () => {
    const { listener, conn } = await serve();
    const client = connect(listener.port);
    const c = await conn;
    const recs = [record(1, 10), record(2, 3000), record(3, 7)];
    c.write(recs[0]!);
    writeInPlace(c, recs[1]!);
    c.write(recs[2]!);
    c.close();
    await client.ended;
    expect(client.received().equals(Buffer.concat(recs))).toBe(true);
  });
});
