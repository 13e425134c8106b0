import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Broker } from '../../src/broker/broker.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { createAuthService, type AuthService } from '../../src/auth/service.js';
import { hashPassword } from '../../src/auth/password-file.js';
import type { Connection, ConnectionEvents } from '../../src/transport/connection.js';
import { Rng, scenario } from '../../bench/fuzz-packets.js';
import { tmpDir } from '../e2e/auth-stack.js';

/**
 * The packet parser and the broker under fuzzing, without sockets: an in-memory transport
 * (a real implementation of the Connection interface) feeds mutated and random packets
 * straight into the broker, many thousands of sessions a second. Anything thrown surfaces
 * here with the input that caused it. Also checks that every byte the broker writes back
 * is a well-formed MQTT packet, and that no connection is left open.
 * FUZZ_SEED replays a run; FUZZ_SESSIONS sets its size.
 */

const SEED = Number(process.env['FUZZ_SEED'] ?? Math.floor(Math.random() * 0xffffffff));
const SESSIONS = Number(process.env['FUZZ_SESSIONS'] ?? 20_000);

class MemoryConnection implements Connection {
  readonly transport = 'tcp' as const;
  readonly remoteAddress: string;
  readonly out: Buffer[] = [];
  closed = false;
  paused = false;
  events: ConnectionEvents | undefined;

  constructor(n: number) {
    this.remoteAddress = `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}:1883`;
  }
  write(data: Uint8Array): boolean {
    if (!this.closed) this.out.push(Buffer.from(data));
    return true;
  }
  bufferedAmount(): number {
    return 0;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  close(): void {
    this.end();
  }
  destroy(): void {
    this.end();
  }
  private end(): void {
    if (this.closed) return;
    this.closed = true;
    // like a socket: the close event comes on a later turn
    queueMicrotask(() => this.events?.onClose());
  }
}

const varintSize = (n: number): number => (n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4);

/** Whether `bytes` is a sequence of complete, well-formed packets for protocol version 5 or 4. */
export function wellFormed(bytes: Buffer): boolean {
  if (bytes.length === 0) return true;
  for (const protocolVersion of [5, 4]) {
    const parser = mqttPacket.parser({ protocolVersion });
    let ok = true;
    let consumed = 0;
    parser.on('error', () => (ok = false));
    parser.on('packet', (p) => {
      // the parser sets length on every packet it emits; without it the bytes cannot be accounted for
      if (p.length === undefined) ok = false;
      else consumed += 1 + varintSize(p.length) + p.length;
    });
    parser.parse(bytes);
    if (ok && consumed === bytes.length) return true;
  }
  return false;
}

describe(`packet parser and broker under in-memory fuzzing (seed ${SEED})`, () => {
  let broker: Broker;
  let auth: AuthService;

  beforeAll(async () => {
    const dir = tmpDir('edb-memfuzz-');
    writeFileSync(join(dir, 'passwd'), `fuzz:${await hashPassword('fuzz', { log2N: 4 })}\n`);
    writeFileSync(join(dir, 'acl'), 'topic readwrite #\ntopic deny fuzz/secret\nuser fuzz\ntopic readwrite fuzz/#\npattern readwrite clients/%c/#\n');
    const config = testConfig({ passwordFile: join(dir, 'passwd'), aclFile: join(dir, 'acl'), maxPacketSize: 65536, loginFailureLimit: 1_000_000 });
    broker = new Broker(config, silentLogger());
    auth = createAuthService(broker, config, silentLogger(), { handleSighup: false, watchFiles: false });
  });

  afterAll(async () => {
    await broker.close(100);
    await auth.close();
  });

  it('checks well-formedness for real', () => {
    expect(wellFormed(Buffer.from([0x20, 0x02, 0x00, 0x00]))).toBe(true); // CONNACK
    expect(wellFormed(Buffer.from([0x20, 0x02, 0x00, 0x00, 0xd0, 0x00]))).toBe(true); // + PINGRESP
    expect(wellFormed(Buffer.from([0x20, 0x05, 0x00]))).toBe(false); // cut short
    expect(wellFormed(Buffer.from([0x20, 0x02, 0x00, 0x00, 0x20]))).toBe(false); // trailing byte
    expect(wellFormed(Buffer.from([0x00, 0x00]))).toBe(false); // reserved type
  });

  // Found by this fuzz run: mqtt-packet parses a PUBREL without a packet identifier (`62 00`)
  // as messageId -1, and answering it produced a truncated PUBCOMP (`70 02`). [MQTT-5-2.2.1-3]
  // the core now closes such a connection as a malformed packet.
  it('an ack without a packet identifier is refused as malformed, not answered with a truncated packet', async () => {
    for (const protocolVersion of [4, 5] as const) {
      const conn = new MemoryConnection(1);
      const events = broker.accept(conn);
      conn.events = events;
      events.onData(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion, clientId: `ack-${protocolVersion}`, clean: true, keepalive: 0 }));
      await new Promise((r) => setImmediate(r));
      events.onData(Buffer.from([0x62, 0x00])); // PUBREL, Remaining Length 0
      await new Promise((r) => setImmediate(r));
      const out = Buffer.concat(conn.out);
      const closedByBroker = conn.closed;
      if (!conn.closed) {
        conn.closed = true;
        events.onClose();
      }
      expect(wellFormed(out), out.toString('hex')).toBe(true);
      expect(closedByBroker).toBe(true);
    }
  });

  it('never throws, always answers with well-formed packets, and leaves no connection open', async () => {
    const master = new Rng(SEED);
    const totalBefore = broker.stats.connectionsTotal;
    let badOutput: { session: number; bytes: string } | undefined;
    for (let n = 0; n < SESSIONS; n++) {
      const rng = new Rng(master.next());
      const { bytes } = scenario(rng);
      const conn = new MemoryConnection(n);
      const events = broker.accept(conn);
      conn.events = events;
      try {
        for (let at = 0; at < bytes.length && !conn.closed; ) {
          const len = rng.chance(0.5) ? bytes.length - at : 1 + rng.int(bytes.length - at);
          events.onData(bytes.subarray(at, at + len));
          at += len;
          // let authentication (async) and paused reads move on now and then
          if (rng.chance(0.3)) await new Promise((r) => setImmediate(r));
        }
        await new Promise((r) => setImmediate(r));
        // the broker reads nothing past CONNECT until authentication answers (it pauses the
        // connection): give the verdict time, so the bytes behind CONNECT are parsed too
        for (let i = 0; i < 50 && conn.paused && !conn.closed; i++) await new Promise((r) => setTimeout(r, 1));
        if (!conn.closed) {
          conn.closed = true;
          events.onClose();
        }
      } catch (err) {
        throw new Error(`seed ${SEED}, session ${n}: ${(err as Error).stack}\ninput: ${bytes.toString('hex')}`);
      }
      const out = Buffer.concat(conn.out);
      if (!badOutput && !wellFormed(out)) badOutput = { session: n, bytes: out.toString('hex') };
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(badOutput, `seed ${SEED}: the broker wrote bytes that do not parse: ${JSON.stringify(badOutput)}`).toBeUndefined();
    expect(broker.connections.size).toBe(0);
    expect(broker.stats.clientsConnected).toBe(0);
    expect(broker.stats.connectionsTotal - totalBefore).toBe(SESSIONS);
    // the fuzzer got past CONNECT and into the protocol checks
    // (only sessions whose CONNECT was accepted get anything behind it parsed: about one in eight)
    expect(broker.stats.packetsReceived['publish'] ?? 0).toBeGreaterThan(SESSIONS / 20);
    expect(Object.values(broker.stats.protocolErrors).reduce((a, b) => a + b, 0)).toBeGreaterThan(SESSIONS / 10);
  }, 120_000);
});
