import type { Message, QoS } from '../mqtt/message.js';

/** Subscription options of one filter [MQTT-5-3.8.3.1]. */
export interface Subscription {
  /** The filter as the client sent it, `$share/...` prefix included. */
  readonly topic: string;
  readonly qos: QoS;
  readonly noLocal: boolean;
  readonly retainAsPublished: boolean;
  readonly retainHandling: number;
  readonly subscriptionIdentifier?: number;
  /** For `$share/{group}/{filter}`: the group and the inner filter. */
  readonly shareGroup?: string;
  readonly filter: string;
}

/** A message on its way to one session: shared Message, per-subscriber QoS and flags. */
export interface Delivery {
  readonly message: Message;
  readonly qos: QoS;
  readonly retain: boolean;
  readonly subscriptionIds: number[] | undefined;
}

/** A QoS 1/2 delivery that has a packet identifier and awaits its acknowledgement. */
export interface InflightEntry extends Delivery {
  readonly packetId: number;
  /** 'publish' awaits PUBACK/PUBREC; 'pubrel' awaits PUBCOMP. */
  state: 'publish' | 'pubrel';
}

/** A will waiting for its Will Delay Interval; its expiry counts from publication. */
export interface PendingWill {
  readonly message: Message;
  readonly expirySeconds: number | undefined;
  /** User name of the client that set it: the will is authorized as that client. */
  readonly username: string | undefined;
}

/** A running total shared by all of a broker's sessions: bytes of the messages they queue. */
export interface QueueAccount {
  bytes: number;
}

/** Shared by every session without subscriptions / inflight messages / QoS 2 ids: never written. */
const EMPTY_MAP: ReadonlyMap<never, never> = new Map<never, never>();
const EMPTY_SET: ReadonlySet<never> = new Set<never>();

/** What a queued delivery counts for in queueBytes and the account. */
function deliveryBytes(d: Delivery): number {
  return d.message.payload.length + d.message.topic.length;
}

/**
 * Per-client state that outlives a connection when the session is persistent:
 * subscriptions, the outbound queue, inflight QoS 1/2 messages, QoS 2 packet ids received.
 */
export class Session {
  // The Maps and the Set below are created on first write: an idle connection (most of them,
  // at 10,000 connections) would otherwise hold three empty hash tables, ~450 bytes. Until
  // then the getters return one shared empty instance, read-only by its type.
  private subs: Map<string, Subscription> | undefined;
  private inflightById: Map<number, InflightEntry> | undefined;
  private qos2Received: Set<number> | undefined;
  /** Messages not yet written to the client, oldest first. */
  readonly queue: Delivery[] = [];
  queueHead = 0;
  queueBytes = 0;
  private nextPacketId = 1;
  /** Seconds; 0 ends the session with the connection. */
  expiryInterval = 0;
  /** When an offline session expires (ms since epoch), or undefined while connected. */
  expiresAt: number | undefined;
  /** Will message scheduled after a disconnect (Will Delay Interval), and when it is due. */
  pendingWill: PendingWill | undefined;
  willDueAt: number | undefined;

  /** The broker's total over all its sessions (set by attach()). */
  private account: QueueAccount | undefined;

  constructor(readonly clientId: string) {}

  /** Subscriptions by filter as the client sent it (`$share/...` included). */
  get subscriptions(): ReadonlyMap<string, Subscription> {
    return this.subs ?? EMPTY_MAP;
  }

  /** QoS 1/2 deliveries in flight, by packet identifier. */
  get inflight(): ReadonlyMap<number, InflightEntry> {
    return this.inflightById ?? EMPTY_MAP;
  }

  /** [MQTT-5-4.3.3] QoS 2 packet ids received and answered with PUBREC, awaiting PUBREL. */
  get incomingQos2(): ReadonlySet<number> {
    return this.qos2Received ?? EMPTY_SET;
  }

  setSubscription(topic: string, sub: Subscription): void {
    (this.subs ??= new Map()).set(topic, sub);
  }

  /** Returns whether the filter was subscribed. */
  deleteSubscription(topic: string): boolean {
    return this.subs?.delete(topic) ?? false;
  }

  clearSubscriptions(): void {
    this.subs = undefined;
  }

  clearInflight(): void {
    this.inflightById = undefined;
  }

  /**
   * Restoring a session (snapshot, durable storage): the entry and the QoS 2 id are put back
   * as they were, bypassing addInflight / receivedQos2 and what subclasses do there.
   */
  restoreInflight(entry: InflightEntry): void {
    (this.inflightById ??= new Map()).set(entry.packetId, entry);
  }

  restoreQos2(packetId: number): void {
    (this.qos2Received ??= new Set()).add(packetId);
  }

  /** Counts this session's queue, now and from now on, in the broker's total. */
  attach(account: QueueAccount): void {
    if (this.account) this.account.bytes -= this.queueBytes;
    this.account = account;
    account.bytes += this.queueBytes;
  }

  private countBytes(delta: number): void {
    this.queueBytes += delta;
    if (this.account) this.account.bytes += delta;
  }

  get queued(): number {
    return this.queue.length - this.queueHead;
  }

  enqueue(delivery: Delivery): void {
    this.queue.push(delivery);
    this.countBytes(deliveryBytes(delivery));
  }

  peek(): Delivery | undefined {
    return this.queueHead < this.queue.length ? this.queue[this.queueHead] : undefined;
  }

  shift(): Delivery | undefined {
    if (this.queueHead >= this.queue.length) return undefined;
    const d = this.queue[this.queueHead]!;
    (this.queue as (Delivery | undefined)[])[this.queueHead] = undefined;
    this.queueHead++;
    this.countBytes(-deliveryBytes(d));
    // compact now and then so the array does not grow without bound
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    return d;
  }

  /** Drops the oldest QoS 0 message queued, if any; returns whether one was dropped. */
  dropOldestQos0(): boolean {
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const d = this.queue[i]!;
      if (d.qos === 0) {
        this.queue.splice(i, 1);
        this.countBytes(-deliveryBytes(d));
        return true;
      }
    }
    return false;
  }

  clearQueue(): void {
    this.countBytes(-this.queueBytes);
    this.queue.length = 0;
    this.queueHead = 0;
  }

  /** The in-flight entry for sending `d` with `packetId` (then given to addInflight). */
  inflightFor(d: Delivery, packetId: number): InflightEntry {
    return { message: d.message, qos: d.qos, retain: d.retain, subscriptionIds: d.subscriptionIds, packetId, state: 'publish' };
  }

  /** A QoS 1/2 delivery written with its packet identifier, awaiting its acknowledgement. */
  addInflight(entry: InflightEntry): void {
    (this.inflightById ??= new Map()).set(entry.packetId, entry);
  }

  /** The exchange for `packetId` ended (PUBACK, PUBCOMP, a failed PUBREC, or never sent). */
  removeInflight(packetId: number): boolean {
    return this.inflightById?.delete(packetId) ?? false;
  }

  /** [MQTT-5-4.3.3] PUBREC received: the entry now awaits PUBCOMP, and PUBREL is what a reconnect resends. */
  setPubrel(entry: InflightEntry): void {
    entry.state = 'pubrel';
  }

  /** [MQTT-5-4.3.3-8] a QoS 2 PUBLISH answered with PUBREC: its id is owned until PUBREL. */
  receivedQos2(packetId: number): void {
    (this.qos2Received ??= new Set()).add(packetId);
  }

  /** PUBREL for `packetId`: returns whether it was known. */
  releasedQos2(packetId: number): boolean {
    return this.qos2Received?.delete(packetId) ?? false;
  }

  /**
   * Durable storage: run `cb` once what this session changed so far (its record, its position
   * in the log, with the QoS 2 states and packet ids) is on disk, and return true. False: nothing
   * of this session is stored (memory mode, a session that ends with its connection): go on now.
   * PUBREC, PUBREL and PUBCOMP wait with it, so a crash never makes a QoS 2 message come twice.
   */
  afterStored(cb: (err?: Error) => void): boolean {
    void cb;
    return false;
  }

  /**
   * Durable storage: a QoS 2 PUBLISH about to be sent for the first time (`entry` just added
   * with addInflight) is written once its packet id is on disk: `write` is called then and true
   * returned. False: write it now.
   */
  holdFirstSend(entry: InflightEntry, write: (err?: Error) => void): boolean {
    void entry;
    void write;
    return false;
  }

  /**
   * Durable storage: a QoS 1/2 delivery for this session that the session will read back from
   * the message log instead of holding it in memory (its backlog is in the log: `full`, the
   * memory window is used up, or older messages for it are still there). Returns true when it
   * took the delivery; false: queue or send it as usual (memory mode, or not stored).
   */
  defer(d: Delivery, full: boolean): boolean {
    void d;
    void full;
    return false;
  }

  /** Durable storage on one node: this session's backlog past its memory window stays in the message log. */
  get backlogInLog(): boolean {
    return false;
  }

  /** Durable storage: the queue drained (Outbound.pump): read the next messages of a backlog kept in the log. */
  refill(): void {}

  /** Durable storage: the QoS 2 PUBLISH in flight with `packetId` is held by holdFirstSend (never sent yet: its id is not on disk). */
  firstSendHeld(packetId: number): boolean {
    void packetId;
    return false;
  }

  /** A packet identifier not in use by an inflight message [MQTT-5-2.2.1-3]. */
  allocatePacketId(): number {
    for (let tries = 0; tries < 65535; tries++) {
      const id = this.nextPacketId;
      this.nextPacketId = id === 65535 ? 1 : id + 1;
      if (this.inflightById?.has(id) !== true) return id;
    }
    throw new Error('no free packet identifier');
  }
}
