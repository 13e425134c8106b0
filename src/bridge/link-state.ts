/**
 * What a bridge keeps of its MQTT session with the remote across connections, so that QoS 2
 * is exactly once across a reconnect (the remote resumes the session: MQTT-4.4.0-1):
 * - PacketIds: the packet ids of one connection (MQTT.js's messageIdProvider), which starts
 *   each new connection with the ids of QoS 2 messages still in flight taken, so nothing new
 *   reuses one of them;
 * - InboundQos2Ids: the packet ids of the QoS 2 messages the remote sent us (delivered here
 *   at their PUBLISH), until its PUBREL (MQTT.js's incomingStore); one per bridge, not per
 *   connection, so a PUBLISH the remote sends again (DUP) after a reconnect is not delivered
 *   twice and its PUBREL is answered.
 * With durable storage both are stored too (bridge.ts linkState, the document
 * "bridge/<name>.qos2"), so that QoS 2 is exactly once across a crash of our broker.
 */
import { Readable } from 'node:stream';

/** MQTT.js's IMessageIdProvider over a table of the 65535 ids. */
export class PacketIds {
  private readonly used = new Uint8Array(65536);
  private next = 1;
  private last: number | null = null;

  /** `kept`: ids that stay taken across clear() (QoS 2 in flight on the session). */
  constructor(private readonly kept: () => Iterable<number>) {
    this.clear();
  }

  allocate(): number | null {
    for (let i = 0; i < 65535; i++) {
      const id = this.next;
      this.next = id === 65535 ? 1 : id + 1;
      if (this.used[id] === 0) {
        this.used[id] = 1;
        this.last = id;
        return id;
      }
    }
    return null;
  }
  getLastAllocated(): number | null {
    return this.last;
  }
  register(id: number): boolean {
    if (this.used[id] === 1) return false;
    this.used[id] = 1;
    return true;
  }
  deallocate(id: number): void {
    this.used[id] = 0;
  }
  /** MQTT.js clears at each CONNACK: every id is free again except the kept ones. */
  clear(): void {
    this.used.fill(0);
    for (const id of this.kept()) this.used[id] = 1;
  }
}

interface Packet {
  messageId?: number;
}

/** What InboundQos2Ids hands back at a PUBREL: the message itself went out at its PUBLISH. */
const RELEASED = Object.freeze({ cmd: 'publish', qos: 2, topic: '', payload: Buffer.alloc(0), retain: false, dup: false, released: true });

/**
 * MQTT.js's incomingStore for the QoS 2 messages the remote sends us, one per bridge (it
 * outlives the connection). The message is published here at its PUBLISH (MQTT's "method B"),
 * and its packet id is kept until the remote's PUBREL:
 * - put (a PUBLISH): a new id is delivered (`deliver`), and PUBREC (put's callback) waits
 *   for that delivery to be stored; an id already held is a resend (DUP): answered, not
 *   delivered again; a resend while the first is still being stored waits for it;
 * - get (a PUBREL): an id held answers with a marker packet, which the bridge's handleMessage
 *   recognises (`released`) and answers with PUBCOMP once the id is forgotten (`release`);
 *   an unknown id (already released) is answered with PUBCOMP at once by MQTT.js.
 * With durable storage the bridge stores the ids (bridge.ts, linkState), so this holds across
 * a crash of our broker too.
 */
export class InboundQos2Ids {
  /** Ids delivered here (or being delivered), until their PUBREL. */
  readonly received = new Set<number>();
  /** Ids being delivered: the PUBRECs waiting for the delivery to be stored. */
  private readonly delivering = new Map<number, (() => void)[]>();

  constructor(private readonly deliver: (packet: Packet, id: number, done: () => void) => void) {}

  get size(): number {
    return this.received.size;
  }
  /** Whether the id's delivery is still being stored. */
  isDelivering(id: number): boolean {
    return this.delivering.has(id);
  }
  put(packet: Packet, cb?: () => void): this {
    const id = packet.messageId!;
    const waiting = this.delivering.get(id);
    if (waiting) {
      if (cb) waiting.push(cb);
      return this;
    }
    if (this.received.has(id)) {
      cb?.();
      return this;
    }
    this.received.add(id);
    this.delivering.set(id, cb ? [cb] : []);
    this.deliver(packet, id, () => {
      const w = this.delivering.get(id) ?? [];
      this.delivering.delete(id);
      for (const f of w) f();
    });
    return this;
  }
  get(packet: Packet, cb: (err?: Error | null, packet?: Packet) => void): this {
    const id = packet.messageId!;
    if (this.received.has(id)) cb(null, { ...RELEASED, messageId: id } as Packet);
    else cb(new Error('missing packet'));
    return this;
  }
  del(packet: Packet, cb?: (err?: Error | null, packet?: Packet) => void): this {
    cb?.(null, packet); // the id goes at release(), after the PUBREL's handling
    return this;
  }
  createStream(): Readable {
    return Readable.from([]);
  }
  close(cb?: () => void): void {
    cb?.(); // kept for the next connection of the same session
  }
  /** The remote released the id (PUBREL). */
  release(id: number): void {
    this.received.delete(id);
  }
  /** Ids restored at start (durable storage). */
  restore(ids: Iterable<number>): void {
    for (const id of ids) this.received.add(id);
  }
  /** The remote did not resume the session: what it had not released is gone with it. */
  clear(): void {
    for (const id of this.received) if (!this.delivering.has(id)) this.received.delete(id);
  }
}
