/**
 * Load generator worker: a child process of bench/load.ts that plays publishers,
 * subscribers or idle connections over raw MQTT 3.1.1 on node:net.
 *
 * Lean on purpose: packets are built once with mqtt-packet and patched in place (timestamp,
 * sequence, packet id), written in batches, and read back with a minimal PUBLISH/ack parser,
 * so that the generator costs far less CPU than the broker it drives.
 *
 * Clock: the send time in each payload is nowMicros() (clock.ts), shared by all processes.
 *
 * Payload layout (little endian): [0..8) float64 send time in µs, [8..12) uint32 sequence,
 * [12..14) uint16 publisher index, then filler up to the payload size.
 */
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { Histogram } from './histogram.js';
import { nowMicros } from './clock.js';

export type WorkerSetup =
  | {
      cmd: 'setup';
      role: 'flow';
      port: number;
      pubIds: string[];
      topics: string[];
      subIds: string[];
      filter: string;
      qos: 0 | 1;
      payloadSize: number;
      /** QoS 1: PUBLISH packets awaiting PUBACK per publisher. */
      inflight: number;
      /** Subscribers connect with clean session off (3.1.1: persistent sessions). */
      persistentSubscribers?: boolean;
      /** Messages per publisher sent but not yet seen by every subscriber (closed loop). */
      outstanding: number;
      batch: number;
    }
  | { cmd: 'setup'; role: 'idle'; port: number; ids: string[]; concurrency: number };

export type WorkerCommand =
  | WorkerSetup
  | { cmd: 'start'; start: number; windowStart: number; end: number }
  | { cmd: 'progress' }
  | { cmd: 'report' }
  | { cmd: 'close' };

export interface WorkerReport {
  role: 'flow' | 'idle';
  connections: number;
  /** Messages written by the publishers over the whole trial. */
  sent: number;
  /** Messages written by publishers whose send time is in the measurement window. */
  sentInWindow: number;
  /** Messages received by all subscribers over the whole trial. */
  received: number;
  /** Messages received by subscribers within the measurement window (arrival time). */
  receivedInWindow: number;
  /** Times the closed loop gave up waiting for messages that never came (counted as lost). */
  writeOffs: number;
  errors: string[];
  /** CPU seconds used by this process during the measurement window. */
  cpuSeconds: number;
  histogram?: [number, number][];
}

export type WorkerMessage = { ok: 'ready'; errors: string[] } | { ok: 'progress'; total: number } | { ok: 'report'; report: WorkerReport } | { ok: 'error'; error: string };

const send = (m: WorkerMessage): void => {
  process.send?.(m);
};

/** Reads whole MQTT packets out of a byte stream; calls back with type nibble and bounds. */
class PacketReader {
  private rest: Buffer | undefined;

  constructor(private readonly onPacket: (first: number, buf: Buffer, body: number, end: number) => void) {}

  feed(chunk: Buffer): void {
    let buf = chunk;
    if (this.rest) {
      buf = Buffer.concat([this.rest, chunk]);
      this.rest = undefined;
    }
    let pos = 0;
    const len = buf.length;
    while (pos + 2 <= len) {
      let rl = 0;
      let mul = 1;
      let i = pos + 1;
      let b: number;
      do {
        if (i >= len) {
          this.rest = buf.subarray(pos);
          return;
        }
        b = buf[i++]!;
        rl += (b & 0x7f) * mul;
        mul *= 128;
      } while (b & 0x80);
      const end = i + rl;
      if (end > len) break;
      this.onPacket(buf[pos]!, buf, i, end);
      pos = end;
    }
    if (pos < len) this.rest = Buffer.from(buf.subarray(pos));
  }
}

function packet(p: object): Buffer {
  return mqttPacket.generate(p as mqttPacket.Packet);
}

/** Open a TCP connection and complete CONNECT/CONNACK (MQTT 3.1.1, clean session unless `clean` is false). */
function connectClient(port: number, clientId: string, onPacket: (first: number, buf: Buffer, body: number, end: number) => void, clean = true): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    let connected = false;
    const reader = new PacketReader((first, buf, body, end) => {
      if (!connected) {
        if (first >> 4 !== 2) return reject(new Error(`${clientId}: expected CONNACK, got type ${first >> 4}`));
        const rc = buf[body + 1];
        if (rc !== 0) return reject(new Error(`${clientId}: CONNACK return code ${rc}`));
        connected = true;
        resolve(socket);
        return;
      }
      onPacket(first, buf, body, end);
    });
    socket.on('data', (chunk: Buffer) => reader.feed(chunk));
    socket.on('error', (err) => {
      if (!connected) reject(new Error(`${clientId}: ${err.message}`));
    });
    socket.on('connect', () => {
      socket.write(packet({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean, keepalive: 0 }));
    });
  });
}

// ------------------------------------------------------------------ state

const sockets: net.Socket[] = [];
const errors: string[] = [];
let role: 'flow' | 'idle' = 'idle';
let sent = 0;
let sentInWindow = 0;
let received = 0;
let receivedInWindow = 0;
let writeOffs = 0;
let windowStart = Infinity;
let windowEnd = Infinity;
let cpuAtStart: NodeJS.CpuUsage | undefined;
let cpuSeconds = 0;
let subscriberCount = 1;
const histogram = new Histogram();
const publishers: Publisher[] = [];
/** Deliveries seen by the subscribers, per publisher index (closed-loop accounting). */
let deliveredFrom = new Float64Array(0);

function noteError(err: unknown): void {
  if (errors.length < 20) errors.push(String((err as Error)?.message ?? err));
}

/**
 * One publishing connection. Writes batches while three things allow: the socket takes the
 * bytes (TCP back-pressure), QoS 1 packets awaiting PUBACK stay under `inflight`, and
 * messages not yet seen by every subscriber stay under `outstanding` (a closed loop, so the
 * measured latency is the broker's and not the depth of kernel buffers).
 */
class Publisher {
  private readonly template: Buffer;
  private readonly payloadOffset: number;
  private readonly idOffset: number;
  private inflight = 0;
  private nextId = 1;
  private seq = 0;
  private running = false;
  private waitingDrain = false;
  /** Blocked on the closed loop since (µs), or 0. */
  blockedSince = 0;
  private blockedAt = 0;
  private end = 0;
  sent = 0;
  /** Deliveries given up on after a stall (messages the broker dropped). */
  writtenOff = 0;

  constructor(
    readonly socket: net.Socket,
    readonly index: number,
    topic: string,
    private readonly qos: 0 | 1,
    payloadSize: number,
    private readonly maxInflight: number,
    private readonly maxOutstanding: number,
    private readonly batch: number,
  ) {
    const payload = Buffer.alloc(payloadSize, 'x');
    this.template = packet({ cmd: 'publish', topic, payload, qos, retain: false, dup: false, ...(qos > 0 ? { messageId: 1 } : {}) });
    this.payloadOffset = this.template.length - payloadSize;
    this.idOffset = this.payloadOffset - 2;
    this.template.writeUInt16LE(index, this.payloadOffset + 12);
    socket.on('drain', () => {
      if (this.waitingDrain) {
        this.waitingDrain = false;
        this.pump();
      }
    });
  }

  /** Deliveries of this publisher's messages not yet seen by the subscribers. */
  outstanding(): number {
    return this.sent * subscriberCount - deliveredFrom[this.index]! - this.writtenOff;
  }

  onAck(): void {
    this.inflight--;
    if (this.running && !this.waitingDrain && this.inflight <= this.maxInflight >> 1) this.pump();
  }

  /** Called after subscribers read a chunk: resume when the loop has room again. */
  onDelivered(): void {
    if (this.blockedSince && this.outstanding() <= (this.maxOutstanding * subscriberCount) >> 1) {
      this.blockedSince = 0;
      if (this.running && !this.waitingDrain) this.pump();
    }
  }

  /** The loop has not moved for a while: the broker dropped what is missing. */
  checkStall(now: number): void {
    if (!this.blockedSince || !this.running) return;
    const seen = deliveredFrom[this.index]!;
    if (seen !== this.blockedAt) {
      this.blockedAt = seen;
      this.blockedSince = now;
    } else if (now - this.blockedSince > 500_000) {
      this.writtenOff += this.outstanding();
      writeOffs++;
      this.blockedSince = 0;
      if (!this.waitingDrain) this.pump();
    }
  }

  start(end: number): void {
    this.end = end;
    this.running = true;
    this.pump();
  }

  private readonly pump = (): void => {
    const tplLen = this.template.length;
    const cap = this.maxOutstanding * subscriberCount;
    for (let round = 0; this.running && round < 8; round++) {
      const t = nowMicros();
      if (t >= this.end) {
        this.running = false;
        return;
      }
      let n = Math.min(this.batch, Math.floor((cap - this.outstanding()) / subscriberCount));
      if (this.qos > 0) n = Math.min(n, this.maxInflight - this.inflight);
      if (n <= 0) {
        if (this.qos === 0 || this.inflight < this.maxInflight) {
          this.blockedSince = t;
          this.blockedAt = deliveredFrom[this.index]!;
        }
        return; // resumed by deliveries or acks
      }
      const out = Buffer.allocUnsafe(n * tplLen);
      for (let i = 0; i < n; i++) {
        const base = i * tplLen;
        this.template.copy(out, base);
        out.writeDoubleLE(t, base + this.payloadOffset);
        out.writeUInt32LE(this.seq++ >>> 0, base + this.payloadOffset + 8);
        if (this.qos > 0) {
          out.writeUInt16BE(this.nextId, base + this.idOffset);
          this.nextId = this.nextId === 65535 ? 1 : this.nextId + 1;
        }
      }
      if (this.qos > 0) this.inflight += n;
      this.sent += n;
      sent += n;
      if (t >= windowStart) sentInWindow += n;
      if (!this.socket.write(out)) {
        this.waitingDrain = true;
        return;
      }
    }
    if (this.running) setImmediate(this.pump);
  };
}

async function setupSubscriber(port: number, id: string, filter: string, qos: 0 | 1, clean = true): Promise<void> {
  let subscribed: (() => void) | undefined;
  const acks: Buffer[] = [];
  let arrival = 0;
  const socket = await connectClient(port, id, (first, buf, body, end) => {
    const type = first >> 4;
    if (type === 3) {
      const q = (first >> 1) & 3;
      const topicLen = buf.readUInt16BE(body);
      let p = body + 2 + topicLen;
      if (q > 0) {
        const ack = Buffer.allocUnsafe(4);
        ack[0] = 0x40;
        ack[1] = 2;
        ack[2] = buf[p]!;
        ack[3] = buf[p + 1]!;
        acks.push(ack);
        p += 2;
      }
      received++;
      if (end - p >= 14) {
        deliveredFrom[buf.readUInt16LE(p + 12)]!++;
        if (arrival >= windowStart && arrival < windowEnd) {
          receivedInWindow++;
          histogram.record(arrival - buf.readDoubleLE(p));
        }
      }
    } else if (type === 9) {
      subscribed?.();
    }
  }, clean);
  // one arrival time, one ack write and one closed-loop check per chunk read
  socket.prependListener('data', () => {
    arrival = nowMicros();
  });
  socket.on('data', () => {
    if (acks.length > 0) {
      socket.write(acks.length === 1 ? acks[0]! : Buffer.concat(acks));
      acks.length = 0;
    }
    for (const p of publishers) p.onDelivered();
  });
  sockets.push(socket);
  await new Promise<void>((resolve) => {
    subscribed = resolve;
    socket.write(packet({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos }] }));
  });
}

async function setupFlow(s: Extract<WorkerSetup, { role: 'flow' }>): Promise<void> {
  subscriberCount = s.subIds.length;
  deliveredFrom = new Float64Array(s.pubIds.length);
  // subscribers first, so no message is published before every subscription is in place
  await Promise.all(s.subIds.map((id) => setupSubscriber(s.port, id, s.filter, s.qos, !s.persistentSubscribers)));
  for (let i = 0; i < s.pubIds.length; i++) {
    let pub: Publisher | undefined;
    const socket = await connectClient(s.port, s.pubIds[i]!, (first) => {
      if (first >> 4 === 4) pub?.onAck(); // PUBACK
    });
    pub = new Publisher(socket, i, s.topics[i]!, s.qos, s.payloadSize, s.inflight, s.outstanding, s.batch);
    sockets.push(socket);
    publishers.push(pub);
  }
  setInterval(() => {
    const now = nowMicros();
    for (const p of publishers) p.checkStall(now);
  }, 100).unref();
}

async function setupIdle(s: Extract<WorkerSetup, { role: 'idle' }>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < s.ids.length) {
      const id = s.ids[next++]!;
      try {
        sockets.push(await connectClient(s.port, id, () => undefined));
      } catch (err) {
        noteError(err);
      }
    }
  };
  await Promise.all(Array.from({ length: s.concurrency }, lane));
}

function report(): WorkerReport {
  const r: WorkerReport = { role, connections: sockets.length, sent, sentInWindow, received, receivedInWindow, writeOffs, errors, cpuSeconds };
  if (role === 'flow') r.histogram = histogram.entries();
  return r;
}

process.on('message', (msg: WorkerCommand) => {
  void (async () => {
    try {
      switch (msg.cmd) {
        case 'setup':
          role = msg.role;
          if (msg.role === 'flow') await setupFlow(msg);
          else await setupIdle(msg);
          send({ ok: 'ready', errors });
          break;
        case 'start': {
          windowStart = msg.windowStart;
          windowEnd = msg.end;
          const at = (t: number, fn: () => void): void => {
            setTimeout(fn, Math.max(0, (t - nowMicros()) / 1000));
          };
          at(msg.windowStart, () => (cpuAtStart = process.cpuUsage()));
          at(msg.end, () => {
            const d = process.cpuUsage(cpuAtStart);
            cpuSeconds = (d.user + d.system) / 1e6;
          });
          at(msg.start, () => {
            for (const p of publishers) p.start(msg.end);
          });
          break;
        }
        case 'progress':
          send({ ok: 'progress', total: received });
          break;
        case 'report':
          send({ ok: 'report', report: report() });
          break;
        case 'close':
          for (const s of sockets) s.destroy();
          process.exit(0);
      }
    } catch (err) {
      send({ ok: 'error', error: (err as Error).stack ?? String(err) });
    }
  })();
});

process.on('uncaughtException', (err) => {
  send({ ok: 'error', error: err.stack ?? String(err) });
});
