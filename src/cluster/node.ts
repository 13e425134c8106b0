/**
 * One broker node in a cluster (EDB_CLUSTER_NATS): a NATS client that shares this node's
 * subscription interest, forwards messages only to nodes with a matching subscriber, takes
 * over a client id connected on another node, and keeps the retained messages in one
 * replicated JetStream bucket (retained.ts).
 *
 * Subjects, all under edb.<cluster>.:
 *   hb            heartbeat, every HEARTBEAT_MS: name, interest sequence, counts, NATS server
 *   interest      interest changes of one node, numbered (a gap makes the receiver re-sync)
 *   sync.<node>   request: the node's whole interest (reply: its entries and sequence)
 *   msg.<node>    a message forwarded to that node (wire.ts)
 *   online        a client connected on a node: another node with the same client id drops it
 *   bye           a node leaves (graceful stop)
 *
 * Core NATS (not JetStream) carries routing: at most once, in order per sender, and still
 * flowing between the nodes on one side of a partition. A node that cannot reach NATS
 * serves its own clients and retries for ever; no NATS error ends the process.
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { NatsConnection, Msg, ConnectionOptions, Subscription as NatsSubscription } from '@nats-io/nats-core';
import type { ClusterBroker } from './broker-view.js';
import type { ClientInfo } from '../broker/hooks.js';
import type { Message } from '../mqtt/message.js';
import type { Config } from '../config/schema.js';
import { RC } from '../mqtt/reason-codes.js';
import { ClusterInterest, type InterestEntry } from './interest.js';
import { decodeMessage, encodeMessage } from './wire.js';
import { ClusterRetained } from './retained.js';
import type { ClusterStateStore } from './state.js';
import type { ClusterRules } from './rules.js';
import type { ClusterRuleBuffer } from './rule-buffer.js';
import type { ClusterSessions } from './sessions.js';
import { ClusterStats, type ClusterStatus, type PeerStatus } from './status.js';

export const HEARTBEAT_MS = 1000;
/** A node not heard from for this long is lost: its interest is dropped. */
export const PEER_TIMEOUT_MS = 4000;
/** Messages of the broker itself (wills, rule outputs) kept while NATS is unreachable: at most this many. */
export const OUTBOX_MAX = 10_000;
/** After NATS is back, the outbox waits this long (the other nodes' heartbeats and interest) before it is sent. */
const OUTBOX_SETTLE_MS = 2500;

/** A message of the broker itself kept for NATS; `stored`: a persistent session wants it (held back entirely until the stream has it). */
interface OutboxEntry {
  message: Message;
  stored: boolean;
}


interface Peer {
  name: string;
  seq: number;
  syncing: boolean;
  lastSeen: number;
  startedAt: number;
  clients: number;
  subscriptions: number;
  natsServer: string;
  version: string;
}

interface Heartbeat {
  n: string;
  seq: number;
  st: number;
  c: number;
  s: number;
  srv: string;
  v: string;
}

interface InterestDelta {
  n: string;
  seq: number;
  add?: InterestEntry[];
  rem?: InterestEntry[];
}

const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** Check the cluster settings; a message a user can act on, or undefined. */
export function clusterConfigProblem(config: Config): string | undefined {
  const name = config.clusterName;
  if (!NAME_RE.test(name)) return `EDB_CLUSTER_NAME=${name}: use 1 to 64 letters, digits, - or _ (it names NATS subjects and buckets)`;
  const node = nodeNameOf(config);
  if (!NAME_RE.test(node)) return `EDB_NODE_NAME=${node}: use 1 to 64 letters, digits, - or _ (the default is the host name; set EDB_NODE_NAME when the host name has other characters)`;
  const servers = serversOf(config);
  if (servers.length === 0) return 'EDB_CLUSTER_NATS is set but names no server; give nats://host:port[,nats://host:port...]';
  for (const s of servers) {
    if (!/^(nats|tls):\/\/[^\s/]+$/.test(s) && !/^[^\s/:]+:\d+$/.test(s)) return `EDB_CLUSTER_NATS: "${s}" is not a NATS address; give nats://host:port (or tls://host:port)`;
  }
  if (config.clusterNatsCert && !config.clusterNatsKey) return 'EDB_CLUSTER_NATS_CERT is set but EDB_CLUSTER_NATS_KEY is not; a client certificate needs its key';
  if (config.clusterNatsKey && !config.clusterNatsCert) return 'EDB_CLUSTER_NATS_KEY is set but EDB_CLUSTER_NATS_CERT is not';
  if (config.clusterNatsPassword && !config.clusterNatsUser) return 'EDB_CLUSTER_NATS_PASSWORD is set but EDB_CLUSTER_NATS_USER is not';
  return undefined;
}

export function nodeNameOf(config: Config): string {
  return config.nodeName ?? hostname().split('.')[0]!;
}

function serversOf(config: Config): string[] {
  return (config.clusterNats ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

export class ClusterNode {
  readonly name: string;
  readonly clusterName: string;
  readonly interest: ClusterInterest;
  readonly stats = new ClusterStats();
  readonly retainedSet: ClusterRetained;
  private nc: NatsConnection | undefined;
  private connected = false;
  private readonly peers = new Map<string, Peer>();
  private seq = 0;
  private pendingAdd: InterestEntry[] = [];
  private pendingRemove: InterestEntry[] = [];
  private flushScheduled = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** This run of the node (its heartbeats carry it; wills in the sessions bucket name it). */
  readonly startedAt = Date.now();
  private connectedAt = 0;
  private readonly outbox: OutboxEntry[] = [];
  private draining = false;
  private lastOutboxLog = 0;
  private readonly prefix: string;
  private lastError: string | undefined;
  private lastErrorLog = 0;
  private natsServer = '';
  private subs: NatsSubscription[] = [];
  /** Client ids whose local session ends once their connection here has closed (taken over elsewhere). */
  private readonly endAfterClose = new Set<string>();
  /** The cluster-wide state store, when the node has one (set before start()). */
  stateStore: ClusterStateStore | undefined;
  /** The cluster-wide rules document, when the node has a rules service (set before start()). */
  rules: ClusterRules | undefined;
  /** The lease: which node holds the rule buffer and sweeps expired state keys (set before start()). */
  ruleBuffer: ClusterRuleBuffer | undefined;
  /** Persistent sessions cluster-wide (set with useSessions() before start()). */
  sessions: ClusterSessions | undefined;

  constructor(
    private readonly broker: ClusterBroker,
    private readonly config: Config,
    private readonly log: Logger,
    private readonly version: string,
  ) {
    this.name = nodeNameOf(config);
    this.clusterName = config.clusterName;
    this.prefix = `edb.${this.clusterName}`;
    this.interest = new ClusterInterest(this.name);
    this.retainedSet = new ClusterRetained(broker, this.name, this.clusterName, config.clusterReplicas, log, this.stats);
    this.registerHooks();
    broker.forwardAcks = this;
  }

  /** Persistent sessions resume on any node (sessions.ts): before start(). */
  useSessions(sessions: ClusterSessions): void {
    this.sessions = sessions;
    sessions.bind(this.broker, {
      stats: this.stats,
      forward: (m) => this.forward(m),
      connected: () => this.connected,
      alive: (n) => this.peers.has(n),
      incarnation: (n) => (n === this.name ? this.startedAt : this.peers.get(n)?.startedAt),
      connectedFor: () => (this.connected ? Date.now() - this.connectedAt : -1),
      hold: (m) => this.hold(m, true),
      outboxBusy: () => this.outbox.length > 0 || this.draining,
    });
  }

  /** End the local copy of a session that went to another node; the cluster's bucket keeps it. */
  private endHere(clientId: string): boolean {
    this.sessions?.storage.handOver(clientId);
    const ended = this.broker.endSession(clientId);
    if (!ended) this.sessions?.storage.cancelHandOver(clientId);
    return ended;
  }

  // ------------------------------------------------------------ connection

  /** Start joining: returns at once; the connection is retried until close(). */
  start(): void {
    void this.connectLoop();
  }

  private async connectLoop(): Promise<void> {
    const { connect } = await import('@nats-io/transport-node');
    const servers = serversOf(this.config);
    const options: ConnectionOptions = {
      servers,
      name: `edb-${this.clusterName}-${this.name}`,
      noEcho: true, // what this node publishes never comes back to it
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1000,
      waitOnFirstConnect: true,
      // the servers in the order given: list the board's own NATS server first
      noRandomize: true,
      pingInterval: 2000,
      maxPingOut: 2,
      timeout: 2000,
    };
    const c = this.config;
    if (c.clusterNatsUser) {
      options.user = c.clusterNatsUser;
      if (c.clusterNatsPassword) options.pass = c.clusterNatsPassword;
    }
    if (c.clusterNatsToken) options.token = c.clusterNatsToken;
    if (c.clusterNatsCreds) {
      const { credsAuthenticator } = await import('@nats-io/nats-core');
      const { readFileSync } = await import('node:fs');
      options.authenticator = credsAuthenticator(readFileSync(c.clusterNatsCreds));
    }
    if (c.clusterNatsCa || c.clusterNatsCert) {
      options.tls = {
        ...(c.clusterNatsCa ? { caFile: c.clusterNatsCa } : {}),
        ...(c.clusterNatsCert ? { certFile: c.clusterNatsCert, keyFile: c.clusterNatsKey! } : {}),
      };
    }
    this.log.info({ servers, node: this.name, cluster: this.clusterName }, `cluster: joining ${this.clusterName} as ${this.name} through NATS at ${servers.join(', ')}`);
    // waitOnFirstConnect retries inside connect(); this loop only covers a connect() that
    // gives up (credentials refused, say): try again after a pause, never give up
    while (!this.closed) {
      try {
        const nc = await connect(options);
        if (this.closed) {
          await nc.close().catch(() => undefined);
          return;
        }
        this.nc = nc;
        void this.watchStatus(nc);
        await this.joined(nc);
        const err = await nc.closed();
        if (this.closed) return;
        this.noteError('the NATS connection closed', err ?? undefined);
      } catch (err) {
        this.noteError('cannot connect to NATS; retrying', err);
      }
      this.setConnected(false);
      await new Promise((r) => setTimeout(r, 2000).unref());
    }
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        switch (s.type) {
          case 'disconnect':
            this.setConnected(false);
            this.noteError(`lost the NATS server ${s.server}; reconnecting`);
            break;
          case 'reconnect':
            this.natsServer = nc.info?.server_name ?? s.server;
            this.log.info({ server: s.server, natsServer: this.natsServer }, `cluster: reconnected to NATS ${s.server}`);
            this.setConnected(true);
            this.announce();
            this.retainedSet.reconnected();
            break;
          case 'error':
            this.noteError('NATS error', s.error);
            break;
          default:
            break;
        }
      }
    } catch (err) {
      this.noteError('NATS status', err);
    }
  }

  private async joined(nc: NatsConnection): Promise<void> {
    const p = this.prefix;
    const on = (subject: string, what: string, handle: (m: Msg) => void): NatsSubscription =>
      nc.subscribe(subject, {
        callback: (err, m) => {
          if (err) this.noteError(`subscription ${what}`, err);
          else this.guard(what, () => handle(m));
        },
      });
    this.subs = [
      on(`${p}.msg.${this.name}`, 'forwarded', (m) => this.onForwarded(m)),
      on(`${p}.hb`, 'heartbeat', (m) => this.onHeartbeat(m.json<Heartbeat>())),
      on(`${p}.interest`, 'interest', (m) => this.onDelta(m.json<InterestDelta>())),
      on(`${p}.sync.${this.name}`, 'sync', (m) => void m.respond(JSON.stringify({ n: this.name, seq: this.seq, entries: this.interest.localEntries() }))),
      on(`${p}.online`, 'online', (m) => this.onRemoteConnect(m.json<{ id: string; n: string; at: number }>())),
      on(`${p}.bye`, 'bye', (m) => this.lose(m.json<{ n: string }>().n, 'left')),
    ];
    const sessions = this.sessions;
    if (sessions) this.subs.push(on(`${p}.release.${this.name}`, 'release', (m) => void sessions.onRelease(m).catch((err) => this.noteError('releasing a session', err))));
    await nc.flush();
    this.natsServer = nc.info?.server_name ?? '';
    this.setConnected(true);
    this.log.info({ natsServer: this.natsServer, node: this.name }, `cluster: joined ${this.clusterName} as ${this.name} (NATS server ${this.natsServer})`);
    this.heartbeatTimer ??= setInterval(() => this.tick(), HEARTBEAT_MS);
    this.heartbeatTimer.unref();
    this.announce();
    await Promise.all([this.retainedSet.attach(nc), this.stateStore?.attach(nc), this.rules?.attach(nc), this.ruleBuffer?.attach(nc), this.sessions?.attach(nc)]);
  }

  private setConnected(up: boolean): void {
    if (this.connected === up) return;
    this.connected = up;
    if (up) this.connectedAt = Date.now();
    if (!up) this.log.warn({ node: this.name }, 'cluster: not connected to NATS; serving local clients only until it is back');
  }

  /** A NATS error: counted, remembered for the status, logged at most every 10 s. */
  private noteError(what: string, err?: unknown): void {
    this.stats.natsErrors++;
    const text = err instanceof Error ? err.message : err !== undefined ? String(err) : '';
    this.lastError = text ? `${what}: ${text}` : what;
    const now = Date.now();
    if (now - this.lastErrorLog >= 10_000) {
      this.lastErrorLog = now;
      this.log.warn({ err: text || undefined, node: this.name }, `cluster: ${what}`);
    }
  }

  /** A handler that throws (a bad message from a peer) is counted, never fatal. */
  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.stats.badMessages++;
      this.noteError(`bad ${what} message`, err);
    }
  }

  // ------------------------------------------------------------ membership

  private tick(): void {
    const now = Date.now();
    for (const peer of [...this.peers.values()]) if (now - peer.lastSeen > PEER_TIMEOUT_MS) this.lose(peer.name, 'not heard from');
    this.announce();
    if (this.outbox.length > 0 && !this.draining && this.connected && now - this.connectedAt >= OUTBOX_SETTLE_MS && [...this.peers.values()].every((p) => !p.syncing && p.seq >= 0)) {
      void this.drain().catch((err) => this.noteError('sending the outbox', err));
    }
  }

  // ------------------------------------------------------------ outbox

  /**
   * A message of the broker itself (a will, a rule's output, a console or bridge message), not
   * a $SYS update nor a state-store answer: what the broker accepted on its own, with no client
   * to send it again.
   */
  private own(message: Message, info: ClientInfo | undefined): boolean {
    if (info !== undefined || message.fromNode !== undefined) return false;
    const o = message.origin;
    return o !== '$SYS' && o !== 'state' && !message.topic.startsWith('$SYS');
  }

  /**
   * Keep a message of the broker's own for when NATS is back (false: the outbox is full; it is
   * delivered on this node only). `stored`: a persistent session wants it: it is not delivered
   * anywhere before the stream has it.
   */
  private hold(message: Message, stored: boolean): boolean {
    if (this.outbox.length >= OUTBOX_MAX) {
      this.stats.outboxDropped++;
      this.outboxLog(`cluster: the outbox is full (${OUTBOX_MAX} messages); a message of this broker (${message.origin ?? 'broker'}, ${message.topic}) is delivered on this node only`, true);
      return false;
    }
    this.outbox.push({ message, stored });
    this.stats.outboxQueued = this.outbox.length;
    this.outboxLog(`cluster: NATS unreachable; messages of this broker (wills, rule outputs) wait in the outbox (${this.outbox.length}) until it is back`);
    return true;
  }

  private outboxLog(text: string, error = false): void {
    const now = Date.now();
    if (now - this.lastOutboxLog < 10_000) return;
    this.lastOutboxLog = now;
    if (error) this.log.error({ outbox: this.outbox.length }, text);
    else this.log.warn({ outbox: this.outbox.length }, text);
  }

  /** NATS is back and the other nodes' interest known: send the outbox, in order. */
  private async drain(): Promise<void> {
    this.draining = true;
    let sent = 0;
    try {
      while (this.outbox.length > 0 && this.connected && !this.closed) {
        const e = this.outbox[0]!;
        if (e.stored) {
          if (!this.sessions || !(await this.sessions.storeHeld(e.message))) break; // JetStream not ready: the next tick tries again
        } else this.forward(e.message, false);
        this.outbox.shift();
        this.stats.outboxSent++;
        sent++;
      }
    } finally {
      this.draining = false;
      this.stats.outboxQueued = this.outbox.length;
      if (sent > 0) this.log.info({ sent, left: this.outbox.length }, `cluster: ${sent} messages of this broker sent from the outbox now that NATS is back`);
    }
  }

  private announce(): void {
    if (!this.connected || !this.nc) return;
    const hb: Heartbeat = { n: this.name, seq: this.seq, st: this.startedAt, c: this.broker.stats.clientsConnected, s: this.broker.subscriptionCount(), srv: this.natsServer, v: this.version };
    this.publish(`${this.prefix}.hb`, JSON.stringify(hb));
  }

  private onHeartbeat(hb: Heartbeat): void {
    if (typeof hb.n !== 'string' || hb.n === this.name) return;
    let peer = this.peers.get(hb.n);
    if (!peer) {
      peer = { name: hb.n, seq: -1, syncing: false, lastSeen: 0, startedAt: hb.st, clients: 0, subscriptions: 0, natsServer: '', version: '' };
      this.peers.set(hb.n, peer);
      this.log.info({ peer: hb.n }, `cluster: node ${hb.n} is up`);
      this.announce(); // let it know us at once
    }
    if (peer.startedAt !== hb.st) {
      // it restarted: what we knew of its interest is gone
      peer.startedAt = hb.st;
      peer.seq = -1;
    }
    peer.lastSeen = Date.now();
    peer.clients = hb.c;
    peer.subscriptions = hb.s;
    peer.natsServer = hb.srv;
    peer.version = hb.v;
    if (peer.seq !== hb.seq) this.resync(peer);
  }

  private onDelta(d: InterestDelta): void {
    if (d.n === this.name) return;
    const peer = this.peers.get(d.n);
    if (!peer || peer.syncing) return; // its heartbeat will bring a sync
    if (d.seq <= peer.seq) return;
    if (d.seq !== peer.seq + 1) return this.resync(peer);
    for (const e of d.rem ?? []) this.interest.removeRemote(d.n, e);
    for (const e of d.add ?? []) this.interest.addRemote(d.n, e);
    peer.seq = d.seq;
  }

  private resync(peer: Peer): void {
    if (peer.syncing || !this.nc || !this.connected) return;
    peer.syncing = true;
    const nc = this.nc;
    nc.request(`${this.prefix}.sync.${peer.name}`, '', { timeout: 2000 })
      .then((reply) => {
        const r = reply.json<{ n: string; seq: number; entries: InterestEntry[] }>();
        if (this.peers.get(peer.name) !== peer) return;
        this.interest.setRemote(peer.name, r.entries.filter((e) => typeof e.filter === 'string'));
        peer.seq = r.seq;
      })
      .catch((err) => this.noteError(`interest sync with ${peer.name}`, err))
      .finally(() => {
        peer.syncing = false;
      });
  }

  private lose(name: string, why: string): void {
    if (name === this.name || !this.peers.delete(name)) return;
    this.interest.dropRemote(name);
    this.log.warn({ peer: name, why }, `cluster: node ${name} is gone (${why}); its interest is dropped`);
  }

  // ------------------------------------------------------------ hooks

  private registerHooks(): void {
    const node = this;
    this.broker.addHooks({
      onRoutingChange(added, filter, group) {
        const entry: InterestEntry = group === undefined ? { filter } : { filter, group };
        if (added ? node.interest.addLocal(entry) : node.interest.removeLocal(entry)) node.queueDelta(added, entry);
      },
      onPublish(message, info) {
        // a message a persistent session (on any node) wants waits for the replicated stream
        if (node.sessions?.intercept(message, info, node.own(message, info))) return true;
        // the broker's own message while NATS is unreachable (or an older one still waits):
        // delivered here now, to the other nodes from the outbox
        if (node.own(message, info) && (!node.connected || node.outbox.length > 0 || node.draining) && node.hold(message, false)) {
          if (message.retain) node.retainedSet.stored(message);
          return false;
        }
        node.forward(message);
        return false;
      },
      onConnect(client: ClientInfo) {
        node.publish(`${node.prefix}.online`, JSON.stringify({ id: client.clientId, n: node.name, at: client.connectedAt }));
      },
      onDisconnect(client: ClientInfo) {
        if (!node.endAfterClose.delete(client.clientId)) return;
        const id = client.clientId;
        setImmediate(() => node.endHere(id));
      },
    });
  }

  private queueDelta(added: boolean, entry: InterestEntry): void {
    (added ? this.pendingAdd : this.pendingRemove).push(entry);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // a SUBSCRIBE of many filters goes out as one change
    setImmediate(() => this.flushDelta());
  }

  private flushDelta(): void {
    this.flushScheduled = false;
    if (this.pendingAdd.length === 0 && this.pendingRemove.length === 0) return;
    const d: InterestDelta = { n: this.name, seq: ++this.seq };
    if (this.pendingAdd.length) d.add = this.pendingAdd;
    if (this.pendingRemove.length) d.rem = this.pendingRemove;
    this.pendingAdd = [];
    this.pendingRemove = [];
    // while disconnected the change is not sent: the sequence moved on, so peers re-sync
    this.publish(`${this.prefix}.interest`, JSON.stringify(d));
  }

  /** A message published on this node: to the nodes that want it (and the retained bucket). */
  private forward(message: Message, retained = true): void {
    if (message.fromNode !== undefined) return;
    if (message.topic.charCodeAt(0) === 36 /* $ */ && message.topic.startsWith('$SYS')) return; // $SYS is per node
    if (message.retain && retained) this.retainedSet.stored(message);
    const plan = this.interest.plan(message.topic);
    if (!plan) return;
    if (plan.localShares) message.shareGroups = plan.localShares;
    let plain: Uint8Array | undefined;
    let failed = false;
    for (const [node, shares] of plan.nodes) {
      const data = shares.length > 0 ? encodeMessage(message, this.name, shares) : (plain ??= encodeMessage(message, this.name));
      if (this.publish(`${this.prefix}.msg.${node}`, data)) this.stats.forwarded++;
      else failed = true;
    }
    if (message.qos > 0 && plan.nodes.size > 0) {
      if (failed) this.unsentCount++;
      else this.sentCount++;
    }
  }

  // ForwardAcks (broker/core.ts): the publish flow acknowledges forwarded QoS 1/2 messages
  // once NATS has them: one flush (PING/PONG) per turn of the event loop covers them all
  private sentCount = 0;
  private unsentCount = 0;
  private flushWaiters: ((err?: Error) => void)[] = [];
  private flushQueued = false;

  get sent(): number {
    return this.sentCount;
  }

  get unsent(): number {
    return this.unsentCount;
  }

  stored(message: Message): Promise<boolean> | undefined {
    return this.sessions?.stored(message);
  }

  onSent(cb: (err?: Error) => void): void {
    this.flushWaiters.push(cb);
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => {
      this.flushQueued = false;
      const waiters = this.flushWaiters;
      this.flushWaiters = [];
      const nc = this.nc;
      const done = (err?: Error): void => {
        for (const w of waiters) w(err);
      };
      if (!nc || nc.isClosed()) return done(new Error('not connected to NATS'));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('NATS did not confirm in 2 s')), 2000);
      });
      Promise.race([nc.flush(), timeout])
        .then(
          () => done(),
          (err: Error) => {
            this.noteError('forwarded messages not confirmed', err);
            done(err);
          },
        )
        .finally(() => clearTimeout(timer));
    });
  }

  private onForwarded(m: Msg): void {
    let decoded;
    try {
      decoded = decodeMessage(m.data);
    } catch (err) {
      this.stats.badMessages++;
      this.noteError('a malformed forwarded message', err);
      return;
    }
    const { message, from, sentAt, shares } = decoded;
    message.fromNode = from;
    message.shareGroups = new Set(shares ?? []);
    this.stats.received++;
    this.stats.latency(Date.now() - sentAt);
    try {
      this.broker.publish(message);
    } catch (err) {
      this.noteError('delivering a forwarded message', err);
    }
  }

  private onRemoteConnect(r: { id: string; n: string; at: number }): void {
    if (typeof r.id !== 'string' || r.n === this.name) return;
    const local = this.broker.client(r.id);
    if (local) {
      // [MQTT-5-3.1.4-3] the same client id on two nodes: the older connection is taken over
      const older = local.connectedAt < r.at || (local.connectedAt === r.at && this.name < r.n);
      if (!older) return;
      this.log.info({ clientId: r.id, node: r.n }, `cluster: session taken over by node ${r.n}`);
      this.stats.takeovers++;
      this.endAfterClose.add(r.id);
      this.broker.disconnectClient(r.id, RC.SESSION_TAKEN_OVER, `session taken over on node ${r.n}`);
      return;
    }
    // an offline session here is superseded by the one on that node
    if (this.endHere(r.id)) this.log.debug({ clientId: r.id, node: r.n }, 'cluster: session here ended (the client is on another node)');
  }

  /** Publish on NATS unless disconnected; errors are counted, never thrown. */
  private publish(subject: string, data: string | Uint8Array): boolean {
    const nc = this.nc;
    if (!nc || !this.connected) return false;
    try {
      nc.publish(subject, data);
      return true;
    } catch (err) {
      this.noteError(`publish to ${subject}`, err);
      return false;
    }
  }

  // ------------------------------------------------------------ views

  get isConnected(): boolean {
    return this.connected;
  }

  status(): ClusterStatus {
    const peers: PeerStatus[] = [...this.peers.values()].map((p) => ({
      name: p.name,
      running: true,
      clients: p.clients,
      subscriptions: p.subscriptions,
      interest: this.interest.remoteCount(p.name),
      natsServer: p.natsServer,
      version: p.version,
      lastSeenMs: Date.now() - p.lastSeen,
    }));
    const self: PeerStatus = {
      name: this.name,
      running: true,
      self: true,
      clients: this.broker.stats.clientsConnected,
      subscriptions: this.broker.subscriptionCount(),
      interest: this.interest.localCount,
      natsServer: this.connected ? this.natsServer : '',
      version: this.version,
      lastSeenMs: 0,
    };
    return {
      cluster: this.clusterName,
      node: this.name,
      connected: this.connected,
      natsServer: this.connected ? this.natsServer : undefined,
      lastError: this.lastError,
      jetstream: { ...this.retainedSet.state(), state: this.stateStore?.stateText ?? 'off', stateKeys: this.stateStore?.keys ?? 0, rules: this.rules?.stateText ?? 'off', rulesEtag: this.rules?.etag, lease: this.ruleBuffer?.stateText ?? 'off', ruleBufferHolder: this.ruleBuffer?.state().holder, ruleBufferFence: this.ruleBuffer?.state().fence ?? 0, sessions: this.sessions?.stateText ?? 'off', sessionRecords: this.sessions?.sessionCount ?? 0 },
      nodes: [self, ...peers].sort((a, b) => a.name.localeCompare(b.name)),
      stats: this.stats.snapshot(),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    const nc = this.nc;
    if (!nc) return;
    this.publish(`${this.prefix}.bye`, JSON.stringify({ n: this.name }));
    await this.ruleBuffer?.close();
    this.stateStore?.close();
    this.rules?.close();
    await this.sessions?.close();
    await this.retainedSet.close();
    for (const s of this.subs) s.unsubscribe();
    try {
      await nc.drain();
    } catch {
      await nc.close().catch(() => undefined);
    }
  }
}
