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

// ---------------------------------------------------------------- v5 properties, field by field

/** Every MQTT 5 property identifier with its value type (section 2.2.2.2), server-only ones included. */
const PROPERTY_KINDS: [number, 'byte' | 'u16' | 'u32' | 'varint' | 'string' | 'binary' | 'pair'][] = [
  [0x01, 'byte'], [0x02, 'u32'], [0x03, 'string'], [0x08, 'string'], [0x09, 'binary'], [0x0b, 'varint'],
  [0x11, 'u32'], [0x12, 'string'], [0x13, 'u16'], [0x15, 'string'], [0x16, 'binary'], [0x17, 'byte'],
  [0x18, 'u32'], [0x19, 'byte'], [0x1a, 'string'], [0x1c, 'string'], [0x1f, 'string'], [0x21, 'u16'],
  [0x22, 'u16'], [0x23, 'u16'], [0x24, 'byte'], [0x25, 'byte'], [0x26, 'pair'], [0x27, 'u32'],
  [0x28, 'byte'], [0x29, 'byte'], [0x2a, 'byte'],
];

const STRING_VALUES = [Buffer.from('text'), Buffer.alloc(0), Buffer.from([0xc3, 0x28]), Buffer.from([0xff, 0xfe]), Buffer.from('a\u0000b'), Buffer.from('fz/\u0016'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('\u00e9t\u00e9')];

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff);
  return b;
}

function lengthPrefixed(rng: Rng, value: Buffer): Buffer {
  // the declared length is usually right; sometimes too long (runs on) or too short
  const declared = rng.chance(0.8) ? value.length : rng.pick([value.length + 1, value.length + 200, 0xffff, Math.max(0, value.length - 1)]);
  return Buffer.concat([u16(declared), value]);
}

/** One property: a random identifier (valid or not for the packet), a value of its type or of a wrong one, or cut short. */
function propertyField(rng: Rng): Buffer {
  if (rng.chance(0.05)) return Buffer.from([rng.pick([0x00, 0x04, 0x2b, 0x7f, 0xff])]); // an identifier that does not exist
  const [id, kind] = rng.pick(PROPERTY_KINDS);
  const wrongType = rng.chance(0.15);
  const type = wrongType ? rng.pick(PROPERTY_KINDS)[1] : kind;
  let value: Buffer;
  switch (type) {
    case 'byte':
      value = Buffer.from([rng.pick([0, 1, 1, 2, 0xff])]);
      break;
    case 'u16':
      value = u16(rng.pick([0, 1, 2, 5, 0xffff]));
      break;
    case 'u32': {
      value = Buffer.alloc(4);
      value.writeUInt32BE(rng.pick([0, 1, 60, 0xffffffff]));
      break;
    }
    case 'varint':
      value = Buffer.from(rng.pick([[0x00], [0x05], [0xff, 0x7f], [0x80, 0x80, 0x80, 0x80], [0x80]]));
      break;
    case 'pair':
      value = Buffer.concat([lengthPrefixed(rng, rng.pick(STRING_VALUES)), lengthPrefixed(rng, rng.pick(STRING_VALUES))]);
      break;
    default:
      value = lengthPrefixed(rng, type === 'binary' ? rng.bytes(rng.int(6)) : rng.pick(STRING_VALUES));
  }
  if (rng.chance(0.1)) value = value.subarray(0, rng.int(value.length)); // cut short
  return Buffer.concat([Buffer.from([id]), value]);
}

function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

/** A property block of 1-4 fields (sometimes one repeated), with a Property Length that is usually right. */
function propertyBlock(rng: Rng): Buffer {
  const fields: Buffer[] = [];
  for (let i = 0, n = 1 + rng.int(4); i < n; i++) fields.push(propertyField(rng));
  if (rng.chance(0.15)) fields.push(fields[0]!); // a duplicate
  const body = Buffer.concat(fields);
  const declared = rng.chance(0.85) ? body.length : rng.pick([0, body.length + 1, body.length + 50, Math.max(0, body.length - 1)]);
  return Buffer.concat([varint(declared), body]);
}

function frame(first: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([first]), varint(body.length), body]);
}

const PROPERTY_TOPICS = ['fuzz/p', 'fuzz/p/deep/er', 'fuzz/\u00e9', 'fuzz/\u000f55', 'fuzz/\u007f', 'fuzz/r'];

/** A v5 packet from a client whose properties are mutated field by field (most are retained PUBLISHes: the poison case). */
export function propertyPacket(rng: Rng): Buffer {
  const str = (s: string): Buffer => Buffer.concat([u16(Buffer.byteLength(s)), Buffer.from(s)]);
  switch (rng.int(8)) {
    case 0: // SUBSCRIBE
      return frame(0x82, Buffer.concat([u16(1 + rng.int(100)), propertyBlock(rng), str(rng.pick(['fuzz/#', '#', 'fuzz/\u0001'])), Buffer.from([1])]));
    case 1: // PUBACK / PUBREC / PUBREL / PUBCOMP with a reason code
      return frame(rng.pick([0x40, 0x50, 0x62, 0x70]), Buffer.concat([u16(1 + rng.int(100)), Buffer.from([rng.pick([0, 0x10, 0x80])]), propertyBlock(rng)]));
    case 2: // DISCONNECT with a reason code
      return frame(0xe0, Buffer.concat([Buffer.from([rng.pick([0, 4])]), propertyBlock(rng)]));
    default: {
      // PUBLISH, retained more often than not
      const qos = rng.int(3);
      const first = 0x30 | (qos << 1) | (rng.chance(0.7) ? 1 : 0);
      return frame(first, Buffer.concat([str(rng.pick(PROPERTY_TOPICS)), qos > 0 ? u16(1 + rng.int(60000)) : Buffer.alloc(0), propertyBlock(rng), rng.bytes(rng.int(16))]));
    }
  }
}

/** A v5 CONNECT whose CONNECT or will properties are mutated field by field. */
function propertyConnect(rng: Rng): Buffer {
  const str = (s: string): Buffer => Buffer.concat([u16(Buffer.byteLength(s)), Buffer.from(s)]);
  const will = rng.chance(0.4);
  const parts = [str('MQTT'), Buffer.from([5, 0x02 | (will ? 0x04 | (rng.chance(0.5) ? 0x20 : 0) : 0), 0, 30]), propertyBlock(rng), str(`fuzzp-${rng.int(20)}`)];
  if (will) parts.push(propertyBlock(rng), str(rng.pick(PROPERTY_TOPICS)), str('gone'));
  return frame(0x10, Buffer.concat(parts));
}

export type ScenarioKind = 'valid-then-mutated' | 'mutated-connect' | 'random' | 'connect-then-random' | 'huge-length' | 'valid-session' | 'v5-properties' | 'v5-connect-properties';

/** The bytes one fuzzing connection sends. */
/** A scenario's bytes and how many packets (whole, mutated or random runs of bytes) went into them. */
function made(kind: ScenarioKind, parts: Buffer[]): { kind: ScenarioKind; bytes: Buffer; packets: number } {
  return { kind, bytes: Buffer.concat(parts), packets: parts.length };
}

export function scenario(rng: Rng, only?: readonly ScenarioKind[]): { kind: ScenarioKind; bytes: Buffer; packets: number } {
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
  const kinds: ScenarioKind[] = ['valid-then-mutated', 'valid-then-mutated', 'mutated-connect', 'random', 'connect-then-random', 'huge-length', 'valid-session', 'v5-properties', 'v5-properties', 'v5-connect-properties'];
  const kind = rng.pick(only ?? kinds);
  switch (kind) {
    case 'v5-properties': {
      // a valid v5 CONNECT, then packets whose property blocks are mutated field by field
      const packets = Array.from({ length: 1 + rng.int(8) }, () => propertyPacket(rng));
      return made(kind, [encode(connectPacket(rng, 5), 5) ?? Buffer.from([0x10, 0x00]), ...packets]);
    }
    case 'v5-connect-properties':
      return made(kind, [propertyConnect(rng), ...Array.from({ length: rng.int(3) }, () => propertyPacket(rng))]);
    case 'valid-then-mutated':
      return made(kind, [connect(), ...others(1 + rng.int(12), 0.5)]);
    case 'mutated-connect':
      return made(kind, [mutate(rng, connect()), ...others(rng.int(4), 0.3)]);
    case 'random':
      return made(kind, [rng.bytes(1 + rng.int(300))]);
    case 'connect-then-random':
      return made(kind, [connect(), rng.bytes(1 + rng.int(200))]);
    case 'huge-length':
      // claims a 256 MB packet, then sends a little of it
      return made(kind, [connect(), Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), rng.bytes(rng.int(100))]);
    default:
      return made(kind, [connect(), ...others(1 + rng.int(20), 0)]);
  }
}

export interface FuzzStats {
  connections: number;
  /** Packets sent: whole, mutated, or a run of random bytes counted as one. */
  packets: number;
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
  /** Only these kinds of scenario (default: all). */
  kinds?: readonly ScenarioKind[];
  /** Stop once this many packets were sent (with `until`: whichever comes first). */
  packets?: number;
}

/** Send one scenario over one connection, in random chunks; resolves when the socket is gone. */
function fuzzOne(opts: FuzzOptions, rng: Rng, stats: FuzzStats): Promise<void> {
  const { kind, bytes, packets } = scenario(rng, opts.kinds);
  stats.packets += packets;
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
  return { connections: 0, packets: 0, bytesSent: 0, closedByBroker: 0, byKind: {} };
}

/** Run many fuzzing connections with bounded concurrency; `stats` fills in as it goes. */
export async function runFuzz(opts: FuzzOptions, stats: FuzzStats = newFuzzStats()): Promise<FuzzStats> {
  const rng = new Rng(opts.seed);
  const more = (): boolean => {
    if (opts.packets !== undefined && stats.packets >= opts.packets) return false;
    return opts.until !== undefined ? Date.now() < opts.until : stats.connections < opts.connections;
  };
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
