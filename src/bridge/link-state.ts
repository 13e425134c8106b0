/**
 * What a bridge keeps of its MQTT session with the remote across connections, so that QoS 2
 * is exactly once across a reconnect (the remote resumes the session: MQTT-4.4.0-1):
 * - PacketIds: the packet ids of one connection (MQTT.js's messageIdProvider), which starts
 *   each new connection with the ids of QoS 2 messages still in flight taken, so nothing new
 *   reuses one of them;
 * - InboundQos2Store: the QoS 2 messages the remote sent us and we answered with PUBREC,
 *   awaiting its PUBREL (MQTT.js's incomingStore); one per bridge, not per connection, so a
 *   PUBREL the remote sends again after a reconnect finds its message (a new store per
 *   connection answered it with PUBCOMP and the message was lost).
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

/** MQTT.js's store interface over a Map that outlives the connection (close() keeps it). */
export class InboundQos2Store {
  private readonly packets = new Map<number, Packet>();

  get size(): number {
    return this.packets.size;
  }
  put(packet: Packet, cb?: () => void): this {
    this.packets.set(packet.messageId!, packet);
    cb?.();
    return this;
  }
  get(packet: Packet, cb: (err?: Error | null, packet?: Packet) => void): this {
    const p = this.packets.get(packet.messageId!);
    if (p) cb(null, p);
    else cb(new Error('missing packet'));
    return this;
  }
  del(packet: Packet, cb?: (err?: Error | null, packet?: Packet) => void): this {
    const p = this.packets.get(packet.messageId!);
    if (p) {
      this.packets.delete(packet.messageId!);
      cb?.(null, p);
    } else cb?.(new Error('missing packet'));
    return this;
  }
  createStream(): Readable {
    return Readable.from([...this.packets.values()]);
  }
  close(cb?: () => void): void {
    cb?.(); // kept for the next connection of the same session
  }
  /** The remote did not resume the session: what it had not released is gone with it. */
  clear(): void {
    this.packets.clear();
  }
}
