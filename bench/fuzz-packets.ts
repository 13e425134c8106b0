import net from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';

/**
 * Packet fuzzing for the broker: a corpus of valid MQTT 3.1/3.1.1/5.0 packets encoded by
 * mqtt-packet, mutated (bit flips, interesting bytes, truncation, splicing, bogus lengths)
 * and mixed with random bytes, sent over many TCP connections in random chunk sizes.
 * Deterministic for a given seed, so a crash can be replayed.
 * Used by test/e2e/fuzz.test.ts (bounded) and bench/fuzz-long.ts (long runs).
 */

/** mulberry32: small, fast, seedable. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  int(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
}

type Version = 3 | 4 | 5;

const TOPICS = ['fuzz/a', 'fuzz/+/b', 'fuzz/#', '#', '+', '$SYS/#', '$share/g/fuzz/#', 'a//b', '/', 'fuzz/\u00e9t\u00e9', '$share/g/#'];

function connectPacket(rng: Rng, v: Version): Packet {
  const p: Record<string, unknown> = {
    cmd: 'connect',
    protocolId: v === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion: v,
    clean: rng.chance(0.7),
    clientId: rng.chance(0.1) ? '' : `fuzz-${rng.int(50)}`,
    keepalive: rng.pick([0, 1, 10, 60, 65535]),
  };
  if (rng.chance(0.3)) p['username'] = rng.pick(['fuzz', 'nobody', '', 'a:b', '\u0000']);
  if (p['username'] !== undefined && rng.chance(0.6)) p['password'] = Buffer.from(rng.pick(['fuzz', 'wrong', '']));
  if (rng.chance(0.3)) {
    p['will'] = {
      topic: rng.pick(TOPICS.filter((t) => !t.includes('+') && !t.includes('#'))),
      payload: rng.bytes(rng.int(20)),
      qos: rng.int(3),
      retain: rng.chance(0.3),
      ...(v === 5 ? { properties: { willDelayInterval: rng.int(3), messageExpiryInterval: rng.int(10) } } : {}),
    };
  }
  if (v === 5 && rng.chance(0.7)) {
    const props: Record<string, unknown> = {};
    if (rng.chance(0.5)) props['sessionExpiryInterval'] = rng.pick([0, 1, 60, 0xffffffff]);
    if (rng.chance(0.3)) props['receiveMaximum'] = rng.pick([1, 2, 65535]);
    if (rng.chance(0.3)) props['maximumPacketSize'] = rng.pick([16, 100, 65536]);
    if (rng.chance(0.3)) props['topicAliasMaximum'] = rng.pick([0, 1, 10]);
    if (rng.chance(0.2)) props['requestResponseInformation'] = true;
    if (rng.chance(0.2)) props['userProperties'] = { k: 'v', [`u${rng.int(5)}`]: ['x', 'y'] };
    if (rng.chance(0.05)) props['authenticationMethod'] = 'SCRAM-SHA-1';
    p['properties'] = props;
  }
  return p as unknown as Packet;
}

function otherPacket(rng: Rng, v: Version): Packet {
  const id = 1 + rng.int(65535);
  const topic = rng.pick(TOPICS.filter((t) => !t.includes('+') && !t.includes('#') && !t.startsWith('$share')));
  switch (rng.int(12)) {
    case 0:
    case 1:
    case 2: {
      const qos = rng.int(3);
      const p: Record<string, unknown> = { cmd: 'publish', topic, payload: rng.bytes(rng.int(64)), qos, retain: rng.chance(0.2), dup: rng.chance(0.1) };
      if (qos > 0) p['messageId'] = id;
      if (v === 5 && rng.chance(0.5)) {
        const props: Record<string, unknown> = {};
        if (rng.chance(0.3)) props['topicAlias'] = rng.int(5);
        if (rng.chance(0.3)) props['messageExpiryInterval'] = rng.int(5);
        if (rng.chance(0.3)) props['payloadFormatIndicator'] = rng.chance(0.5);
        if (rng.chance(0.2)) props['responseTopic'] = 'fuzz/resp';
        if (rng.chance(0.2)) props['correlationData'] = rng.bytes(4);
        if (rng.chance(0.2)) props['contentType'] = 'application/octet-stream';
        if (rng.chance(0.2)) props['userProperties'] = { a: 'b' };
        p['properties'] = props;
      }
      return p as unknown as Packet;
    }
    case 3:
    case 4: {
      const subs = Array.from({ length: 1 + rng.int(3) }, () => ({
        topic: rng.pick(TOPICS),
        qos: rng.int(3),
        ...(v === 5 ? { nl: rng.chance(0.2), rap: rng.chance(0.2), rh: rng.int(3) } : {}),
      }));
      const p: Record<string, unknown> = { cmd: 'subscribe', messageId: id, subscriptions: subs };
      if (v === 5 && rng.chance(0.3)) p['properties'] = { subscriptionIdentifier: rng.int(300) };
      return p as unknown as Packet;
    }
    case 5:
      return { cmd: 'unsubscribe', messageId: id, unsubscriptions: [rng.pick(TOPICS)] } as Packet;
    case 6:
      return { cmd: rng.pick(['puback', 'pubrec', 'pubrel', 'pubcomp'] as const), messageId: id, ...(v === 5 ? { reasonCode: rng.pick([0, 0x10, 0x80, 0x92]) } : {}) } as Packet;
    case 7:
      return { cmd: 'pingreq' } as Packet;
    case 8:
      return (v === 5 ? { cmd: 'disconnect', reasonCode: rng.pick([0, 4, 0x80]), properties: rng.chance(0.3) ? { sessionExpiryInterval: rng.int(100) } : undefined } : { cmd: 'disconnect' }) as Packet;
    case 9:
      return (v === 5 ? { cmd: 'auth', reasonCode: rng.pick([0, 0x18, 0x19]), properties: { authenticationMethod: 'X' } } : { cmd: 'pingreq' }) as Packet;
    case 10:
      return connectPacket(rng, v); // a second CONNECT
    default:
      return { cmd: rng.pick(['connack', 'suback', 'unsuback', 'pingresp'] as const), messageId: id, returnCode: 0, granted: [0], sessionPresent: false } as unknown as Packet;
  }
}

function encode(packet: Packet, v: Version): Buffer | undefined {
  try {
    return mqttPacket.generate(packet, { protocolVersion: v });
  } catch {
    return undefined; // a combination mqtt-packet refuses to encode: skip it
  }
}

const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x20, 0x30, 0x82, 0xe0, 0xf0];

/** One mutation of a valid encoding. */
export function mutate(rng: Rng, input: Buffer, spare?: Buffer): Buffer {
  let b = Buffer.from(input);
  const n = 1 + rng.int(3);
  for (let k = 0; k < n && b.length > 0; k++) {
    const at = rng.int(b.length);
    switch (rng.int(9)) {
      case 0:
        b[at] = b[at]! ^ (1 << rng.int(8));
        break;
      case 1:
        b[at] = rng.pick(INTERESTING);
        break;
      case 2:
        b = b.subarray(0, at); // truncate
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(8)), b.subarray(at)]);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rng.int(8)))]);
        break;
      case 5: {
        // a bogus Remaining Length: 1-4 bytes of varint, possibly malformed or huge
        const len = rng.pick([
          Buffer.from([0xff, 0xff, 0xff, 0x7f]),
          Buffer.from([0xff, 0xff, 0xff, 0xff, 0x01]),
          Buffer.from([0x80, 0x00]),
          Buffer.from([rng.int(256)]),
          Buffer.from([0xc0, 0x84, 0x3d]),
        ]);
        b = Buffer.concat([b.subarray(0, 1), len, b.subarray(2)]);
        break;
      }
      case 6:
        b[0] = (rng.int(16) << 4) | rng.int(16); // another packet type or flags
        break;
      case 7:
        if (spare) b = Buffer.concat([b.subarray(0, at), spare.subarray(rng.int(spare.length))]); // splice
        break;
      default: {
        const from = rng.int(b.length);
        const len = 1 + rng.int(Math.min(16, b.length - from));
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)]); // duplicate a range
      }
    }
  }
  return b;
}

export type ScenarioKind = 'valid-then-mutated' | 'mutated-connect' | 'random' | 'connect-then-random' | 'huge-length' | 'valid-session';

/** The bytes one fuzzing connection sends. */
export function scenario(rng: Rng): { kind: ScenarioKind; bytes: Buffer } {
  const v = rng.pick([3, 4, 5, 5] as const);
  const connect = (): Buffer => encode(connectPacket(rng, v), v) ?? Buffer.from([0x10, 0x00]);
  const others = (count: number, mutateP: number): Buffer[] => {
    const out: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const p = encode(otherPacket(rng, v), v);
      if (!p) continue;
      out.push(rng.chance(mutateP) ? mutate(rng, p, encode(otherPacket(rng, v), v)) : p);
    }
    return out;
  };
  const kinds: ScenarioKind[] = ['valid-then-mutated', 'valid-then-mutated', 'mutated-connect', 'random', 'connect-then-random', 'huge-length', 'valid-session'];
  const kind = rng.pick(kinds);
  switch (kind) {
    case 'valid-then-mutated':
      return { kind, bytes: Buffer.concat([connect(), ...others(1 + rng.int(12), 0.5)]) };
    case 'mutated-connect':
      return { kind, bytes: Buffer.concat([mutate(rng, connect()), ...others(rng.int(4), 0.3)]) };
    case 'random':
      return { kind, bytes: rng.bytes(1 + rng.int(300)) };
    case 'connect-then-random':
      return { kind, bytes: Buffer.concat([connect(), rng.bytes(1 + rng.int(200))]) };
    case 'huge-length':
      // claims a 256 MB packet, then sends a little of it
      return { kind, bytes: Buffer.concat([connect(), Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), rng.bytes(rng.int(100))]) };
    default:
      return { kind, bytes: Buffer.concat([connect(), ...others(1 + rng.int(20), 0)]) };
  }
}

export interface FuzzStats {
  connections: number;
  bytesSent: number;
  closedByBroker: number;
  byKind: Record<string, number>;
}

export interface FuzzOptions {
  host: string;
  port: number;
  seed: number;
  /** Total connections to open (ignored when `until` is given). */
  connections: number;
  /** Connections open at once. */
  concurrency: number;
  /** Keep going until this time (ms since epoch) instead of a fixed count. */
  until?: number;
  /** How long a connection lingers after its last byte before we close it. */
  lingerMs?: number;
}

/** Send one scenario over one connection, in random chunks; resolves when the socket is gone. */
function fuzzOne(opts: FuzzOptions, rng: Rng, stats: FuzzStats): Promise<void> {
  const { kind, bytes } = scenario(rng);
  stats.byKind[kind] = (stats.byKind[kind] ?? 0) + 1;
  const chunks: Buffer[] = [];
  for (let at = 0; at < bytes.length; ) {
    const len = rng.chance(0.5) ? bytes.length - at : 1 + rng.int(Math.max(1, bytes.length - at));
    chunks.push(bytes.subarray(at, at + len));
    at += len;
  }
  const delays = chunks.map(() => (rng.chance(0.2) ? rng.int(20) : 0));
  const linger = opts.lingerMs ?? 100;
  return new Promise((resolve) => {
    const socket = net.connect(opts.port, opts.host);
    let closedByUs = false;
    let timer: NodeJS.Timeout | undefined;
    socket.on('error', () => undefined);
    socket.on('data', () => undefined); // read (and discard) what the broker answers
    socket.on('close', () => {
      clearTimeout(timer);
      if (!closedByUs) stats.closedByBroker++;
      resolve();
    });
    socket.on('connect', () => {
      let i = 0;
      const sendNext = (): void => {
        if (socket.destroyed) return;
        if (i >= chunks.length) {
          timer = setTimeout(() => {
            closedByUs = true;
            socket.destroy();
          }, linger);
          return;
        }
        const chunk = chunks[i]!;
        const delay = delays[i]!;
        i++;
        stats.bytesSent += chunk.length;
        socket.write(chunk);
        if (delay > 0) timer = setTimeout(sendNext, delay);
        else setImmediate(sendNext);
      };
      sendNext();
    });
  });
}

export function newFuzzStats(): FuzzStats {
  return { connections: 0, bytesSent: 0, closedByBroker: 0, byKind: {} };
}

/** Run many fuzzing connections with bounded concurrency; `stats` fills in as it goes. */
export async function runFuzz(opts: FuzzOptions, stats: FuzzStats = newFuzzStats()): Promise<FuzzStats> {
  const rng = new Rng(opts.seed);
  const more = (): boolean => (opts.until !== undefined ? Date.now() < opts.until : stats.connections < opts.connections);
  const worker = async (): Promise<void> => {
    while (more()) {
      stats.connections++;
      // each connection gets its own stream, derived from the run's seed
      await fuzzOne(opts, new Rng(rng.next()), stats);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  return stats;
}

/**
 * A well-behaved MQTT.js publisher/subscriber pair that keeps exchanging QoS 1 messages
 * while the fuzzer runs. `stop()` waits for the last messages and reports what was lost.
 */
export interface PairReport {
  sent: number;
  received: number;
  missing: number;
  /** Times either client lost its connection. */
  disconnects: number;
  errors: string[];
}

export async function startWellBehavedPair(url: string, tag: string, intervalMs = 5): Promise<{ stop(): Promise<PairReport> }> {
  const { default: mqtt } = await import('mqtt');
  const topic = `good/${tag}`;
  const errors: string[] = [];
  let disconnects = 0;
  const opts = { protocolVersion: 5 as const, reconnectPeriod: 0, connectTimeout: 10_000, keepalive: 30 };
  const sub = await mqtt.connectAsync(url, { ...opts, clientId: `good-sub-${tag}` });
  const pub = await mqtt.connectAsync(url, { ...opts, clientId: `good-pub-${tag}` });
  for (const c of [sub, pub]) {
    c.on('close', () => disconnects++);
    c.on('error', (err) => errors.push(err.message));
  }
  const received = new Set<number>();
  sub.on('message', (t, payload) => {
    if (t === topic) received.add(Number(payload.toString()));
  });
  await sub.subscribeAsync(topic, { qos: 1 });
  let seq = 0;
  let running = true;
  const loop = (async () => {
    while (running && pub.connected) {
      try {
        await pub.publishAsync(topic, String(seq), { qos: 1 });
        seq++;
      } catch (err) {
        errors.push((err as Error).message);
        break;
      }
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  })();
  return {
    async stop(): Promise<PairReport> {
      running = false;
      await loop;
      const deadline = Date.now() + 5000;
      while (received.size < seq && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const report = { sent: seq, received: received.size, missing: seq - received.size, disconnects, errors };
      await Promise.all([sub.endAsync(true), pub.endAsync(true)]).catch(() => undefined);
      return report;
    },
  };
}
