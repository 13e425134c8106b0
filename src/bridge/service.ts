/**
 * The bridges of one broker: an onPublish hook that hands local messages to the bridges
 * whose out lines match (QoS 1/2 stored once in the durable log first), the publishing of
 * what comes in (through the ACL as the bridge's local identity), each bridge's position in
 * the log, and adding, changing and removing bridges while the broker runs.
 *
 * Durable storage: a bridge's position (the oldest message its remote has not acknowledged)
 * is the storage document "bridge/<name>.position"; at start the backlog is read back from
 * the log from there. Memory storage: the backlog is in memory and in the backup (section
 * "bridges"), saved on a graceful stop.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { BrokerHooks, ClientInfo } from '../broker/hooks.js';
import type { BridgeConfig } from '../config/bridges.js';
import type { Message } from '../mqtt/message.js';
import { RC } from '../mqtt/reason-codes.js';
import type { SnapshotSection } from '../persistence/snapshot.js';
import { DurableStorage } from '../storage/durable.js';
import { comparePositions, type DroppedGeneration, type LogPosition } from '../storage/log.js';
import { decodeMessage, encodeMessage } from '../storage/record.js';
import type { BrokerStorage } from '../storage/store.js';
import type { DropCounts } from './backlog.js';
import { Bridge, bridgePath, type BridgeHost, type BridgeState, type LinkState } from './bridge.js';

/** What the bridges need of the broker. */
export interface BridgeBroker {
  readonly log: Logger;
  addHooks(hooks: BrokerHooks, options?: { first?: boolean }): void;
  /** This broker's id among bridged brokers (answered in CONNACK to a bridge that asks). */
  brokerId: string | undefined;
  publish(message: Message): void;
  authorizePublish(client: ClientInfo, message: Message): number;
  /** Durable: writes handed to storage so far, and a callback once they are on disk. */
  readonly durable: { readonly writes: number; onDurable(cb: (err?: Error) => void): void } | undefined;
}

/** Durable storage as the bridges use it: store a message once (shared with persistent sessions). */
export interface BridgeLog {
  readonly storage: BrokerStorage;
  /** Store once; false when storage is full. */
  store(message: Message): boolean;
  readonly positions: { get(m: Message): LogPosition | undefined; set(m: Message, pos: LogPosition): unknown };
}

/** One row of GET /api/bridges and `edb bridge show`. */
export interface BridgeSummary {
  name: string;
  endpoint: string;
  state: BridgeState;
  source: 'config' | 'api';
  protocolVersion: 4 | 5;
  topics: string[];
  /** Messages held for the remote: QoS 1/2 backlog plus QoS 0 buffer. */
  bufferSize: number;
  bufferMax: number;
  bufferDropped: number;
  dropped: DropCounts;
  backlogMessages: number;
  backlogBytes: number;
  qos0Buffered: number;
  /** Age of the oldest message held, ms (0 when none). */
  oldestMs: number;
  sentPerSecond: number;
  receivedPerSecond: number;
  messagesOut: number;
  messagesIn: number;
  reconnects: number;
  /** Loops: not sent (the remote had it: edb-bridge-path), or in and dropped (it had been here). */
  loops: number;
  /** Not sent: it had crossed maxHops bridges. */
  hopLimited: number;
  /** v5: the remote's broker id, when it is an Edge Data Broker. */
  remoteId?: string;
  /** In, QoS 1: messages taken from the remote and not yet acknowledged to it (being stored here). */
  inAwaitingAck: number;
  connectedSince?: number;
  lastError?: string;
  /** Down: ms until the next connection attempt (the back-off). */
  nextAttemptInMs?: number;
}

const positionKey = (name: string): string => `bridge/${name}.position`;
/** The link's QoS 2 state (bridge.ts LinkState), with the log position the inbound ids are complete before. */
const linkKey = (name: string): string => `bridge/${name}.qos2`;
interface StoredLink {
  out: LinkState['out'];
  in: number[];
  mark: LogPosition;
}
const API_BRIDGES = 'bridges.api';

/** A bridge name that does not exist, or exists already: the API's 404 / 409. */
export class BridgeNotFoundError extends Error {
  readonly code = 'EDB_BRIDGE_NOT_FOUND';
}
export class BridgeExistsError extends Error {
  readonly code = 'EDB_BRIDGE_EXISTS';
}

interface Rate {
  lastOut: number;
  lastIn: number;
  out: number;
  in: number;
}

export class BridgeService {
  private readonly bridges = new Map<string, Bridge>();
  private readonly sources = new Map<string, 'config' | 'api'>();
  private readonly dirty = new Set<Bridge>();
  private flushTimer: NodeJS.Timeout | undefined;
  private rateTimer: NodeJS.Timeout | undefined;
  private readonly rates = new Map<string, Rate>();
  private mqtt: typeof import('mqtt') | undefined;
  private started = false;
  /** Restored from a backup (memory storage) for bridges by name, until they exist. */
  private readonly restoredBacklog = new Map<string, { message: Message; storedAt: number }[]>();
  private needLevels = false;
  private readonly host: BridgeHost;
  private readonly log: Logger;
  /**
   * This broker among bridged brokers, in edb-bridge-path: its host name and a random part,
   * new at every start (a data folder copied to another broker does not take it along).
   */
  readonly brokerId = `${hostname().split('.')[0]!.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 32) || 'edb'}-${randomBytes(3).toString('hex')}`;
  /** PUBLISHes from clients (other brokers' bridges) that had been here already: dropped. */
  returned = 0;
  private returnedLogged = false;

  constructor(
    private readonly broker: BridgeBroker,
    configs: readonly BridgeConfig[],
    private readonly durableLog: BridgeLog | undefined,
    private readonly storage: BrokerStorage,
  ) {
    this.log = broker.log.child({ part: 'bridge' });
    const self = this;
    this.host = {
      log: this.log,
      publishIncoming: (bridge, message, done) => this.publishIncoming(bridge, message, done),
      positionChanged: (bridge) => this.markDirty(bridge),
      persistent: durableLog !== undefined,
      brokerId: this.brokerId,
      saveLinkState: (bridge, done) => this.saveLinkState(bridge, done),
      get mqtt() {
        return self.mqtt!;
      },
    };
    broker.brokerId = this.brokerId;
    // first of all hooks: a message that went round a ring of bridges back here is dropped
    // before the rules, the state store, the cluster or a subscriber see it again
    broker.addHooks({ onPublish: (message, client) => this.returnedHere(message, client) }, { first: true });
    broker.addHooks({ onPublish: (message) => this.onPublish(message) });
    // retention and the size cap are hard limits of the log: what a bridge held in a dropped
    // generation is counted as dropped for it, and it goes on from the next stored message
    if (durableLog && storage instanceof DurableStorage) storage.messages.onDropped((d) => this.generationDropped(d));
    const api = this.storedApiBridges();
    for (const c of configs) if (!api.some((a) => a.name === c.name)) this.create(c, 'config');
    for (const c of api) this.create(c, 'api');
  }

  private storedApiBridges(): BridgeConfig[] {
    const doc = this.storage.document(API_BRIDGES);
    if (!doc) return [];
    try {
      return JSON.parse(doc.toString('utf8')) as BridgeConfig[];
    } catch {
      this.log.error('bridges: the stored list of bridges made through the API is unreadable; ignored');
      return [];
    }
  }

  private saveApiBridges(): void {
    const list = [...this.bridges.values()].filter((b) => this.sources.get(b.name) === 'api').map((b) => b.config);
    this.storage.setDocument(API_BRIDGES, list.length ? Buffer.from(JSON.stringify(list)) : undefined);
  }

  private create(config: BridgeConfig, source: 'config' | 'api'): Bridge {
    const bridge = new Bridge(config, this.host);
    this.bridges.set(config.name, bridge);
    this.sources.set(config.name, source);
    this.needLevels = [...this.bridges.values()].some((b) => b.wantsLevels);
    this.loadBacklog(bridge);
    if (this.started) bridge.start();
    return bridge;
  }

  /** Durable: what the log holds for this bridge from its position; memory: what a backup brought. */
  private loadBacklog(bridge: Bridge): void {
    const restored = this.restoredBacklog.get(bridge.name);
    if (restored) {
      this.restoredBacklog.delete(bridge.name);
      for (const { message, storedAt } of restored) this.offer(bridge, message, storedAt);
    }
    if (!this.durableLog) return;
    const doc = this.storage.document(positionKey(bridge.name));
    if (!doc) {
      this.markDirty(bridge); // a new bridge: its position is the tail, from now
      return;
    }
    let from: LogPosition;
    try {
      from = JSON.parse(doc.toString('utf8')) as LogPosition;
    } catch {
      this.log.error({ bridge: bridge.name }, `bridge ${bridge.name}: its stored position is unreadable; starting from the end of the log`);
      this.markDirty(bridge);
      return;
    }
    if (this.storage instanceof DurableStorage) {
      const head = this.storage.messages.head;
      if (comparePositions(from, head) < 0) {
        // dropped before this bridge's new position was saved (a crash right after a drop):
        // counted by the process that dropped it; here it goes on from the oldest kept
        this.log.warn({ bridge: bridge.name, position: from, head }, `bridge ${bridge.name}: its position is in a generation the log has dropped (retention or size cap); going on from the oldest message kept`);
        from = head;
      }
    }
    const started = performance.now();
    let n = 0;
    const tail = this.storage.tail;
    for (;;) {
      const { entries, next } = this.storage.read(from, 4096);
      for (const e of entries) {
        if (e.message.qos === 0) continue;
        const levels = e.message.topic.split('/');
        const r = bridge.route(e.message, levels);
        if (!r || r.qos === 0) continue;
        this.durableLog.positions.set(e.message, e.pos);
        bridge.offer(e.message, r.line, r.qos, e.pos, e.storedAt);
        n++;
      }
      if (entries.length === 0 || (next.gen === from.gen && next.offset === from.offset) || (next.gen > tail.gen || (next.gen === tail.gen && next.offset >= tail.offset))) break;
      from = next;
    }
    if (n > 0) this.log.info({ bridge: bridge.name, messages: n, ms: Math.round(performance.now() - started) }, `bridge ${bridge.name}: ${n} messages of its backlog read back from the log`);
    this.loadLinkState(bridge);
  }

  /**
   * The QoS 2 state of the link at the last stop or crash: the messages in flight out, and the
   * inbound ids not yet released; the log is read from the stored mark for inbound QoS 2
   * messages stored before their id was (a crash between the two writes).
   */
  private loadLinkState(bridge: Bridge): void {
    const doc = this.storage.document(linkKey(bridge.name));
    if (!doc) return;
    let link: StoredLink;
    try {
      link = JSON.parse(doc.toString('utf8')) as StoredLink;
    } catch {
      this.log.error({ bridge: bridge.name }, `bridge ${bridge.name}: its stored QoS 2 state is unreadable; ignored`);
      return;
    }
    const ids = new Set(link.in);
    let from = link.mark;
    if (this.storage instanceof DurableStorage && comparePositions(from, this.storage.messages.head) < 0) from = this.storage.messages.head;
    const tail = this.storage.tail;
    while (comparePositions(from, tail) < 0) {
      const { entries, next } = this.storage.read(from, 4096);
      for (const e of entries) if (e.message.origin === bridge.origin && e.message.inboundQos2Id !== undefined) ids.add(e.message.inboundQos2Id);
      if (entries.length === 0 || comparePositions(next, from) <= 0) break;
      from = next;
    }
    const out = bridge.restoreLinkState(link.out, ids);
    if (out > 0 || ids.size > 0) this.log.info({ bridge: bridge.name, out, in: ids.size }, `bridge ${bridge.name}: QoS 2 state restored: ${out} messages in flight out, ${ids.size} inbound ids not yet released`);
  }

  /** Store a bridge's QoS 2 state; `done` once on disk (with every write before it). */
  private saveLinkState(bridge: Bridge, done: (err?: Error) => void): void {
    if (!this.durableLog || this.bridges.get(bridge.name) !== bridge) return done();
    const state = bridge.linkState();
    let mark = this.storage.tail;
    for (const m of state.pending) {
      const pos = this.durableLog.positions.get(m);
      if (pos && comparePositions(pos, mark) < 0) mark = pos;
    }
    const stored: StoredLink = { out: state.out, in: state.in, mark: { gen: mark.gen, offset: mark.offset } };
    this.storage.setDocument(linkKey(bridge.name), Buffer.from(JSON.stringify(stored)));
    // the position goes in the same commit (one turn, one LMDB transaction): the completed
    // messages the state no longer lists are behind it
    this.writePosition(bridge);
    this.dirty.delete(bridge);
    this.storage.onDurable(done);
  }

  // ------------------------------------------------------------ out

  private onPublish(message: Message): void {
    if (this.bridges.size === 0) return;
    // cluster: a message forwarded from another node was offered to that node's bridges
    // already; each node's bridges carry what arrives at it (docs/bridges.md, Cluster)
    if (message.fromNode !== undefined) return;
    let levels: string[] | undefined;
    for (const bridge of this.bridges.values()) {
      if (this.needLevels && levels === undefined) levels = message.topic.split('/');
      const r = bridge.route(message, levels);
      if (!r) continue;
      this.offerRouted(bridge, message, r.line, r.qos, Date.now());
    }
  }

  /**
   * [no loops] A PUBLISH from a client, another broker's bridge, whose edb-bridge-path holds
   * this broker: it crossed a bridge here before and came round a ring. Consumed: acknowledged
   * (the publisher is done with it), not delivered, stored or forwarded again.
   */
  private returnedHere(message: Message, client: ClientInfo | undefined): boolean {
    if (client === undefined || message.properties?.userProperties === undefined) return false;
    const path = bridgePath(message);
    if (path === undefined || !path.includes(this.brokerId)) return false;
    this.returned++;
    if (!this.returnedLogged) {
      this.returnedLogged = true;
      this.log.info({ clientId: client.clientId, path: path.join(',') }, `bridges: a message that had crossed a bridge here came back from ${client.clientId} (a ring of bridges: ${path.join(' -> ')}); such messages are dropped, counted in edb_bridge_loop_returned_total`);
    }
    return true;
  }

  private offer(bridge: Bridge, message: Message, storedAt: number): void {
    const r = bridge.route(message, message.topic.split('/'));
    if (r) this.offerRouted(bridge, message, r.line, r.qos, storedAt);
  }

  private offerRouted(bridge: Bridge, message: Message, line: Parameters<Bridge['offer']>[1], qos: 0 | 1 | 2, storedAt: number): void {
    let pos: LogPosition | undefined;
    // QoS 1/2: in the durable log before the publisher's ack (the publish flow waits for the
    // commit of every write counted in durable.writes, which SessionLog.store counts)
    if (qos > 0 && this.durableLog && this.durableLog.store(message)) pos = this.durableLog.positions.get(message);
    bridge.offer(message, line, qos, pos, storedAt);
  }

  private generationDropped(d: DroppedGeneration): void {
    for (const b of this.bridges.values()) if (b.storedDropped(d.gen, d.reason) > 0) this.markDirty(b);
  }

  private markDirty(bridge: Bridge): void {
    if (!this.durableLog) return;
    this.dirty.add(bridge);
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => this.flushPositions(), 20);
    this.flushTimer.unref();
  }

  /** Each changed bridge's position: its oldest unacknowledged message, or the log's tail. */
  flushPositions(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    for (const b of this.dirty) if (this.bridges.get(b.name) === b) this.writePosition(b);
    this.dirty.clear();
  }

  private writePosition(b: Bridge): void {
    let pos = b.backlog.headPosition ?? this.storage.tail;
    // in flight from a generation the log dropped: the restart goes on from the oldest kept
    if (this.storage instanceof DurableStorage && comparePositions(pos, this.storage.messages.head) < 0) pos = this.storage.messages.head;
    this.storage.setDocument(positionKey(b.name), Buffer.from(JSON.stringify({ gen: pos.gen, offset: pos.offset })));
  }

  // ------------------------------------------------------------ in

  private publishIncoming(bridge: Bridge, message: Message, done: (reasonCode: number) => void): void {
    const identity: ClientInfo = {
      clientId: bridge.config.clientId,
      username: bridge.config.localUsername,
      protocolVersion: bridge.config.protocolVersion,
      transport: bridge.config.url.startsWith('mqtts:') ? 'tls' : 'tcp',
      remoteAddress: bridge.config.url,
      connectedAt: bridge.connectedSince ?? Date.now(),
    };
    const verdict = this.broker.authorizePublish(identity, message);
    if (verdict !== 0) {
      bridge.counters.inNotAuthorized++;
      return done(verdict);
    }
    const durable = this.broker.durable;
    const writes = durable?.writes ?? 0;
    // QoS 2 carries its packet id in its log record (message.inboundQos2Id): stored whether a
    // session here wants it or not, so that after a crash its PUBLISH sent again is known
    if (message.inboundQos2Id !== undefined && this.durableLog) this.durableLog.store(message);
    this.broker.publish(message);
    // stored for a persistent session here (or another bridge): acknowledged once on disk
    if (durable && message.qos > 0 && durable.writes !== writes) durable.onDurable((err) => done(err ? RC.QUOTA_EXCEEDED : 0));
    else done(0);
  }

  // ------------------------------------------------------------ life cycle

  /** Connect every bridge (after the restore, so the backlog is complete). */
  async start(): Promise<void> {
    if (this.bridges.size === 0 && this.started) return;
    this.started = true;
    if (this.bridges.size > 0) await this.loadMqtt();
    for (const b of this.bridges.values()) b.start();
    this.rateTimer = setInterval(() => this.sampleRates(), 1000);
    this.rateTimer.unref();
  }

  private async loadMqtt(): Promise<void> {
    this.mqtt ??= await import('mqtt');
  }

  private sampleRates(): void {
    for (const b of this.bridges.values()) {
      const r = this.rates.get(b.name) ?? { lastOut: b.counters.messagesOut, lastIn: b.counters.messagesIn, out: 0, in: 0 };
      r.out = b.counters.messagesOut - r.lastOut;
      r.in = b.counters.messagesIn - r.lastIn;
      r.lastOut = b.counters.messagesOut;
      r.lastIn = b.counters.messagesIn;
      this.rates.set(b.name, r);
    }
  }

  get(name: string): Bridge | undefined {
    return this.bridges.get(name);
  }
  list(): Bridge[] {
    return [...this.bridges.values()];
  }

  async add(config: BridgeConfig, source: 'config' | 'api' = 'api'): Promise<void> {
    if (this.bridges.has(config.name)) throw new BridgeExistsError(`bridge ${config.name} exists; change it with PUT /api/bridges/${config.name}`);
    if (this.started) await this.loadMqtt();
    this.create(config, source);
    if (source === 'api') this.saveApiBridges();
    this.log.info({ bridge: config.name, endpoint: config.url }, `bridge ${config.name}: added (${config.url})`);
  }

  /** Change a bridge in place: its backlog stays. */
  async update(config: BridgeConfig, source: 'config' | 'api' = 'api'): Promise<void> {
    const bridge = this.bridges.get(config.name);
    if (!bridge) throw new BridgeNotFoundError(`no bridge ${config.name}`);
    if (this.started) await this.loadMqtt();
    bridge.reconfigure(config);
    this.needLevels = [...this.bridges.values()].some((b) => b.wantsLevels);
    this.sources.set(config.name, source);
    this.saveApiBridges();
    this.log.info({ bridge: config.name }, `bridge ${config.name}: changed`);
  }

  /** Stop a bridge and forget it, its backlog and its position. */
  async remove(name: string): Promise<void> {
    const bridge = this.bridges.get(name);
    if (!bridge) throw new BridgeNotFoundError(`no bridge ${name}`);
    this.bridges.delete(name);
    const source = this.sources.get(name);
    this.sources.delete(name);
    this.rates.delete(name);
    this.dirty.delete(bridge);
    this.needLevels = [...this.bridges.values()].some((b) => b.wantsLevels);
    await bridge.stop();
    bridge.backlog.clear();
    bridge.buffer.clear();
    if (this.durableLog) {
      this.storage.setDocument(positionKey(name), undefined);
      this.storage.setDocument(linkKey(name), undefined);
    }
    if (source === 'api') this.saveApiBridges();
    this.log.info({ bridge: name }, `bridge ${name}: removed`);
  }

  /**
   * SIGHUP: the bridges from the config file and environment again. Added, changed and
   * removed ones are applied; the others (and those made through the API) are not touched.
   */
  async reload(configs: readonly BridgeConfig[]): Promise<{ added: string[]; changed: string[]; removed: string[] }> {
    const out = { added: [] as string[], changed: [] as string[], removed: [] as string[] };
    const wanted = new Map(configs.map((c) => [c.name, c]));
    for (const [name, source] of [...this.sources]) {
      if (source === 'config' && !wanted.has(name)) {
        await this.remove(name);
        out.removed.push(name);
      }
    }
    for (const c of configs) {
      const have = this.bridges.get(c.name);
      if (!have) {
        await this.add(c, 'config');
        out.added.push(c.name);
      } else if (this.sources.get(c.name) === 'config' && JSON.stringify(have.config) !== JSON.stringify(c)) {
        await this.update(c, 'config');
        out.changed.push(c.name);
      }
    }
    return out;
  }

  summary(bridge: Bridge, now = Date.now()): BridgeSummary {
    const rate = this.rates.get(bridge.name);
    const oldest = Math.min(bridge.backlog.oldestStoredAt ?? Infinity, bridge.buffer.oldestStoredAt ?? Infinity);
    const dropped = bridge.dropped;
    return {
      name: bridge.name,
      endpoint: bridge.config.url,
      state: bridge.state,
      source: this.sources.get(bridge.name) ?? 'config',
      protocolVersion: bridge.config.protocolVersion,
      topics: bridge.config.topics.map((t) => t.line),
      bufferSize: bridge.backlog.size + bridge.buffer.size,
      bufferMax: bridge.config.maxOutgoingBufferedMessages,
      bufferDropped: dropped.buffer_full + dropped.too_old + dropped.retention + dropped.size_cap,
      dropped,
      backlogMessages: bridge.backlog.size,
      backlogBytes: bridge.backlog.bytes + bridge.buffer.bytes,
      qos0Buffered: bridge.buffer.size,
      oldestMs: Number.isFinite(oldest) ? Math.max(0, now - oldest) : 0,
      sentPerSecond: rate?.out ?? 0,
      receivedPerSecond: rate?.in ?? 0,
      messagesOut: bridge.counters.messagesOut,
      messagesIn: bridge.counters.messagesIn,
      reconnects: bridge.counters.reconnects,
      loops: bridge.counters.loops,
      hopLimited: bridge.counters.hopLimited,
      inAwaitingAck: bridge.inAwaitingAck,
      ...(bridge.remoteId !== undefined ? { remoteId: bridge.remoteId } : {}),
      ...(bridge.connectedSince !== undefined ? { connectedSince: bridge.connectedSince } : {}),
      ...(bridge.lastError !== undefined && bridge.state !== 'connected' ? { lastError: bridge.lastError } : {}),
      ...(bridge.nextAttemptAt !== undefined && bridge.state === 'disconnected' ? { nextAttemptInMs: Math.max(0, bridge.nextAttemptAt - now) } : {}),
    };
  }

  summaries(): BridgeSummary[] {
    const now = Date.now();
    return this.list().map((b) => this.summary(b, now));
  }

  /** One line for the status page. */
  statusLine(): string {
    if (this.bridges.size === 0) return 'no bridges';
    const up = this.list().filter((b) => b.state === 'connected').length;
    const held = this.list().reduce((n, b) => n + b.backlog.size + b.buffer.size, 0);
    return `${up} of ${this.bridges.size} connected, ${held.toLocaleString('en-US')} messages held for remotes`;
  }

  /** Memory storage: the backlogs go into the backup (section "bridges"). */
  snapshotSection(): SnapshotSection {
    return {
      name: 'bridges',
      save: () => {
        const parts: Buffer[] = [];
        for (const b of this.bridges.values()) {
          for (const queue of [b.backlog]) {
            for (const e of queue.pending()) {
              const name = Buffer.from(b.name, 'utf8');
              const rec = encodeMessage(e.message, e.storedAt);
              const head = Buffer.alloc(6);
              head.writeUInt16LE(name.length, 0);
              head.writeUInt32LE(rec.length, 2);
              parts.push(head, name, rec);
            }
          }
        }
        return Buffer.concat(parts);
      },
      restore: (data) => {
        let p = 0;
        while (p < data.length) {
          const nameLen = data.readUInt16LE(p);
          const recLen = data.readUInt32LE(p + 2);
          const name = data.toString('utf8', p + 6, p + 6 + nameLen);
          const { message, storedAt } = decodeMessage(data.subarray(p + 6 + nameLen, p + 6 + nameLen + recLen));
          p += 6 + nameLen + recLen;
          const bridge = this.bridges.get(name);
          if (bridge) this.offer(bridge, message, storedAt);
          else {
            const list = this.restoredBacklog.get(name) ?? [];
            list.push({ message, storedAt });
            this.restoredBacklog.set(name, list);
          }
        }
      },
      reset: () => {
        this.restoredBacklog.clear();
        for (const b of this.bridges.values()) b.backlog.clear();
      },
    };
  }

  async close(): Promise<void> {
    if (this.rateTimer) clearInterval(this.rateTimer);
    this.flushPositions();
    await Promise.all(this.list().map((b) => b.stop()));
  }
}
