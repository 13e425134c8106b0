import { randomBytes } from 'node:crypto';
import type { IConnectPacket } from 'mqtt-packet';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { Connection, ConnectionAcceptor, ConnectionEvents } from '../transport/connection.js';
import { newBrokerStats, type BrokerApi, type BrokerStats, type ClientSummary, type SubscriptionSummary } from './api.js';
import type { AuthenticateResult, BrokerHooks, ClientInfo, PublishLimiter } from './hooks.js';
import { shareKey, type Message, type QoS } from '../mqtt/message.js';
import type { Session, Delivery, PendingWill, QueueAccount, Subscription } from '../session/session.js';
import { MemorySessionStore, type RetainedMessages, type SessionPersistence, type SessionStore } from '../session/store.js';
import { TopicTrie, type MatchVisitor, type SharedGroup } from '../topics/trie.js';
import { RC, reasonName } from '../mqtt/reason-codes.js';
import { RetainedStore } from './retained.js';
import { MqttClient } from './client.js';
import type { DurableAcks, BrokerCore, CoreClient, ForwardAcks, SessionLoader } from './core.js';
import type { CloseCause } from './lifecycle.js';
import { handlePacket } from './handlers/index.js';

/** What the trie stores per subscription. */
interface SubRef {
  session: Session;
  sub: Subscription;
}

/** One subscriber's merged view of a message (overlapping subscriptions, v5 rules). */
interface Target {
  session: Session;
  qos: QoS;
  retain: boolean;
  subscriptionIds: number[] | undefined;
  /** Through a shared subscription (one member of the group gets it). */
  shared: boolean;
}

type HookLists = { [K in keyof BrokerHooks]-?: NonNullable<BrokerHooks[K]>[] };

const FOREVER = 0xffffffff;

/**
 * The broker: sessions, the subscription trie, retained messages, routing, hooks and the
 * housekeeping sweep (keep alive, connect timeout, will delay, session expiry, stalls). What
 * each packet does is in handlers/, over the BrokerCore view of this class.
 */
export class Broker implements BrokerApi, BrokerCore, ConnectionAcceptor {
  readonly stats: BrokerStats = newBrokerStats(Date.now());
  /** Bytes queued by all sessions together (EDB_MAX_QUEUED_BYTES_TOTAL bounds the offline ones' growth). */
  readonly queueAccount: QueueAccount = { bytes: 0 };
  /** What route() matched, gathered without allocating a visitor per message. */
  private readonly collector = new RouteCollector(this);
  readonly acceptor: ConnectionAcceptor = this;
  /** Sessions by client id (in memory; see session/store.ts for what another store provides). */
  readonly sessions: SessionStore;
  /** Durable sessions (EDB_STORAGE=durable): told what must be stored, and when a session changes. */
  private readonly persistence: SessionPersistence | undefined;
  /** Connected clients by client id. */
  readonly online = new Map<string, CoreClient>();
  /** Every open network connection, connected or still in the handshake. */
  readonly connections = new Set<MqttClient>();
  readonly retained: RetainedMessages;
  /** Set at start-up with EDB_STORAGE=durable: a QoS 1/2 PUBLISH it stored is acknowledged after the commit. */
  durable: DurableAcks | undefined;
  /** Set at start-up in cluster mode: a QoS 1/2 PUBLISH forwarded to other nodes is acknowledged once NATS has it. */
  forwardAcks: ForwardAcks | undefined;
  /** Set at start-up in cluster mode: a persistent session held on another node (or only in the cluster) is brought here before CONNACK. */
  sessionLoader: SessionLoader | undefined;
  /**
   * This broker's id among bridged brokers (set at start-up by the bridges): sent in the
   * CONNACK to a v5 client whose CONNECT carries the user property edb-broker-id (another
   * broker's bridge), which then knows which messages have been here (docs/bridges.md).
   */
  brokerId: string | undefined;
  private readonly trie = new TopicTrie<SubRef>();
  private readonly hooks: HookLists = {
    authenticate: [],
    authorizePublish: [],
    authorizeSubscribe: [],
    authorizeDelivery: [],
    onPublish: [],
    onConnect: [],
    onDisconnect: [],
    onSubscribe: [],
    onRoutingChange: [],
  };
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly dropLoggedAt = new Map<string, number>();
  private closing = false;
  /** Per-client publish and subscription limits (set at start-up), if any. */
  limits: PublishLimiter | undefined;

  constructor(
    readonly config: Config,
    readonly log: Logger,
    parts: { retained?: RetainedMessages; sessions?: SessionStore; persistence?: SessionPersistence } = {},
  ) {
    this.retained = parts.retained ?? new RetainedStore();
    this.sessions = parts.sessions ?? new MemorySessionStore();
    this.persistence = parts.persistence;
    this.sweepTimer = setInterval(() => this.sweep(), 500);
    this.sweepTimer.unref();
  }

  /** Install per-client limits (EDB_MAX_MSG_RATE, EDB_MAX_BYTES_RATE, EDB_MAX_SUBSCRIPTIONS). */
  setLimits(limits: PublishLimiter): void {
    this.limits = limits.enabled || limits.maxSubscriptions > 0 ? limits : undefined;
  }

  /** `first`: before the hooks registered so far (a guard that must see a message before any service). */
  addHooks(hooks: BrokerHooks, options: { first?: boolean } = {}): void {
    for (const name of Object.keys(this.hooks) as (keyof HookLists)[]) {
      const fn = hooks[name];
      if (!fn) continue;
      const list = this.hooks[name] as unknown[];
      if (options.first) list.unshift(fn.bind(hooks));
      else list.push(fn.bind(hooks));
    }
  }

  // ------------------------------------------------------------ connections

  accept(connection: Connection): ConnectionEvents {
    if (this.closing || this.connections.size >= this.config.maxConnections) {
      this.countDrop('connection_refused');
      connection.destroy();
      return { onData: () => undefined, onDrain: () => undefined, onClose: () => undefined };
    }
    const client = new MqttClient(this, connection, handlePacket);
    this.connections.add(client);
    this.stats.connectionsTotal++;
    return client;
  }

  connectionGone(client: CoreClient): void {
    this.connections.delete(client as MqttClient);
  }

  assignClientId(): string {
    let id: string;
    do id = `edb-${randomBytes(9).toString('base64url')}`;
    while (this.sessions.has(id) || this.online.has(id));
    return id;
  }

  async authenticate(client: CoreClient, packet: IConnectPacket): Promise<AuthenticateResult> {
    const list = this.hooks.authenticate;
    if (list.length === 0) return { ok: true };
    const request = {
      clientId: client.clientId,
      username: packet.username,
      password: packet.password,
      protocolVersion: client.protocolVersion,
      transport: client.transport,
      remoteAddress: client.remoteAddress,
      ...(client.certificateSubject !== undefined ? { certificateSubject: client.certificateSubject } : {}),
      ...(client.certificateFields !== undefined ? { certificateFields: client.certificateFields } : {}),
    };
    let username: string | undefined;
    for (const hook of list) {
      try {
        const verdict = await hook(request);
        if (!verdict.ok) return verdict;
        if (verdict.username !== undefined) username = verdict.username;
      } catch (err) {
        this.log.error({ err, clientId: client.clientId }, 'authentication hook failed');
        return { ok: false, reasonCode: RC.SERVER_UNAVAILABLE };
      }
    }
    return username === undefined ? { ok: true } : { ok: true, username };
  }

  /** Attach `client` to its session (resumed or new), taking over an existing connection. */
  openSession(client: CoreClient, clean: boolean, expiry: number): { session: Session; present: boolean } {
    const id = client.clientId;
    const previous = this.online.get(id);
    if (previous) {
      // [MQTT-5-3.1.4-3] session takeover: the old connection is closed (v5: 0x8E)
      this.log.info({ clientId: id }, 'session taken over');
      previous.disconnect(RC.SESSION_TAKEN_OVER, 'takeover');
    }
    let session = this.sessions.get(id);
    if (session?.pendingWill) {
      // [MQTT-5-3.1.3-9] reconnecting before the Will Delay cancels the will, unless the session ends
      if (clean) this.publishWill(session.pendingWill, undefined);
      session.pendingWill = undefined;
      session.willDueAt = undefined;
    }
    if (session && clean) {
      this.destroySession(session); // [MQTT-5-3.1.2-4] Clean Start discards the old session
      session = undefined;
    }
    const present = session !== undefined; // [MQTT-5-3.2.2-2] [MQTT-5-3.2.2-3]
    if (!session) {
      session = this.sessions.create(id);
      session.attach(this.queueAccount);
    }
    session.expiryInterval = expiry;
    session.expiresAt = undefined;
    this.online.set(id, client);
    this.persistence?.changed(session);
    // durable: the will is kept while connected, for a crash that never closes the connection
    this.persistence?.liveWill(id, client.will ? { message: client.will, delaySeconds: client.willDelay, expirySeconds: client.willExpirySeconds, username: client.username } : undefined);
    return { session, present };
  }

  clientOnline(client: CoreClient): void {
    this.stats.clientsConnected++;
    this.log.debug({ clientId: client.clientId, address: client.remoteAddress, transport: client.transport, v: client.protocolVersion }, 'client connected');
    for (const hook of this.hooks.onConnect) this.notify(hook, client);
  }

  clientClosed(client: CoreClient, wasOpen: boolean, cause: CloseCause): void {
    if (!wasOpen) return;
    const id = client.clientId;
    if (this.online.get(id) === client) {
      this.online.delete(id);
      this.limits?.forget(id, Date.now());
    }
    this.stats.clientsConnected--;
    this.log.debug({ clientId: id, cause }, 'client disconnected');
    for (const hook of this.hooks.onDisconnect) this.notify(hook, client, cause === 'disconnect');
    const session = client.session!;
    // QoS 0 messages are not kept for an offline session
    if (session.queued > 0) {
      const kept = session.queue.slice(session.queueHead).filter((d) => d.qos > 0);
      session.clearQueue();
      for (const d of kept) session.enqueue(d);
    }
    const will = client.will;
    // published or made pending just below, in this turn: the stored copy goes
    if (will && !this.online.has(id)) this.persistence?.liveWill(id, undefined);
    const sessionEnds = session.expiryInterval === 0 && this.sessions.get(id) === session;
    if (will) {
      const pending: PendingWill = { message: will, expirySeconds: client.willExpirySeconds, username: client.username };
      // [MQTT-5-3.1.3-9] published after the Will Delay, or when the session ends if sooner. A
      // server shutdown closes the connection without the client's DISCONNECT, so the will stands:
      // a delayed one waits in the session, which the backup carries over the restart (where the
      // client may still come back in time); without a backup every session ends now.
      // (durable storage keeps every persistent session, backup or not)
      const endsWithServer = cause === 'shutdown' && !this.config.backupEnabled && !this.persistence;
      const delay = endsWithServer ? 0 : Math.min(client.willDelay, session.expiryInterval);
      if (delay === 0) this.publishWill(pending, client);
      else {
        session.pendingWill = pending;
        session.willDueAt = Date.now() + delay * 1000;
      }
    }
    if (cause === 'shutdown') {
      this.persistence?.changed(session);
      return; // sessions stay as they are for the snapshot
    }
    if (sessionEnds) this.destroySession(session);
    else if (this.sessions.get(id) === session) {
      session.expiresAt = session.expiryInterval >= FOREVER ? undefined : Date.now() + session.expiryInterval * 1000;
      this.persistence?.changed(session);
    }
  }

  private publishWill(will: PendingWill, client: CoreClient | undefined): void {
    const message: Message = { ...will.message };
    if (will.expirySeconds !== undefined) message.expiresAt = Date.now() + will.expirySeconds * 1000;
    // a delayed will is authorized as the client that set it, though it is gone
    const info = client ?? this.offlineInfo(message.senderId ?? '', will.username);
    // runs from close paths and the sweep timer: a failing hook must not take the process down
    try {
      // the will goes through the same authorization as any PUBLISH from its client
      if (this.authorizePublish(info, message) !== 0) {
        this.countDrop('not_authorized');
        return;
      }
      this.route(message, undefined);
    } catch (err) {
      this.log.error({ err, clientId: message.senderId, topic: message.topic }, 'publishing a will failed');
    }
  }

  /** Lifecycle hooks are notifications: one that throws is logged, never breaks the flow. */
  private notify<A extends unknown[]>(hook: (...args: A) => void, ...args: A): void {
    try {
      hook(...args);
    } catch (err) {
      this.log.error({ err }, 'hook failed');
    }
  }

  private offlineInfo(clientId: string, username: string | undefined): ClientInfo {
    return { clientId, username, protocolVersion: 5, transport: 'tcp', remoteAddress: '', connectedAt: 0 };
  }

  private destroySession(session: Session): void {
    for (const sub of session.subscriptions.values()) {
      if (this.trie.remove(sub.filter, session.clientId, sub.shareGroup) !== undefined) this.routingChanged(false, sub, session.clientId);
    }
    session.clearSubscriptions();
    session.clearQueue();
    session.clearInflight();
    if (this.sessions.get(session.clientId) === session) {
      this.sessions.delete(session.clientId);
      this.persistence?.ended(session);
    }
  }

  // ------------------------------------------------------------ publish

  authorizePublish(client: ClientInfo, message: Message): number {
    // $SYS is the broker's own; clients may not publish there
    if (message.topic.startsWith('$SYS/') || message.topic === '$SYS') return RC.NOT_AUTHORIZED;
    for (const hook of this.hooks.authorizePublish) {
      const code = hook(client, message);
      if (code !== 0) return code;
    }
    return 0;
  }

  publish(message: Message): void {
    this.route(message, undefined);
  }

  /**
   * Route a message to every matching subscriber. Returns whether anyone matched.
   * `publisher` is held back (its socket paused) when a subscriber it feeds backs up.
   */
  route(message: Message, publisher: CoreClient | undefined): boolean {
    if (publisher) this.stats.messagesReceived++;
    else this.countBrokerMessage(message);
    const info: ClientInfo | undefined = publisher;
    for (const hook of this.hooks.onPublish) {
      if (hook(message, info) === true) return true;
    }
    return this.routeLocal(message, publisher);
  }

  /**
   * Route without the onPublish hooks (they have seen the message): the retained store and
   * the subscribers of this broker. The cluster calls it for a message it held back until the
   * replicated session-message stream had it.
   */
  routeLocal(message: Message, publisher: CoreClient | undefined): boolean {
    // a message another cluster node forwarded was stored as retained there (and reaches this
    // node's retained store through the cluster's replicated set)
    if (message.retain && message.fromNode === undefined) this.retained.set(message);
    // the collector is reused; a route() from inside a delivery hook gets one of its own
    const collector = this.collector.message === undefined ? this.collector : new RouteCollector(this);
    collector.message = message;
    try {
      this.trie.match(message.topic, collector);
    } catch (err) {
      collector.take(); // a failing delivery hook must not leave the shared collector busy
      throw err;
    }
    const found = collector.take();
    if (found === undefined) return false;
    if (found instanceof Map) {
      // several receivers: their QoS 0 copies share one encoding (Outbound.writePublish); a
      // message for one is encoded straight into that connection's output
      message.wire ??= [];
      for (const t of found.values()) this.deliverTo(t, message, publisher);
    } else this.deliverTo(found, message, publisher);
    return true;
  }

  private deliverTo(t: Target, message: Message, publisher: CoreClient | undefined): void {
    const d: Delivery = { message, qos: t.qos, retain: t.retain, subscriptionIds: t.subscriptionIds };
    // durable: stored once in the log (the first persistent session it reaches stores it)
    if (t.qos > 0 && this.persistence) this.persistence.storeFor(t.session, message, t.shared);
    const client = this.online.get(t.session.clientId);
    if (client && client.session === t.session) {
      if (this.mayDeliver(client, message)) client.out.deliver(d, publisher);
    } else this.queueOffline(t.session, d);
  }

  /** Cluster: a stored message read back for one session (its catch-up after it moved here). */
  deliverStored(session: Session, d: Delivery): void {
    if (this.sessions.get(session.clientId) !== session) return;
    if (d.qos > 0 && this.persistence) this.persistence.storeFor(session, d.message, false);
    const client = this.online.get(session.clientId);
    if (client && client.session === session) {
      if (this.mayDeliver(client, d.message)) client.out.deliver(d, undefined);
    } else this.queueOffline(session, d);
  }

  private queueOffline(session: Session, d: Delivery): void {
    if (d.qos === 0) return; // QoS 0 is not queued for offline sessions
    // a bound per session, and one for all sessions together: many persistent sessions (a
    // client can open them under any number of ids) must not hold all of the memory
    const total = this.config.maxQueuedBytesTotal;
    const over = total > 0 && this.queueAccount.bytes >= total;
    // durable: past its memory window (EDB_STORAGE_SESSION_WINDOW) the session's backlog stays
    // in the message log, bounded by retention and the size cap, and is read back as it drains
    if (session.defer(d, over || session.queued >= this.config.storageSessionWindow)) return;
    // (a message it could not leave in the log, not stored: held in memory, no count bound then)
    if ((session.queued >= this.config.maxOfflineMessages && !session.backlogInLog) || over) {
      this.countDrop('offline_queue_full');
      return;
    }
    session.enqueue(d);
  }

  /** Durable: messages were read back from the log into `session`'s queue: send them if it is connected. */
  pumpSession(session: Session): void {
    const client = this.online.get(session.clientId);
    if (client && client.session === session && client.state === 'open') client.out.pump();
  }

  maySubscribe(client: ClientInfo, filter: string): boolean {
    for (const hook of this.hooks.authorizeSubscribe) if (hook(client, filter, 1) >= RC.UNSPECIFIED_ERROR) return false;
    return true;
  }

  /** authorizeDelivery hooks; Outbound.pump also runs them for queued messages (queued while offline, or before an ACL reload). */
  mayDeliver(client: ClientInfo, message: Message): boolean {
    for (const hook of this.hooks.authorizeDelivery) if (!hook(client, message)) return false;
    return true;
  }

  /** Round robin over connected members; an offline member only when none is connected. */
  pickShareMember(group: SharedGroup<SubRef>, message: Message): SubRef | undefined {
    const members = [...group.members.values()];
    const n = members.length;
    let fallback: SubRef | undefined;
    for (let i = 0; i < n; i++) {
      const ref = members[(group.cursor + i) % n]!;
      const client = this.online.get(ref.session.clientId);
      if (client && client.session === ref.session) {
        if (!this.mayDeliver(client, message)) continue;
        group.cursor = (group.cursor + i + 1) % n;
        return ref;
      }
      fallback ??= ref;
    }
    return message.qos > 0 ? fallback : undefined;
  }

  // ------------------------------------------------------------ subscribe

  authorizeSubscribe(client: ClientInfo, filter: string, qos: QoS): number {
    let granted: number = qos;
    for (const hook of this.hooks.authorizeSubscribe) {
      const verdict = hook(client, filter, granted as QoS);
      if (verdict >= RC.UNSPECIFIED_ERROR) return verdict;
      granted = Math.min(granted, verdict);
    }
    return granted;
  }

  subscribed(client: ClientInfo, filter: string, qos: QoS): void {
    for (const hook of this.hooks.onSubscribe) this.notify(hook, client, filter, qos);
  }

  addSubscription(session: Session, sub: Subscription): void {
    if (this.trie.add(sub.filter, session.clientId, { session, sub }, sub.shareGroup)) this.routingChanged(true, sub, session.clientId);
    this.persistence?.changed(session);
  }

  removeSubscription(session: Session, sub: Subscription): void {
    if (this.trie.remove(sub.filter, session.clientId, sub.shareGroup) !== undefined) this.routingChanged(false, sub, session.clientId);
    this.persistence?.changed(session);
  }

  private routingChanged(added: boolean, sub: Subscription, clientId: string): void {
    for (const hook of this.hooks.onRoutingChange) this.notify(hook, added, sub.filter, sub.shareGroup, clientId);
  }

  /** End a session that is not connected here (cluster: the client connected on another node). */
  endSession(clientId: string): boolean {
    const session = this.sessions.get(clientId);
    if (!session || this.online.has(clientId)) return false;
    session.pendingWill = undefined; // the client is back, elsewhere: its will is cancelled [MQTT-5-3.1.3-9]
    session.willDueAt = undefined;
    this.destroySession(session);
    return true;
  }

  /** Would routing `message` store it for a persistent session? (Asked only when storage is full.) */
  needsStorage(message: Message): boolean {
    if (!this.persistence || message.qos === 0) return false;
    let needed = false;
    const wants = (s: Session, qos: QoS) => s.expiryInterval > 0 && qos > 0;
    this.trie.match(message.topic, {
      subscription: (_id, ref) => {
        if (wants(ref.session, ref.sub.qos)) needed = true;
      },
      shared: (group) => {
        for (const ref of group.members.values()) if (wants(ref.session, ref.sub.qos)) needed = true;
      },
    });
    return needed;
  }

  // ------------------------------------------------------------ housekeeping

  private sweep(): void {
    const now = Date.now();
    const cfg = this.config;
    for (const c of this.connections) {
      if (c.state === 'new' || c.state === 'authenticating') {
        // slowloris: CONNECT must come soon after the socket opens
        if (now - c.openedAt > cfg.connectTimeoutMs) {
          c.close('timeout');
          c.destroy();
        }
      } else if (c.state === 'open') {
        // [MQTT-5-3.1.2-22] one and a half times the keep alive without a packet
        // (not while flow control holds its socket paused: then the silence is ours)
        if (c.keepAliveMs > 0 && !c.held && now - c.lastActivity > c.keepAliveMs * 1.5) c.disconnect(RC.KEEP_ALIVE_TIMEOUT, 'keepalive');
        else c.out.checkStall(now, cfg.stallTimeoutMs);
      }
    }
    for (const session of this.sessions.values()) {
      if (session.willDueAt !== undefined && session.willDueAt <= now && session.pendingWill) {
        const will = session.pendingWill;
        session.pendingWill = undefined;
        session.willDueAt = undefined;
        this.publishWill(will, undefined);
        this.persistence?.changed(session);
      }
      if (session.expiresAt !== undefined && session.expiresAt <= now && !this.online.has(session.clientId)) {
        this.destroySession(session);
      }
    }
  }

  // ------------------------------------------------------------ counters

  countPacket(cmd: string, inbound: boolean): void {
    const table = inbound ? this.stats.packetsReceived : this.stats.packetsSent;
    table[cmd] = (table[cmd] ?? 0) + 1;
  }

  countProtocolError(code: number): void {
    const name = reasonName(code);
    this.stats.protocolErrors[name] = (this.stats.protocolErrors[name] ?? 0) + 1;
  }

  /** A client disconnected because its outbound queue was full (EDB_QUEUE_FULL_POLICY=disconnect). */
  countQueueFullDisconnect(): void {
    this.stats.queueFullDisconnects++;
  }

  /**
   * An unexpected exception while serving `client` (counted by `kind`; logged with the packet
   * type and topic). The connection that met it is closed by the caller; nobody else is.
   */
  countInternalError(kind: string, err: unknown, client: ClientInfo, topic?: string): void {
    this.stats.internalErrors[kind] = (this.stats.internalErrors[kind] ?? 0) + 1;
    this.log.error({ err, kind, clientId: client.clientId, topic }, 'internal error serving a client');
  }

  /**
   * Encoding `message` for `client` failed: take the message out of service, once. It is marked
   * so no other receiver gets it (each would fail the same way), and a retained copy is removed
   * from the retained store. Counted by origin and logged once, with the error.
   */
  quarantine(message: Message, err: unknown, client: ClientInfo): void {
    if (message.quarantined) return;
    message.quarantined = true;
    this.stats.internalErrors['encode_publish'] = (this.stats.internalErrors['encode_publish'] ?? 0) + 1;
    const origin = message.origin ?? 'client';
    this.stats.quarantined[origin] = (this.stats.quarantined[origin] ?? 0) + 1;
    const wasRetained = this.retained.get(message.topic) === message;
    if (wasRetained) this.retained.set({ ...message, payload: Buffer.alloc(0) });
    this.log.error({ err, topic: message.topic, origin, senderId: message.senderId, clientId: client.clientId, retainedRemoved: wasRetained }, 'a stored message could not be encoded for a receiver: quarantined (not sent to anyone again)');
  }

  /** Count a dropped message; log each reason at most every 10 s so a flood cannot flood the log. */
  countDrop(reason: string, client?: ClientInfo): void {
    const count = (this.stats.dropped[reason] ?? 0) + 1;
    this.stats.dropped[reason] = count;
    const now = Date.now();
    if (now - (this.dropLoggedAt.get(reason) ?? 0) >= 10_000) {
      this.dropLoggedAt.set(reason, now);
      this.log.warn({ reason, total: count, clientId: client?.clientId }, 'message dropped');
    }
  }

  // ------------------------------------------------------------ BrokerApi views

  disconnectClient(clientId: string, reasonCode: number, reasonString?: string): boolean {
    const client = this.online.get(clientId);
    if (!client) return false;
    client.disconnect(reasonCode, 'admin', reasonString);
    return true;
  }

  client(clientId: string): ClientInfo | undefined {
    return this.online.get(clientId);
  }

  clients(): ClientSummary[] {
    return [...this.online.values()].map((c) => ({
      clientId: c.clientId,
      username: c.username,
      protocolVersion: c.protocolVersion,
      transport: c.transport,
      remoteAddress: c.remoteAddress,
      connectedAt: c.connectedAt,
      subscriptions: c.session?.subscriptions.size ?? 0,
      queued: c.session?.queued ?? 0,
      inflight: c.session?.inflight.size ?? 0,
    }));
  }

  subscriptions(): SubscriptionSummary[] {
    const out: SubscriptionSummary[] = [];
    for (const session of this.sessions.values()) {
      for (const sub of session.subscriptions.values()) {
        const row: SubscriptionSummary = { clientId: session.clientId, filter: sub.filter, qos: sub.qos, online: this.online.has(session.clientId) };
        if (sub.shareGroup !== undefined) row.shareGroup = sub.shareGroup;
        if (sub.noLocal) row.noLocal = true;
        if (sub.retainAsPublished) row.retainAsPublished = true;
        if (sub.subscriptionIdentifier !== undefined) row.subscriptionIdentifier = sub.subscriptionIdentifier;
        out.push(row);
      }
    }
    return out;
  }

  subscriptionCount(): number {
    return this.trie.size;
  }

  /** Retained messages, not counting $SYS (the broker's own; a handful of topics, checked one by one). */
  retainedCount(): number {
    let sys = 0;
    for (const topic of this.sysRetainedTopics) if (this.retained.get(topic)) sys++;
    return this.retained.size - sys;
  }

  /** The $SYS topics the broker has published retained (for retainedCount). */
  private readonly sysRetainedTopics = new Set<string>();

  /** A message from inside the broker: counted by origin, apart from client publishes. */
  private countBrokerMessage(message: Message): void {
    const origin = message.fromNode !== undefined ? 'cluster' : message.origin === undefined ? 'broker' : message.origin === '$SYS' ? 'sys' : message.origin;
    const counts = this.stats.messagesPublishedByBroker;
    counts[origin] = (counts[origin] ?? 0) + 1;
    if (message.retain && message.topic.startsWith('$SYS/')) this.sysRetainedTopics.add(message.topic);
  }

  queuedMessages(): number {
    let n = 0;
    for (const s of this.sessions.values()) n += s.queued;
    return n;
  }

  // ------------------------------------------------------------ snapshot

  /** Forget every session and retained message (a failed restore starts clean). */
  clearDurableState(): void {
    for (const session of [...this.sessions.values()]) this.destroySession(session);
    this.retained.clear();
  }

  /**
   * The will of a client that was connected when the broker last stopped without closing its
   * connection (a crash): handled as if the connection closed now [MQTT-5-3.1.2-8]: published, or
   * pending in its session for the Will Delay (a reconnect before then cancels it).
   */
  recoverWill(clientId: string, will: PendingWill, delaySeconds: number): void {
    const session = this.sessions.get(clientId);
    const delay = session ? Math.min(delaySeconds, session.expiryInterval) : 0;
    if (!session || delay === 0) return this.publishWill(will, undefined);
    session.pendingWill = will;
    session.willDueAt = Date.now() + delay * 1000;
    this.persistence?.changed(session);
  }

  /** Install a session read from a snapshot (before listeners open). */
  restoreSession(session: Session): void {
    const old = this.sessions.get(session.clientId);
    if (old) this.destroySession(old);
    session.attach(this.queueAccount);
    this.sessions.set(session.clientId, session);
    for (const sub of session.subscriptions.values()) {
      if (this.trie.add(sub.filter, session.clientId, { session, sub }, sub.shareGroup)) this.routingChanged(true, sub, session.clientId);
    }
  }

  // ------------------------------------------------------------ shutdown

  /**
   * Graceful stop: refuse new connections, send v5 clients DISCONNECT 0x8B, flush, and
   * wait at most `timeoutMs` for sockets to close.
   */
  async close(timeoutMs = this.config.shutdownTimeoutMs): Promise<void> {
    this.closing = true;
    clearInterval(this.sweepTimer);
    for (const c of [...this.connections]) {
      if (c.state === 'open') c.disconnect(RC.SERVER_SHUTTING_DOWN, 'shutdown');
      else c.close('shutdown');
    }
    const deadline = Date.now() + timeoutMs;
    while (this.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of this.connections) c.destroy();
    this.connections.clear();
  }
}

/**
 * Collects the subscriptions a message matches, for route(): one per broker, reused, so no
 * closures or Map per message. Most messages match one subscriber; the Map that merges
 * overlapping subscriptions is made from the second on.
 */
class RouteCollector implements MatchVisitor<SubRef> {
  /** The message being routed; undefined between routes. */
  message: Message | undefined;
  private firstKey: string | undefined;
  private first: Target | undefined;
  private targets: Map<string, Target> | undefined;

  constructor(private readonly broker: Broker) {}

  subscription(clientId: string, ref: SubRef): void {
    // [MQTT-5-3.8.3-3] No Local: not back to the client that published it
    if (ref.sub.noLocal && clientId === this.message!.senderId) return;
    this.add(clientId, ref.session, ref.sub);
  }

  shared(group: SharedGroup<SubRef>): void {
    // cluster: the message is delivered to this group by another node
    const only = this.message!.shareGroups;
    if (only !== undefined && !only.has(shareKey(group.group, group.filter))) return;
    const ref = this.broker.pickShareMember(group, this.message!);
    // [MQTT-5-4.8.2] each shared subscription delivers its own copy, even to a member that also
    // has a plain (or another shared) subscription matching: never merged with those
    if (ref) this.add(`$share/${group.group}/${group.filter}\u0000${ref.session.clientId}`, ref.session, ref.sub, true);
  }

  private add(key: string, session: Session, sub: Subscription, shared = false): void {
    const message = this.message!;
    if (this.targets) return mergeTarget(this.targets, key, session, sub, message, shared);
    if (this.first === undefined) {
      this.firstKey = key;
      this.first = newTarget(session, sub, message, shared);
      return;
    }
    this.targets = new Map([[this.firstKey!, this.first]]);
    mergeTarget(this.targets, key, session, sub, message, shared);
  }

  /** What matched (one target, or several by key), and ready for the next message. */
  take(): Target | Map<string, Target> | undefined {
    const found = this.targets ?? this.first;
    this.message = undefined;
    this.firstKey = undefined;
    this.first = undefined;
    this.targets = undefined;
    return found;
  }
}

function newTarget(session: Session, sub: Subscription, message: Message, shared: boolean): Target {
  const qos = (sub.qos < message.qos ? sub.qos : message.qos) as QoS;
  // [MQTT-5-3.3.1-12] [MQTT-5-3.3.1-13] Retain As Published keeps the flag; otherwise it is cleared on forward
  const retain = sub.retainAsPublished ? message.retain : false;
  return { session, qos, retain, subscriptionIds: sub.subscriptionIdentifier !== undefined ? [sub.subscriptionIdentifier] : undefined, shared };
}

function mergeTarget(targets: Map<string, Target>, key: string, session: Session, sub: Subscription, message: Message, shared: boolean): void {
  const t = newTarget(session, sub, message, shared);
  const existing = targets.get(key);
  if (!existing) {
    targets.set(key, t);
    return;
  }
  // [MQTT-5-3.3.4-2] to [MQTT-5-3.3.4-5] overlapping subscriptions: one copy, the highest QoS, every identifier
  if (t.qos > existing.qos) existing.qos = t.qos;
  if (t.retain) existing.retain = true;
  if (t.subscriptionIds) (existing.subscriptionIds ??= []).push(...t.subscriptionIds);
}
