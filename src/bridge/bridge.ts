/**
 * One bridge: a client connection to a remote broker (MQTT.js), the topic lines that say
 * what goes out and what comes in, and the backlog of what the remote has not acknowledged.
 *
 * out: the service hands every local message matching an out line to `offer`; QoS 0 goes to
 *   a bounded memory buffer, QoS 1/2 to the backlog (stored in the durable log first, by the
 *   service). Sent in order, at most maxInflight unacknowledged; released on PUBACK/PUBCOMP.
 *   A lost connection rewinds: everything not acknowledged goes again, in order; except QoS 2
 *   in flight, which a resumed session completes with the same packet ids (exactly once).
 * in:  subscriptions on the remote (a persistent session unless cleanSession), published
 *   here with origin "bridge:<name>"; a QoS 1 message is acknowledged to the remote after it
 *   is stored (durable storage) or delivered here; QoS 2 awaiting PUBREL is kept across
 *   connections (link-state.ts).
 * No loops: v5 subscriptions carry No Local; with 3.1.1 a message we sent that comes back on
 *   our own subscription is recognised by its topic and payload and dropped ("echo"). What
 *   came in over a bridge never goes out over the same bridge (its origin). Rings of several
 *   brokers (v5): what a bridge carries gets the user property edb-bridge-path, the ids of the
 *   brokers it crossed bridges at; a message whose path holds the remote's id (learnt from its
 *   CONNACK) is not sent there, one coming in whose path holds ours is dropped (the service
 *   drops such a PUBLISH from another broker's bridge too), and past maxHops it goes no further.
 * Reconnects back off from reconnectMin, doubling up to reconnectMax, with +-20 % jitter.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { BridgeConfig, BridgeTopic } from '../config/bridges.js';
import { BRIDGE_PATH_PROPERTY, BROKER_ID_PROPERTY, type Message, type QoS, type UserProperties } from '../mqtt/message.js';
import { measurePublish, writePublishAt, type PublishFields, type PublishProperties } from '../mqtt/encode-publish.js';
import { matchLevels } from '../topics/match.js';
import { comparePositions } from '../storage/log.js';
import { Backlog, DROP_REASONS, SENT, WAITING, type BacklogEntry, type DropCounts } from './backlog.js';
import { InboundQos2Ids, PacketIds } from './link-state.js';

export type BridgeState = 'connecting' | 'connected' | 'disconnected' | 'stopped';

/** What a bridge needs of the broker it runs in (BridgeService provides it). */
export interface BridgeHost {
  readonly log: Logger;
  /** Publish a message that came in over a bridge; calls `done(reasonCode)` once it may be acknowledged. */
  publishIncoming(bridge: Bridge, message: Message, done: (reasonCode: number) => void): void;
  /** The backlog's head moved (the durable position should follow). */
  positionChanged(bridge: Bridge): void;
  /** MQTT.js, loaded on first use. */
  readonly mqtt: typeof import('mqtt');
  /** This broker's id in edb-bridge-path (loops over rings of bridges). */
  readonly brokerId: string;
  /** Durable storage: the link's QoS 2 state is stored (saveLinkState) before it is acted on. */
  readonly persistent: boolean;
  /** Store `bridge.linkState()`; `done` once it (and every write before it) is on disk. */
  saveLinkState(bridge: Bridge, done: (err?: Error) => void): void;
}

/**
 * The QoS 2 state of the link as stored (durable storage, document "bridge/<name>.qos2"):
 * out, each message in flight by packet id, its place in the log and its stage (1: PUBLISH
 * sent, 2: PUBREC received and PUBREL sent); in, the packet ids delivered here and not yet
 * released, and the inbound messages still being stored (`pending`: the service stores a
 * mark before them, from which the log is read again at start for ids not in `ids`).
 */
export interface LinkState {
  /** Stage 3: completed, past the stored position (not sent again). */
  out: [id: number, gen: number, offset: number, stage: 1 | 2 | 3][];
  in: number[];
  pending: Message[];
}

interface CompiledLine {
  topic: BridgeTopic;
  /** Local filter levels (localPrefix + pattern), for out. */
  localLevels: string[];
  localAll: boolean;
  /** Remote filter levels (remotePrefix + pattern), for in. */
  remoteLevels: string[];
}

/** Counters per bridge, for metrics, the API and `edb bridge show`. Monotonic. */
export interface BridgeCounters {
  messagesOut: number;
  messagesIn: number;
  bytesOut: number;
  bytesIn: number;
  reconnects: number;
  connects: number;
  /** Incoming messages the local ACL refused. */
  inNotAuthorized: number;
  /** Our own messages that came back from a 3.1.1 remote. */
  echoesDropped: number;
  /** v5: QoS 1 messages the remote answered with a refusal (>= 0x80); released, not sent again. */
  refusedByRemote: number;
  /** Loops: not sent, the remote had it already (its id in edb-bridge-path); or in, it had been here. */
  loops: number;
  /** Not sent: it had crossed maxHops bridges already. */
  hopLimited: number;
}

/**
 * The brokers a message crossed bridges at (user property edb-bridge-path), or undefined
 * when it has not crossed any (or came over a 3.1.1 link, which has no properties).
 */
export function bridgePath(message: Message): string[] | undefined {
  const up = message.properties?.userProperties;
  if (up === undefined) return undefined;
  return pathOf(up);
}

function pathOf(up: UserProperties): string[] | undefined {
  const v = up[BRIDGE_PATH_PROPERTY];
  if (v === undefined) return undefined;
  const text = typeof v === 'string' ? v : v.join(',');
  return text.split(',').filter((id) => id !== '');
}

/** The user properties with edb-bridge-path set to `path` (the others kept). */
function withPath(up: UserProperties | undefined, path: string[]): UserProperties {
  const out: UserProperties = {};
  if (up) for (const k of Object.keys(up)) if (k !== BRIDGE_PATH_PROPERTY) out[k] = up[k]!;
  out[BRIDGE_PATH_PROPERTY] = path.join(',');
  return out;
}

const ECHO_TTL_MS = 60_000;
/** In, QoS 1: PUBLISHes taken and awaiting their PUBACK (stored here) before MQTT.js is held. */
const IN_PENDING = 1000;
/** handleMessage's callback with this: MQTT.js goes on to the next packet and sends no PUBACK (ours goes once stored). */
const ACK_DEFERRED = new Error('acknowledged by the bridge once stored');
/** Bytes of the chunk outgoing packets are written into, and of a stretch written at once. */
const OUT_CHUNK = 256 * 1024;
const FLUSH_BYTES = 64 * 1024;

function compile(t: BridgeTopic): CompiledLine {
  const local = t.localPrefix + t.pattern;
  const remote = t.remotePrefix + t.pattern;
  return { topic: t, localLevels: local.split('/'), localAll: local === '#', remoteLevels: remote.split('/') };
}

export class Bridge {
  state: BridgeState = 'disconnected';
  /** Why the link is down (the last error), for the API and the log. */
  lastError: string | undefined;
  connectedSince: number | undefined;
  /** When the next connection attempt is due (ms since epoch), while disconnected. */
  nextAttemptAt: number | undefined;
  readonly counters: BridgeCounters = { messagesOut: 0, messagesIn: 0, bytesOut: 0, bytesIn: 0, reconnects: 0, connects: 0, inNotAuthorized: 0, echoesDropped: 0, refusedByRemote: 0, loops: 0, hopLimited: 0 };
  /** v5, an Edge Data Broker as the remote: its id (CONNACK user property edb-broker-id). */
  remoteId: string | undefined;
  /** QoS 1/2 towards the remote. */
  readonly backlog: Backlog;
  /** QoS 0 towards the remote (memory only). */
  readonly buffer: Backlog;
  private outLines: CompiledLine[] = [];
  private inLines: CompiledLine[] = [];
  private client: MqttClient | undefined;
  /** Bumped per connection: callbacks of an older connection are ignored. */
  private generation = 0;
  private attempts = 0;
  private timer: NodeJS.Timeout | undefined;
  private ageTimer: NodeJS.Timeout | undefined;
  private inflight = 0;
  private window = 1;
  private pumping = false;
  private pumpScheduled = false;
  /** The socket's buffer is full: wait for its drain before writing QoS 0. */
  private blocked = false;
  /** QoS 1 messages written, by packet id, until their PUBACK (one connection). */
  private readonly acks = new Map<number, BacklogEntry>();
  /**
   * QoS 2 messages in flight on the session with the remote, by packet id, in send order:
   * stage 1 PUBLISH sent (awaiting PUBREC), 2 PUBREL sent (awaiting PUBCOMP). Kept across
   * connections: when the remote resumes the session, stage 1 goes again as the same PUBLISH
   * (DUP) and stage 2 as PUBREL, never as a new message [MQTT-5-4.4.0-1].
   */
  private readonly qos2 = new Map<number, { entry: BacklogEntry; stage: 1 | 2 }>();
  /** QoS 2 from the remote: ids delivered here until its PUBREL, across connections (link-state.ts). */
  private readonly inStore: InboundQos2Ids;
  /** Inbound QoS 2 messages being stored here, by packet id (for linkState's mark). */
  private readonly inPending = new Map<number, Message>();
  /** Out: entries taken for sending, held until the QoS 2 ids among them are stored (durable storage). */
  private held: BacklogEntry[] | undefined;
  /**
   * QoS 2 messages completed (PUBCOMP) at or past the backlog's head: stored as done, so that
   * after a crash a message completed out of order, past an older one still in flight, is
   * not sent again (the log is read back from the head).
   */
  private doneQos2: BacklogEntry[] = [];
  private saveWaiters: ((err?: Error) => void)[] = [];
  private saveScheduled = false;
  private ticks = 0;
  private readonly echoes = new Map<string, { n: number; at: number }>();
  private out: Buffer | undefined;
  /**
   * In, QoS 1, this connection: the PUBLISHes taken and not yet acknowledged, in the order they
   * came; `ready` once stored (or delivered) here. PUBACKs go from the head, in that order.
   */
  private inAcks: { id: number; ready: boolean }[] = [];
  private inAckHead = 0;
  /** MQTT.js waits for this before it takes the next packet (too many awaiting their PUBACK). */
  private resumeIn: (() => void) | undefined;
  /** The properties of a message that has none: only edb-bridge-path, this broker. */
  private pathOnly: PublishProperties | undefined;
  private outStart = 0;
  private outPos = 0;
  private readonly log: Logger;

  constructor(
    public config: BridgeConfig,
    private readonly host: BridgeHost,
  ) {
    this.log = host.log.child({ bridge: config.name });
    this.inStore = new InboundQos2Ids((packet, id, done) => this.incomingQos2(packet as never, id, done));
    const bounds = { maxMessages: config.maxOutgoingBufferedMessages, maxBytes: config.maxOutgoingBufferedBytes, maxAgeMs: config.maxOutgoingBufferedAgeMs };
    this.backlog = new Backlog({ ...bounds });
    this.buffer = new Backlog({ ...bounds });
    this.setLines(config.topics);
  }

  get name(): string {
    return this.config.name;
  }
  /** In, QoS 1: messages taken from the remote and not yet acknowledged (being stored here). */
  get inAwaitingAck(): number {
    return this.inAcks.length - this.inAckHead;
  }
  /** The origin of messages that came in over this bridge. */
  get origin(): string {
    return `bridge:${this.config.name}`;
  }
  get dropped(): DropCounts {
    const out = { ...this.backlog.dropped };
    for (const r of DROP_REASONS) out[r] += this.buffer.dropped[r];
    return out;
  }

  /**
   * The durable log dropped generation `gen` (retention or its size cap): what this bridge
   * held there and had not sent is gone; counted, logged, and the bridge goes on with the
   * next stored message. Returns how many.
   */
  storedDropped(gen: number, reason: 'retention' | 'size_cap'): number {
    const n = this.backlog.dropStoredThrough(gen, reason);
    if (n > 0) {
      const why = reason === 'retention' ? 'EDB_STORAGE_RETENTION' : 'EDB_STORAGE_MAX_BYTES';
      this.log.warn({ generation: gen, reason, messages: n }, `bridge ${this.name}: ${n} messages of its backlog dropped: the log dropped generation ${gen} (${why}) before the remote had them`);
    }
    return n;
  }

  private setLines(topics: BridgeTopic[]): void {
    const lines = topics.map(compile);
    this.outLines = lines.filter((l) => l.topic.direction !== 'in');
    this.inLines = lines.filter((l) => l.topic.direction !== 'out');
  }

  /** A changed configuration: the backlog stays; the connection is made again if it matters. */
  reconfigure(next: BridgeConfig): void {
    const old = this.config;
    this.config = next;
    this.setLines(next.topics);
    const bounds = { maxMessages: next.maxOutgoingBufferedMessages, maxBytes: next.maxOutgoingBufferedBytes, maxAgeMs: next.maxOutgoingBufferedAgeMs };
    this.backlog.bounds = { ...bounds };
    this.buffer.bounds = { ...bounds };
    this.backlog.enforce(Date.now());
    this.buffer.enforce(Date.now());
    const { topics: _a, maxOutgoingBufferedMessages: _b, maxOutgoingBufferedBytes: _c, maxOutgoingBufferedAgeMs: _d, ...rest } = next;
    const { topics: _e, maxOutgoingBufferedMessages: _f, maxOutgoingBufferedBytes: _g, maxOutgoingBufferedAgeMs: _h, ...restOld } = old;
    const sameLink = JSON.stringify(rest) === JSON.stringify(restOld);
    const sameIn = JSON.stringify(old.topics.filter((t) => t.direction !== 'out')) === JSON.stringify(next.topics.filter((t) => t.direction !== 'out'));
    if (!sameLink || !sameIn) {
      this.log.info(`bridge ${this.name}: settings changed; connecting again`);
      this.restart();
    }
  }

  /**
   * The out line a local message goes by, and the QoS towards the remote, or undefined.
   * `levels` is the topic split on '/', done once by the caller for all bridges.
   */
  route(message: Message, levels: string[] | undefined): { line: BridgeTopic; qos: 0 | 1 | 2 } | undefined {
    if (message.origin === this.origin) return undefined; // [no loops] it came in over this bridge
    if (message.properties?.userProperties !== undefined) {
      const path = bridgePath(message);
      if (path !== undefined) {
        // [no loops] a ring of bridges: the remote has had it; or it went round too often
        if (this.remoteId !== undefined && path.includes(this.remoteId)) {
          this.counters.loops++;
          return undefined;
        }
        if (path.length >= (this.config.maxHops ?? 8)) {
          this.counters.hopLimited++;
          return undefined;
        }
      }
    }
    for (const l of this.outLines) {
      if (l.localAll ? message.topic.charCodeAt(0) !== 36 /* $ */ : matchLevels(l.localLevels, levels ?? message.topic.split('/'))) {
        return { line: l.topic, qos: Math.min(message.qos, l.topic.qos) as 0 | 1 | 2 };
      }
    }
    return undefined;
  }

  get wantsLevels(): boolean {
    return this.outLines.some((l) => !l.localAll);
  }

  /** Take a local message for the remote (route() said which line and QoS). */
  offer(message: Message, line: BridgeTopic, qos: 0 | 1 | 2, pos: BacklogEntry['pos'], storedAt = Date.now()): void {
    const remoteTopic = line.remotePrefix + message.topic.slice(line.localPrefix.length);
    const entry: BacklogEntry = { message, pos, qos, remoteTopic, bytes: message.payload.length + remoteTopic.length, storedAt, state: 0 };
    const queue = qos === 0 ? this.buffer : this.backlog;
    if (queue.push(entry) > 0 && qos > 0) this.host.positionChanged(this);
    if (this.state === 'connected') this.pump();
  }

  // ------------------------------------------------------------ the connection

  start(): void {
    if (this.state === 'stopped') return;
    this.connect();
    this.ageTimer ??= setInterval(() => {
      const n = this.backlog.enforce(Date.now()) + this.buffer.enforce(Date.now());
      if (n > 0) this.host.positionChanged(this);
      // the stored mark follows the log, so that a start reads little of it again
      if (++this.ticks % 10 === 0 && this.host.persistent && this.inLines.some((l) => l.topic.qos === 2)) this.requestSave();
    }, 1000);
    this.ageTimer.unref();
  }

  private setState(state: BridgeState, detail?: string, retryInMs?: number): void {
    if (this.state === state) return;
    this.state = state;
    const msg = `bridge ${this.name}: ${state}${detail ? ` (${detail})` : ''}${retryInMs !== undefined ? `; next attempt in ${retryInMs} ms` : ''}`;
    // one line per state change
    if (state === 'disconnected') this.log.warn({ state, endpoint: this.config.url, err: detail, retryInMs }, msg);
    else this.log.info({ state, endpoint: this.config.url }, msg);
  }

  private options(): IClientOptions {
    const c = this.config;
    const url = new URL(c.url);
    const o: IClientOptions = {
      protocol: url.protocol === 'mqtts:' ? 'mqtts' : 'mqtt',
      host: url.hostname,
      port: Number(url.port),
      protocolVersion: c.protocolVersion,
      clientId: c.clientId,
      keepalive: c.keepAlive,
      clean: c.cleanSession,
      reconnectPeriod: 0, // our own back-off
      // keep alive pings on a fixed beat, not rescheduled (a timer cleared and set) at every ack
      reschedulePings: false,
      connectTimeout: 10_000,
      queueQoSZero: false,
      resubscribe: false,
      messageIdProvider: new PacketIds(() => this.qos2.keys()),
      incomingStore: this.inStore as unknown as IClientOptions['incomingStore'],
    };
    if (c.protocolVersion === 5) {
      // our id, and the remote's asked for (an Edge Data Broker answers it): loops over rings
      o.properties = { receiveMaximum: 65535, ...(c.cleanSession ? {} : { sessionExpiryInterval: c.sessionExpiry }), userProperties: { [BROKER_ID_PROPERTY]: this.host.brokerId } };
    }
    if (c.username !== undefined) o.username = c.username;
    if (c.password !== undefined) o.password = c.password;
    if (url.protocol === 'mqtts:') {
      o.rejectUnauthorized = c.tls.verify;
      if (c.tls.ca) o.ca = readFileSync(c.tls.ca);
      if (c.tls.cert) o.cert = readFileSync(c.tls.cert);
      if (c.tls.key) o.key = readFileSync(c.tls.key);
      o.servername = c.tls.serverName ?? url.hostname;
    }
    return o;
  }

  private connect(): void {
    this.timer = undefined;
    this.nextAttemptAt = undefined;
    const gen = ++this.generation;
    let client: MqttClient;
    try {
      client = this.host.mqtt.connect(this.options());
    } catch (err) {
      // unreadable certificate files and the like: the broker keeps running, the bridge retries
      this.lastError = (err as Error).message;
      this.retryLater(this.lastError);
      return;
    }
    this.client = client;
    this.setState('connecting');
    client.on('connect', (connack) => {
      if (gen !== this.generation) return;
      const id = connack.properties?.userProperties?.[BROKER_ID_PROPERTY];
      this.remoteId = typeof id === 'string' ? id : Array.isArray(id) ? id[0] : undefined;
      this.onConnected(client, connack.sessionPresent, connack.properties?.receiveMaximum);
    });
    // every incoming QoS 0/1 message passes here before MQTT.js answers it: QoS 1 is
    // acknowledged (PUBACK) only when the callback runs, which is once it is stored or
    // delivered here. QoS 2 is delivered at its PUBLISH (InboundQos2Ids, PUBREC once stored);
    // here comes its PUBREL, completed (PUBCOMP) once the id is forgotten (stored so)
    client.handleMessage = (packet, callback) => {
      if (gen !== this.generation) return callback();
      const p = packet as { qos?: number; messageId?: number; released?: boolean };
      if (p.released && p.messageId !== undefined) {
        this.inStore.release(p.messageId);
        return this.requestSave(() => callback());
      }
      if (p.qos === 1 && p.messageId !== undefined) return this.incomingQos1(client, gen, packet as never, p.messageId, callback);
      this.incoming(packet as never, () => callback());
    };
    client.on('packetreceive', (packet) => {
      if (gen === this.generation) this.onPacket(packet as never);
    });
    client.on('error', (err) => {
      if (gen !== this.generation) return;
      this.lastError = err.message;
    });
    client.on('close', () => {
      if (gen !== this.generation) return;
      this.onClosed(client);
    });
    client.on('offline', () => undefined);
  }

  private onConnected(client: MqttClient, sessionPresent: boolean, receiveMaximum: number | undefined): void {
    this.inAcks = [];
    this.inAckHead = 0;
    this.resumeIn = undefined;
    this.attempts = 0;
    this.lastError = undefined;
    this.connectedSince = Date.now();
    this.counters.connects++;
    this.window = Math.max(1, Math.min(this.config.maxInflight, receiveMaximum ?? 65535));
    this.setState('connected');
    this.acks.clear();
    this.blocked = false;
    const resumed = sessionPresent && !this.config.cleanSession;
    if (!resumed) {
      // a new session on the remote: what it held of ours and of its own is gone with the old one
      this.inStore.clear();
      for (const q of this.qos2.values()) {
        // PUBREC'd: the remote took it over (it answered for it) and must not get it again
        if (q.stage === 2) {
          this.settle(q.entry);
          this.completedQos2(q.entry);
        } else q.entry.state = WAITING;
      }
      this.qos2.clear();
      client.messageIdProvider.clear(); // before the SUBSCRIBE takes an id
      this.requestSave();
    }
    const subs = this.inLines.map((l) => l.topic);
    if (subs.length > 0 && (!sessionPresent || this.config.cleanSession)) {
      const v5 = this.config.protocolVersion === 5;
      const map: Record<string, { qos: QoS; nl?: boolean; rap?: boolean }> = {};
      for (const t of subs) map[t.remotePrefix + t.pattern] = v5 ? { qos: t.qos, nl: true, rap: true } : { qos: t.qos };
      client.subscribe(map, (err, granted) => {
        if (err) {
          this.log.error({ err: err.message }, `bridge ${this.name}: subscribing on the remote failed`);
          return;
        }
        for (const g of granted ?? []) if (g.qos >= 0x80) this.log.error({ filter: g.topic, reasonCode: g.qos }, `bridge ${this.name}: the remote refused the subscription to ${g.topic}`);
      });
    }
    this.backlog.rewind(this.keptQos2());
    this.inflight = this.qos2.size;
    this.held = undefined;
    if (this.qos2.size === 0 || !this.host.persistent) return this.resumeQos2(client);
    // what changed above is stored before anything goes out
    const gen = this.generation;
    this.held = [];
    this.requestSave(() => {
      if (gen !== this.generation) return;
      this.held = undefined;
      this.resumeQos2(client);
    });
  }

  /** The session resumed: QoS 2 in flight completes with the same packet ids, first. */
  private resumeQos2(client: MqttClient): void {
    for (const [id, q] of this.qos2) {
      if (q.stage === 1) this.encode(client, q.entry, id, true);
      else this.writeRaw(client, pubrel(id));
    }
    this.flush(client);
    this.pump();
  }

  private keptQos2(): Set<BacklogEntry> | undefined {
    return this.qos2.size > 0 ? new Set([...this.qos2.values()].map((q) => q.entry)) : undefined;
  }

  private onClosed(client: MqttClient): void {
    client.removeAllListeners('message');
    client.end(true);
    this.client = undefined;
    this.connectedSince = undefined;
    this.backlog.rewind(this.keptQos2());
    this.inflight = 0;
    this.acks.clear();
    this.blocked = false;
    this.held = undefined;
    if (this.state === 'stopped') return;
    this.retryLater(this.lastError ?? 'connection closed');
  }

  /**
   * Down: the next attempt after the back-off, from reconnectMin doubling per failed attempt up
   * to reconnectMax, +-20 % jitter; a connection that got its CONNACK starts it again at
   * reconnectMin. The state line in the log says when (`retryInMs`).
   */
  private retryLater(why: string): void {
    if (this.state === 'stopped' || this.timer) return;
    const c = this.config;
    const base = Math.min(c.reconnectMaxMs, c.reconnectMinMs * 2 ** Math.min(this.attempts, 30));
    this.attempts++;
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.nextAttemptAt = Date.now() + delay;
    this.setState('disconnected', why, delay);
    this.counters.reconnects++;
    this.timer = setTimeout(() => this.connect(), delay);
    this.timer.unref();
  }

  /** Drop the connection and make it again now (settings changed). */
  private restart(): void {
    if (this.state === 'stopped') return;
    const client = this.client;
    this.generation++;
    if (client) {
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.end(true);
    }
    this.client = undefined;
    this.backlog.rewind(this.keptQos2());
    this.inflight = 0;
    this.acks.clear();
    this.blocked = false;
    this.held = undefined;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.attempts = 0;
    this.connect();
  }

  /** Stop for good (removed, or the broker stops). */
  async stop(): Promise<void> {
    this.setState('stopped');
    this.generation++;
    if (this.timer) clearTimeout(this.timer);
    if (this.ageTimer) clearInterval(this.ageTimer);
    this.timer = this.ageTimer = undefined;
    const client = this.client;
    this.client = undefined;
    if (client) {
      client.removeAllListeners();
      client.on('error', () => undefined);
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          client.end(true);
          resolve();
        }, 1000);
        client.end(false, {}, () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  // ------------------------------------------------------------ out

  private pump(): void {
    const client = this.client;
    if (!client || this.state !== 'connected' || this.pumping) return;
    this.pumping = true;
    try {
      // QoS 1/2 first (the backlog is what must not be lost), within the window; while QoS 2
      // ids are being stored, nothing more is taken (order per topic)
      let held: BacklogEntry[] | undefined;
      while (this.inflight < this.window && !this.held) {
        const e = this.backlog.nextToSend();
        if (!e) break;
        this.inflight++;
        if (held) held.push(e);
        else if (e.qos === 2 && this.host.persistent) held = [e]; // its packet id is stored before it goes
        else this.encode(client, e);
      }
      if (held) this.holdForSave(client, held);
      // QoS 0 while the socket takes it
      while (!this.blocked) {
        const e = this.buffer.nextToSend();
        if (!e) break;
        this.buffer.done(e);
        this.encode(client, e);
        if (this.outPos - this.outStart >= FLUSH_BYTES) this.flush(client);
      }
    } finally {
      this.flush(client);
      this.pumping = false;
    }
  }

  /**
   * Durable storage: QoS 2 messages get their packet ids now, and go (with everything taken
   * after them) once the ids are stored, so that after a crash they are sent again with the
   * same ids (DUP), never as new messages.
   */
  private holdForSave(client: MqttClient, held: BacklogEntry[]): void {
    const ids = new Map<BacklogEntry, number>();
    for (const e of held) {
      if (e.qos !== 2) continue;
      const id = client.messageIdProvider.allocate() ?? 1;
      this.qos2.set(id, { entry: e, stage: 1 });
      ids.set(e, id);
    }
    this.held = held;
    const gen = this.generation;
    this.requestSave(() => {
      if (gen !== this.generation || this.held !== held) return; // the link went: rewound, resent from the map
      this.held = undefined;
      for (const e of held) {
        const id = ids.get(e);
        if (id !== undefined) this.encode(client, e, id);
        else this.encode(client, e);
      }
      this.flush(client);
      this.pump();
    });
  }

  private completedQos2(e: BacklogEntry): void {
    if (!this.host.persistent) return;
    if (e.pos) this.doneQos2.push(e);
    this.requestSave();
  }

  /** Store the link state at the end of this turn (one write for a burst); `cb` once it is on disk. */
  private requestSave(cb?: (err?: Error) => void): void {
    if (!this.host.persistent) return cb?.();
    if (cb) this.saveWaiters.push(cb);
    if (this.saveScheduled) return;
    this.saveScheduled = true;
    setImmediate(() => {
      this.saveScheduled = false;
      const waiters = this.saveWaiters;
      this.saveWaiters = [];
      this.host.saveLinkState(this, (err) => {
        if (err) this.log.error({ err: err.message }, `bridge ${this.name}: storing its QoS 2 state failed`);
        for (const w of waiters) w(err);
      });
    });
  }

  /** What is stored of the link (durable storage): see LinkState. */
  linkState(): LinkState {
    const out: LinkState['out'] = [];
    for (const [id, q] of this.qos2) if (q.entry.pos) out.push([id, q.entry.pos.gen, q.entry.pos.offset, q.stage]);
    const head = this.backlog.headPosition;
    this.doneQos2 = head ? this.doneQos2.filter((e) => comparePositions(e.pos!, head) > 0) : [];
    for (const e of this.doneQos2) out.push([0, e.pos!.gen, e.pos!.offset, 3]);
    return { out, in: [...this.inStore.received].filter((id) => !this.inPending.has(id)), pending: [...this.inPending.values()] };
  }

  /**
   * At start (durable storage), after the backlog was read back: the QoS 2 messages in flight
   * (found in the backlog by their place in the log; one not there was completed) and the
   * inbound ids not yet released.
   */
  restoreLinkState(out: LinkState['out'], inIds: Iterable<number>): number {
    let n = 0;
    if (out.length > 0) {
      const byPos = new Map<string, BacklogEntry>();
      for (const e of this.backlog.pending()) if (e.pos) byPos.set(`${e.pos.gen}:${e.pos.offset}`, e);
      for (const [id, gen, offset, stage] of out) {
        const e = byPos.get(`${gen}:${offset}`);
        if (!e || e.qos !== 2) continue;
        if (stage === 3) {
          this.backlog.done(e);
          continue;
        }
        e.state = SENT;
        this.qos2.set(id, { entry: e, stage });
        n++;
      }
    }
    this.inStore.restore(inIds);
    return n;
  }

  /**
   * QoS 0, 1 and 2 go out on our own encoder, in one write per pump (MQTT.js's per-message
   * publish was the cost of the drain: bench/RESULTS.md); PUBACK, PUBREC and PUBCOMP are taken
   * from MQTT.js's 'packetreceive' event by packet id (ids from the connection's PacketIds,
   * which MQTT.js's SUBSCRIBE uses too, so they never collide; it ignores acks it did not ask
   * for). `resendId`: a QoS 2 message in flight sent again on a resumed session (DUP).
   */
  private encode(client: MqttClient, e: BacklogEntry, resendId?: number, dup = false): void {
    const m = e.message;
    const v5 = this.config.protocolVersion === 5;
    const f: PublishFields = { topic: e.remoteTopic, payload: m.payload, qos: e.qos, retain: m.retain, dup };
    if (resendId !== undefined) f.messageId = resendId;
    else if (e.qos > 0) {
      const id = client.messageIdProvider.allocate() ?? 1;
      f.messageId = id;
      if (e.qos === 1) this.acks.set(id, e);
      else this.qos2.set(id, { entry: e, stage: 1 });
    }
    if (v5) {
      const props = this.publishProperties(m);
      if (props) f.properties = props;
    } else if (this.inLines.length > 0 && !dup) this.rememberEcho(e.remoteTopic, m.payload);
    this.counters.messagesOut++;
    this.counters.bytesOut += m.payload.length;
    const version = v5 ? 5 : 4;
    const n = measurePublish(f, version);
    if (!this.out || this.outPos + n > this.out.length) {
      this.flush(client); // what the chunk holds goes first
      this.room(n);
      measurePublish(f, version); // again: writePublishAt uses what the last measurePublish found
    }
    this.outPos = writePublishAt(this.out!, this.outPos, f, version);
  }

  /**
   * Packets are written one after another into a chunk of OUT_CHUNK bytes and handed to the
   * socket a stretch at a time (no Buffer per packet, no copy to join them); a written stretch
   * is never touched again, the rest of the chunk takes the next packets.
   */
  private room(n: number): void {
    if (this.out && this.outPos + n <= this.out.length) return;
    // (the caller flushed what the old chunk held)
    this.out = Buffer.allocUnsafe(Math.max(OUT_CHUNK, n));
    this.outPos = this.outStart = 0;
  }

  private writeRaw(client: MqttClient, packet: Buffer): void {
    if (!this.out || this.outPos + packet.length > this.out.length) {
      this.flush(client);
      this.room(packet.length);
    }
    packet.copy(this.out!, this.outPos);
    this.outPos += packet.length;
  }

  private flush(client: MqttClient): void {
    if (!this.out || this.outPos === this.outStart) return;
    const data = this.out.subarray(this.outStart, this.outPos);
    this.outStart = this.outPos;
    const stream = client.stream;
    if (!stream.write(data) && !this.blocked) {
      // the socket's buffer is full: QoS 0 waits for the drain (QoS 1/2 are held by the window)
      this.blocked = true;
      const gen = this.generation;
      stream.once('drain', () => {
        this.blocked = false;
        if (gen === this.generation) this.pump();
      });
    }
  }

  /**
   * PUBACK for a QoS 1 message we wrote; PUBREC (answered with PUBREL) and PUBCOMP for QoS 2.
   * MQTT.js ignores these acks: it did not send the messages.
   */
  private onPacket(packet: { cmd: string; messageId?: number; reasonCode?: number }): void {
    const id = packet.messageId;
    if (id === undefined) return;
    // v5: a refusal (>= 0x80, say not authorized there) releases it too: sending it again would not help
    const refused = packet.reasonCode !== undefined && packet.reasonCode >= 0x80;
    if (packet.cmd === 'puback') {
      const e = this.acks.get(id);
      if (!e) return;
      this.acks.delete(id);
      this.client?.messageIdProvider.deallocate(id);
      if (refused) this.counters.refusedByRemote++;
      this.released(e);
    } else if (packet.cmd === 'pubrec') {
      const q = this.qos2.get(id);
      if (!q) return;
      if (refused) {
        this.qos2.delete(id);
        this.client?.messageIdProvider.deallocate(id);
        this.counters.refusedByRemote++;
        this.released(q.entry);
        this.completedQos2(q.entry);
        return;
      }
      q.stage = 2; // a PUBREC again (after our DUP PUBLISH) is answered again
      const client = this.client;
      if (!this.host.persistent) return void client?.stream.write(pubrel(id));
      // stage 2 is stored first: after a crash the message is not sent again, only its PUBREL
      const gen = this.generation;
      this.requestSave(() => {
        if (gen === this.generation && this.qos2.get(id) === q) client?.stream.write(pubrel(id));
      });
    } else if (packet.cmd === 'pubcomp') {
      const q = this.qos2.get(id);
      if (!q || q.stage !== 2) return;
      this.qos2.delete(id);
      this.client?.messageIdProvider.deallocate(id);
      this.released(q.entry);
      this.completedQos2(q.entry);
    }
  }

  private released(e: BacklogEntry): void {
    this.inflight--;
    this.settle(e);
    if (!this.pumping) this.schedulePump();
  }

  /** Done with for good: out of the backlog, the position follows. */
  private settle(e: BacklogEntry): void {
    const head = this.backlog.headPosition;
    this.backlog.done(e);
    if (this.backlog.headPosition !== head) this.host.positionChanged(this);
  }

  /** Acks arrive in bursts: one pump after the burst, not one per ack. */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** v5: the message's properties, and edb-bridge-path with this broker's id last. */
  private publishProperties(m: Message): PublishProperties {
    const p = m.properties;
    if (!p && m.expiresAt === undefined) return (this.pathOnly ??= { userProperties: { [BRIDGE_PATH_PROPERTY]: this.host.brokerId } });
    const props: PublishProperties = {};
    if (p?.payloadFormatIndicator !== undefined) props.payloadFormatIndicator = p.payloadFormatIndicator;
    if (p?.contentType !== undefined) props.contentType = p.contentType;
    if (p?.responseTopic !== undefined) props.responseTopic = p.responseTopic;
    if (p?.correlationData !== undefined) props.correlationData = p.correlationData;
    const path = (p?.userProperties !== undefined ? pathOf(p.userProperties) : undefined) ?? [];
    if (path[path.length - 1] !== this.host.brokerId) path.push(this.host.brokerId);
    props.userProperties = withPath(p?.userProperties, path);
    if (m.expiresAt !== undefined) props.messageExpiryInterval = Math.max(1, Math.ceil((m.expiresAt - Date.now()) / 1000));
    return props;
  }

  // ------------------------------------------------------------ in

  private echoKey(topic: string, payload: Buffer): string {
    return `${topic}\u0000${payload.length}\u0000${createHash('sha1').update(payload).digest('base64')}`;
  }

  private rememberEcho(topic: string, payload: Buffer): void {
    const now = Date.now();
    const key = this.echoKey(topic, payload);
    const known = this.echoes.get(key);
    if (known) {
      known.n++;
      known.at = now;
    } else this.echoes.set(key, { n: 1, at: now });
    if (this.echoes.size > 100_000) for (const [k, v] of this.echoes) if (now - v.at > ECHO_TTL_MS || this.echoes.size > 100_000) this.echoes.delete(k);
  }

  /** 3.1.1 has no No Local: is this our own message coming back? */
  private isEcho(topic: string, payload: Buffer): boolean {
    if (this.config.protocolVersion === 5 || this.echoes.size === 0) return false;
    const key = this.echoKey(topic, payload);
    const known = this.echoes.get(key);
    if (!known || Date.now() - known.at > ECHO_TTL_MS) return false;
    if (--known.n === 0) this.echoes.delete(key);
    return true;
  }

  /**
   * A QoS 1 PUBLISH from the remote. MQTT.js would send its PUBACK when handleMessage's
   * callback runs, and take the next packet only after that: one commit per message. Here the
   * message is handed on, MQTT.js is let on to the next packet at once (the callback with an
   * error: MQTT.js then sends no PUBACK), and our PUBACK goes once the message is stored or
   * delivered here, in the order the PUBLISHes came [MQTT-4.6.0-2]; so the messages that arrive
   * while a commit runs share the next one. At most IN_PENDING wait for their PUBACK, then
   * MQTT.js is held (the remote's window bounds it too). A lost connection forgets the pending
   * ones: not acknowledged, the remote sends them again.
   */
  private incomingQos1(client: MqttClient, gen: number, packet: Parameters<Bridge['incoming']>[0], id: number, callback: (err?: Error) => void): void {
    const slot = { id, ready: false };
    this.inAcks.push(slot);
    this.incoming(packet, () => {
      if (gen !== this.generation) return;
      slot.ready = true;
      this.ackIncoming(client);
    });
    if (gen !== this.generation) return callback();
    if (this.inAcks.length - this.inAckHead < IN_PENDING) callback(ACK_DEFERRED);
    else this.resumeIn = () => callback(ACK_DEFERRED);
  }

  private ackIncoming(client: MqttClient): void {
    const acks = this.inAcks;
    let n = 0;
    while (this.inAckHead < acks.length && acks[this.inAckHead]!.ready) {
      this.writeRaw(client, puback(acks[this.inAckHead++]!.id));
      n++;
    }
    if (n === 0) return;
    this.flush(client);
    if (this.inAckHead === acks.length) {
      this.inAcks = [];
      this.inAckHead = 0;
    } else if (this.inAckHead > 4096) {
      this.inAcks = acks.slice(this.inAckHead);
      this.inAckHead = 0;
    }
    const resume = this.resumeIn;
    if (resume && this.inAcks.length - this.inAckHead < IN_PENDING / 2) {
      this.resumeIn = undefined;
      resume();
    }
  }

  /**
   * A QoS 2 PUBLISH from the remote with a new packet id (InboundQos2Ids): published here with
   * the id in its log record (durable storage), then the id is stored; PUBREC after both.
   */
  private incomingQos2(packet: Parameters<Bridge['incoming']>[0], id: number, done: () => void): void {
    this.incoming(
      packet,
      () => {
        this.inPending.delete(id); // stored (or not for us): the id goes into the stored state
        this.requestSave(() => done());
      },
      id,
    );
  }

  private incoming(packet: { topic: string; payload: Buffer | string; qos: QoS; retain: boolean; properties?: Record<string, unknown> }, done: (code: number) => void, qos2Id?: number): void {
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    if (this.isEcho(packet.topic, payload)) {
      this.counters.echoesDropped++;
      return done(0);
    }
    const levels = packet.topic.split('/');
    const line = this.inLines.find((l) => matchLevels(l.remoteLevels, levels));
    if (!line || !packet.topic.startsWith(line.topic.remotePrefix)) return done(0); // not ours (a stale subscription of the persistent session)
    const topic = line.topic.localPrefix + packet.topic.slice(line.topic.remotePrefix.length);
    const up = (packet.properties as { userProperties?: UserProperties } | undefined)?.userProperties;
    const path = (up !== undefined ? pathOf(up) : undefined) ?? [];
    if (path.includes(this.host.brokerId)) {
      this.counters.loops++; // [no loops] a ring: it has been here
      return done(0);
    }
    // the brokers it crossed bridges at: the remote (an Edge Data Broker says its id), then this one
    if (this.remoteId !== undefined && path[path.length - 1] !== this.remoteId) path.push(this.remoteId);
    path.push(this.host.brokerId);
    const message: Message = { topic, payload, qos: packet.qos, retain: packet.retain, origin: this.origin };
    if (qos2Id !== undefined) {
      message.inboundQos2Id = qos2Id;
      this.inPending.set(qos2Id, message);
    }
    const p = packet.properties as
      | { payloadFormatIndicator?: boolean; contentType?: string; responseTopic?: string; correlationData?: Buffer; userProperties?: Message['properties'] extends infer P ? P extends { userProperties?: infer U } ? U : never : never; messageExpiryInterval?: number }
      | undefined;
    if (p) {
      const props: NonNullable<Message['properties']> = {};
      if (p.payloadFormatIndicator !== undefined) props.payloadFormatIndicator = p.payloadFormatIndicator;
      if (p.contentType !== undefined) props.contentType = p.contentType;
      if (p.responseTopic !== undefined) props.responseTopic = p.responseTopic;
      if (p.correlationData !== undefined) props.correlationData = p.correlationData;
      if (p.messageExpiryInterval !== undefined) message.expiresAt = Date.now() + p.messageExpiryInterval * 1000;
      props.userProperties = withPath(p.userProperties, path);
      message.properties = props;
    } else message.properties = { userProperties: withPath(undefined, path) };
    this.counters.messagesIn++;
    this.counters.bytesIn += payload.length;
    this.host.publishIncoming(this, message, done);
  }
}

/** PUBACK, success (v3.1.1 and v5: a Remaining Length of 2 means reason code 0). */
function puback(id: number): Buffer {
  return Buffer.from([0x40, 2, id >> 8, id & 0xff]);
}

/** PUBREL (v3.1.1 and v5: a Remaining Length of 2 means reason code 0). */
function pubrel(id: number): Buffer {
  return Buffer.from([0x62, 2, id >> 8, id & 0xff]);
}
