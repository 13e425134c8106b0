import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { Connection } from '../transport/connection.js';
import type { Message } from '../mqtt/message.js';
import type { Delivery, InflightEntry, Session } from '../session/session.js';
import { RC } from '../mqtt/reason-codes.js';
import { encodePublish, measurePublish, writePublishAt, type PublishFields, type PublishProperties } from '../mqtt/encode-publish.js';
import type { BrokerStats } from './api.js';
import type { ClientInfo } from './hooks.js';
import type { ClientState, CloseCause } from './lifecycle.js';

/** First byte of PUBACK, PUBREC, PUBREL (flags 0010 [MQTT-5-3.6.1-1]) and PUBCOMP. */
const ACK_FIRST_BYTE: Partial<Record<string, number>> = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 };

const NO_PUBLISHERS: ReadonlySet<HeldPublisher> = new Set<HeldPublisher>();

/** The fields of the PUBLISH being encoded (Outbound.fields). */
const SCRATCH: PublishFields = { topic: '', payload: Buffer.alloc(0), qos: 0, retain: false, dup: false, messageId: undefined, properties: undefined };

/** What the outbound side needs of the broker: settings, counters, read access. */
export interface DeliveryContext {
  readonly config: Config;
  readonly log: Logger;
  readonly stats: BrokerStats;
  countPacket(cmd: string, inbound: boolean): void;
  countDrop(reason: string, client?: ClientInfo): void;
  countQueueFullDisconnect(): void;
  /** The authorizeDelivery hooks (read access), checked again for queued messages. */
  mayDeliver(client: ClientInfo, message: Message): boolean;
  /** Encoding `message` for `client` failed: take it out of service (counted, logged once, retained copy removed). */
  quarantine(message: Message, err: unknown, client: ClientInfo): void;
}

/** The connection an Outbound writes for. */
export interface OutboundOwner extends ClientInfo {
  readonly state: ClientState;
  readonly session: Session | undefined;
  disconnect(reasonCode: number, cause: CloseCause, reasonString?: string): void;
}

/** A publisher whose reading can be held while a subscriber it feeds is backed up. */
export interface HeldPublisher {
  holdFor(subscriber: Outbound): void;
  release(): void;
}

/**
 * The outbound side of one connection: packets written to the transport, deliveries through
 * the inflight window and the bounded queue, topic aliases towards the client, and the
 * publishers held back while this client's queue is above its high-water mark.
 */
export class Outbound {
  /** The transport accepted our last write without backpressure. */
  writable = true;
  /** QoS 1/2 messages we may have in flight to this client: its Receive Maximum, capped by maxInflight. */
  private sendWindow: number;
  /** The client's Maximum Packet Size (v5 CONNECT). */
  maxPacketSize = 268435460;
  private topicAliasMax = 0;
  /** Topic aliases we announced (v5), created when first used: most clients never use them. */
  private aliases: Map<string, number> | undefined;
  /** Publishers paused because this client's queue passed the high-water mark (created on first hold). */
  private held: Set<HeldPublisher> | undefined;
  /** Since when the queue has stayed above the high-water mark (0 = not). */
  congestedSince = 0;
  /** The queue stayed full past the stall bound: publishers are not held back for it. */
  stalled = false;
  /**
   * Durable: QoS 2 PUBLISHes waiting for their packet ids to be on disk (Session.holdFirstSend).
   * Meanwhile QoS 0/1 deliveries queue behind them, so the order of deliveries is kept.
   */
  private holding = 0;

  constructor(
    private readonly core: DeliveryContext,
    private readonly owner: OutboundOwner,
    private readonly conn: Connection,
  ) {
    this.sendWindow = core.config.maxInflight;
  }

  /** The limits the client announced in CONNECT (v5; 3.1.1 clients have the defaults). */
  setClientLimits(receiveMaximum: number, maximumPacketSize: number, topicAliasMaximum: number): void {
    this.sendWindow = Math.min(receiveMaximum, this.core.config.maxInflight);
    this.maxPacketSize = maximumPacketSize;
    this.topicAliasMax = topicAliasMaximum;
  }

  // ---------------------------------------------------------------- deliveries

  /** Deliver now if the window and the socket allow, else queue (bounded). */
  deliver(d: Delivery, publisher: HeldPublisher | undefined): void {
    const session = this.owner.session!;
    const cfg = this.core.config;
    const full = session.queued >= cfg.maxQueuedMessages || session.queueBytes >= cfg.maxQueuedBytes;
    // durable: a persistent session whose queue is full, or whose backlog is in the message log,
    // reads the message from the log when it gets there (nothing dropped, order kept)
    if (d.qos > 0 && session.defer(d, full)) return;
    const canSend = this.writable && session.queued === 0 && (d.qos === 0 || session.inflight.size < this.sendWindow) && (this.holding === 0 || d.qos === 2);
    if (canSend) {
      this.sendDelivery(d);
      return;
    }
    if (full) {
      // full: a QoS 0 message is the first to go; QoS 1/2 replace the oldest QoS 0 if there is one
      if (d.qos === 0 || !session.dropOldestQos0()) {
        if (d.qos > 0 && cfg.queueFullPolicy === 'disconnect') {
          // The client is too slow for what it subscribed to: it goes offline rather than lose
          // the message; a persistent session keeps it (and the queue) for the reconnect.
          session.enqueue(d);
          this.core.log.warn({ clientId: this.owner.clientId, queued: session.queued }, 'outbound queue full: disconnecting the client (EDB_QUEUE_FULL_POLICY=disconnect)');
          this.core.countQueueFullDisconnect();
          this.owner.disconnect(RC.QUOTA_EXCEEDED, 'error', 'outbound queue full');
          return;
        }
        this.core.countDrop('queue_full', this.owner);
        return;
      }
      this.core.countDrop('queue_full', this.owner);
    }
    session.enqueue(d);
    if (publisher && publisher !== (this.owner as unknown) && !this.stalled && this.aboveHighWater(session)) {
      if (this.congestedSince === 0) this.congestedSince = Date.now();
      publisher.holdFor(this);
    }
  }

  /**
   * Retained messages for a new subscription are all sent [MQTT-5-3.3.1-9], never dropped for the
   * queue bound: the retained store already holds them and the queue only references them. The
   * queue drains as the socket does; meanwhile publishers feeding this client are held back.
   */
  deliverRetained(d: Delivery): void {
    const session = this.owner.session!;
    if (this.writable && session.queued === 0 && (d.qos === 0 || session.inflight.size < this.sendWindow) && (this.holding === 0 || d.qos === 2)) this.sendDelivery(d);
    else session.enqueue(d);
  }

  /** [MQTT-5-4.4.0-1] on reconnect, resend unacknowledged PUBLISH (with DUP) and PUBREL. */
  resendInflight(): void {
    const session = this.owner.session!;
    for (const entry of session.inflight.values()) {
      if (entry.state === 'pubrel') this.writePacket({ cmd: 'pubrel', messageId: entry.packetId });
      else if (session.firstSendHeld(entry.packetId) && session.holdFirstSend(entry, () => this.sendHeld(session, entry))) {
        // durable: a QoS 2 PUBLISH never sent, its packet id not on disk yet: this connection
        // sends it once the id is (resent now, a crash before then would make it come twice)
        this.holding++;
      } else this.writePublish(entry, entry.packetId, true);
    }
  }

  private highWater(): number {
    return Math.max(1, this.core.config.maxQueuedMessages >> 1);
  }

  /**
   * Half the queue bound is used, in messages or in bytes: publishers feeding this client are
   * held back. Bytes count too, or large payloads fill maxQueuedBytes (and are dropped) long
   * before the message high-water mark is reached.
   */
  private aboveHighWater(session: Session): boolean {
    return session.queued >= this.highWater() || session.queueBytes >= this.core.config.maxQueuedBytes >> 1;
  }

  /** Drained to a quarter of either bound: held publishers may resume. */
  private belowLowWater(session: Session): boolean {
    return session.queued === 0 || (session.queued < this.highWater() >> 1 && session.queueBytes < this.core.config.maxQueuedBytes >> 2);
  }

  /** Send queued messages while the socket and the inflight window allow. */
  pump(): void {
    const session = this.owner.session;
    if (!session || this.owner.state !== 'open') return;
    const now = Date.now();
    while (this.writable) {
      const d = session.peek();
      if (!d) break;
      if (d.qos > 0 && session.inflight.size >= this.sendWindow) break;
      if (this.holding > 0 && d.qos !== 2) break;
      session.shift();
      if (d.message.expiresAt !== undefined && d.message.expiresAt <= now) {
        this.core.countDrop('expired');
        continue;
      }
      // a queued message may have been routed while this client was offline (no read check
      // then) or before an ACL change: read access is checked on the way out
      if (!this.core.mayDeliver(this.owner, d.message)) {
        this.core.countDrop('not_authorized');
        continue;
      }
      this.sendDelivery(d);
    }
    session.refill();
    if (this.belowLowWater(session)) {
      this.congestedSince = 0;
      this.stalled = false;
      this.releasePublishers();
    }
  }

  private sendDelivery(d: Delivery): void {
    if (d.message.quarantined) return this.core.countDrop('quarantined', this.owner);
    if (d.qos === 0) {
      this.writePublish(d, 0, false);
      return;
    }
    const session = this.owner.session!;
    const entry = session.inflightFor(d, session.allocatePacketId());
    session.addInflight(entry);
    // durable: a QoS 2 PUBLISH goes out once its packet id is on disk, so that a restart resends
    // it with the same id (the client then knows it) rather than as a new message
    if (entry.qos === 2 && this.holdFirst(session, entry)) return;
    this.writePublish(entry, entry.packetId, false);
  }

  /** Out of sendDelivery, which then creates no closure (a context per delivery otherwise). */
  private holdFirst(session: Session, entry: InflightEntry): boolean {
    if (!session.holdFirstSend(entry, () => this.sendHeld(session, entry))) return false;
    this.holding++;
    return true;
  }

  private sendHeld(session: Session, entry: InflightEntry): void {
    this.holding--;
    // gone meanwhile: a reconnect resends it (resendInflight); acknowledged or dropped: nothing to do
    if (this.owner.state === 'open' && this.owner.session === session && session.inflight.get(entry.packetId) === entry && entry.state === 'publish') this.writePublish(entry, entry.packetId, false);
    if (this.holding === 0) this.pump();
  }

  private writePublish(d: Delivery, packetId: number, dup: boolean): void {
    // [MQTT-5-3.1.2-25] never send a packet over the client's Maximum Packet Size, and nothing once closed
    if (this.owner.state === 'closed') return;
    const m = d.message;
    const version = this.owner.protocolVersion;
    const v5 = version === 5;
    // A QoS 0 delivery with nothing per subscriber, of a message route() found several
    // subscribers for (it gave the message its `wire` cache): encoded once for all of them.
    if (m.wire !== undefined && d.qos === 0 && m.expiresAt === undefined && (!v5 || (this.topicAliasMax === 0 && !d.subscriptionIds))) {
      const slot = (v5 ? 2 : 0) + (d.retain ? 1 : 0);
      let bytes = m.wire[slot];
      if (bytes === undefined) {
        try {
          bytes = m.wire[slot] = encodePublish(this.fields(d, 0, false, v5 ? m.properties : undefined), version);
        } catch (err) {
          return this.encodeFailed(d, packetId, err);
        }
      }
      if (bytes.length > this.maxPacketSize) return this.core.countDrop('too_large');
      this.countPublish(bytes.length);
      if (!this.conn.write(bytes)) this.writable = false;
      return;
    }
    // Otherwise encoded for this delivery, in place in the connection's output where the
    // transport stages it (TCP, TLS): no buffer of its own per packet.
    let f: PublishFields;
    let size: number;
    let newAlias = false;
    try {
      f = v5 ? this.fieldsV5(d, packetId, dup) : this.fields(d, packetId, dup, undefined);
      newAlias = f.properties?.topicAlias !== undefined && f.topic !== '';
      size = measurePublish(f, version);
    } catch (err) {
      if (newAlias) this.aliases?.delete(m.topic); // the alias was never announced
      return this.encodeFailed(d, packetId, err);
    }
    if (size > this.maxPacketSize) {
      if (newAlias) this.aliases?.delete(m.topic); // never announced either
      if (d.qos > 0) this.owner.session!.removeInflight(packetId);
      return this.core.countDrop('too_large');
    }
    const conn = this.conn;
    const staged = conn.reserve?.(size);
    try {
      if (staged !== undefined) writePublishAt(staged, conn.reservedAt!, f, version);
      else {
        const bytes = Buffer.allocUnsafe(size);
        writePublishAt(bytes, 0, f, version);
        this.countPublish(size);
        if (!conn.write(bytes)) this.writable = false;
        return;
      }
    } catch (err) {
      if (newAlias) this.aliases?.delete(m.topic);
      return this.encodeFailed(d, packetId, err);
    }
    this.countPublish(size);
    if (!conn.commit!(size)) this.writable = false;
  }

  /**
   * A stored message this broker cannot encode (which the inbound checks should have made
   * impossible): it is taken out of service, and this receiver stays connected.
   */
  private encodeFailed(d: Delivery, packetId: number, err: unknown): void {
    if (d.qos > 0) this.owner.session!.removeInflight(packetId);
    this.core.quarantine(d.message, err, this.owner);
    this.core.countDrop('quarantined', this.owner);
  }

  /** The PUBLISH fields of a delivery, in one object reused for every packet (encoding is synchronous). */
  private fields(d: Delivery, packetId: number, dup: boolean, properties: PublishProperties | undefined): PublishFields {
    const f = SCRATCH;
    const m = d.message;
    f.topic = m.topic;
    f.payload = m.payload;
    f.qos = d.qos;
    f.retain = d.retain;
    f.dup = dup;
    f.messageId = d.qos > 0 ? packetId : undefined;
    f.properties = properties;
    return f;
  }

  /** v5: the message's properties plus what is per delivery (remaining expiry, subscription ids, topic alias). */
  private fieldsV5(d: Delivery, packetId: number, dup: boolean): PublishFields {
    const m = d.message;
    const perDelivery = m.expiresAt !== undefined || (d.subscriptionIds !== undefined && d.subscriptionIds.length > 0) || this.topicAliasMax > 0;
    if (!perDelivery) return this.fields(d, packetId, dup, m.properties);
    const properties: PublishProperties = m.properties ? { ...m.properties } : {};
    if (m.expiresAt !== undefined) {
      // [MQTT-5-3.3.2-6] the remaining lifetime
      properties.messageExpiryInterval = Math.max(0, Math.ceil((m.expiresAt - Date.now()) / 1000));
    }
    if (d.subscriptionIds && d.subscriptionIds.length > 0) {
      properties.subscriptionIdentifier = d.subscriptionIds.length === 1 ? d.subscriptionIds[0]! : d.subscriptionIds;
    }
    const f = this.fields(d, packetId, dup, properties);
    if (this.topicAliasMax > 0) {
      const aliases = (this.aliases ??= new Map());
      const alias = aliases.get(m.topic);
      if (alias !== undefined) {
        f.topic = '';
        properties.topicAlias = alias;
      } else if (aliases.size < this.topicAliasMax) {
        const next = aliases.size + 1;
        aliases.set(m.topic, next);
        properties.topicAlias = next;
      }
    }
    return f;
  }

  private countPublish(size: number): void {
    const stats = this.core.stats;
    stats.publishSent++;
    stats.messagesSent++;
    stats.bytesSent += size;
    this.core.countPacket('publish', false);
  }

  // ---------------------------------------------------------------- packets

  writePacket(packet: Packet, version?: 3 | 4 | 5): void {
    // A successful ack without properties is four fixed bytes in every version
    // ([MQTT-5-3.4.2-1]: v5 may omit reason code 0 and the properties)
    const ackType = ACK_FIRST_BYTE[packet.cmd];
    if (ackType !== undefined) {
      const ack = packet as { messageId?: number; reasonCode?: number; properties?: object };
      if (!ack.reasonCode && !ack.properties && ack.messageId !== undefined) {
        if (this.owner.state === 'closed') return;
        const conn = this.conn;
        const staged = conn.reserve?.(4);
        const bytes = staged ?? Buffer.allocUnsafe(4);
        const at = staged !== undefined ? conn.reservedAt! : 0;
        bytes[at] = ackType;
        bytes[at + 1] = 2;
        bytes[at + 2] = ack.messageId >> 8;
        bytes[at + 3] = ack.messageId & 0xff;
        this.core.countPacket(packet.cmd, false);
        this.core.stats.bytesSent += 4;
        if (!(staged !== undefined ? conn.commit!(4) : conn.write(bytes))) this.writable = false;
        return;
      }
    }
    let bytes: Buffer | undefined;
    try {
      bytes = mqttPacket.generate(packet, { protocolVersion: version ?? this.owner.protocolVersion });
    } catch (err) {
      this.core.log.error({ clientId: this.owner.clientId, err: (err as Error).message, cmd: packet.cmd }, 'cannot encode packet');
      return;
    }
    if (bytes.length > this.maxPacketSize && packet.cmd !== 'connack') {
      // [MQTT-5-3.1.2-24] drop reason strings rather than exceed the client's limit
      const p = packet as { properties?: { reasonString?: string } };
      if (p.properties?.reasonString !== undefined) {
        delete p.properties.reasonString;
        return this.writePacket(packet, version);
      }
      return;
    }
    this.rawWrite(bytes, packet.cmd);
  }

  private rawWrite(bytes: Buffer, cmd: string): void {
    if (this.owner.state === 'closed' && cmd !== 'disconnect' && cmd !== 'connack') return;
    this.core.countPacket(cmd, false);
    this.core.stats.bytesSent += bytes.length;
    if (!this.conn.write(bytes)) this.writable = false;
  }

  // ---------------------------------------------------------------- hold / release

  /** Publishers held back for this client. */
  get blockedPublishers(): ReadonlySet<HeldPublisher> {
    return this.held ?? NO_PUBLISHERS;
  }

  /** Records `p` as held for this client; false when it already was. */
  holdPublisher(p: HeldPublisher): boolean {
    const held = (this.held ??= new Set());
    if (held.has(p)) return false;
    held.add(p);
    return true;
  }

  releasePublishers(): void {
    const held = this.held;
    if (held === undefined || held.size === 0) return;
    for (const p of held) p.release();
    held.clear();
  }

  /** Called by the housekeeping sweep: a subscriber congested too long stops holding publishers. */
  checkStall(now: number, stallMs: number): void {
    if (this.congestedSince !== 0 && !this.stalled && now - this.congestedSince >= stallMs) {
      this.stalled = true;
      this.core.log.warn({ clientId: this.owner.clientId, queued: this.owner.session?.queued }, 'subscriber stalled: no longer holding publishers back, QoS 0 may be dropped');
      this.releasePublishers();
    }
  }
}
