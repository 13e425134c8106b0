/**
 * The state store service: answers the state-store protocol (docs/state-store.md,
 * /work/shared/specs/state-store.md) on the invoke topic, through the broker's hooks.
 *
 * Requests are consumed in the onPublish hook (they are never routed to subscribers), run
 * synchronously against the table, and answered with broker.publish (origin "state").
 */
import type { Logger } from 'pino';
import type { BrokerApi } from '../broker/api.js';
import type { ClientInfo } from '../broker/hooks.js';
import type { Message, UserProperties } from '../mqtt/message.js';
import type { Config } from '../config/schema.js';
import type { SnapshotSection } from '../persistence/snapshot.js';
import { parseStateStoreSection, StateStoreAuthorizer, type Access } from './authorization.js';
import { formatHlc, HybridLogicalClock, parseHlc, type Hlc } from './hlc.js';
import {
  decodeRequest, DELETE_NOTIFICATION, encodeBulk, encodeError, encodeInteger, encodeSetNotification, NULL_BULK, OK,
} from './resp.js';
import { codes, createStateTable, recordLength, type StateTable, type TableStats } from './table.js';
import { ERRORS, INVOKE_TOPIC, notifyTopic, RESERVED_PREFIX } from './protocol.js';
import { isValidTopicName } from '../topics/validate.js';
import { RC } from '../mqtt/reason-codes.js';
import { decodeStateWrite, encodeStateWrite, OP_DEL, OP_SET, OP_VDEL } from './write-log.js';
import type { BrokerStorage } from '../storage/store.js';

export { STATE_STORE_ID, INVOKE_TOPIC, RESERVED_PREFIX, notifyTopic, ERRORS } from './protocol.js';

const COMMANDS = ['GET', 'SET', 'DEL', 'VDEL', 'KEYNOTIFY'] as const;
type Command = (typeof COMMANDS)[number];

const CONTENT_TYPE = 'application/octet-stream';
const SWEEP_MAX_PER_TICK = 10_000;
/** KEYNOTIFY registrations one client may hold; more are refused as over quota. */
export const MAX_REGISTRATIONS_PER_CLIENT = 10_000;

export interface StateStoreMetrics {
  keys: number;
  bytes: number;
  memoryBytes: number | undefined;
  maxKeys: number;
  maxBytes: number;
  /** Requests by command ("GET", ..., "invalid" for requests that name none). */
  ops: Record<string, number>;
  /** `-ERR` answers by message. */
  errors: Record<string, number>;
  notifications: number;
  expired: number;
  keyNotifyRegistrations: number;
}

export interface StateStoreService {
  readonly table: StateTable;
  readonly clock: HybridLogicalClock;
  /** The `state` backup section (register it with the BackupManager). */
  snapshotSection(): SnapshotSection;
  metrics(): StateStoreMetrics;
  /** One line for the status page. */
  statusLine(): string;
  /**
   * The console's admin API (/api/state): keys in byte order from `after`, with a prefix.
   * Walks the whole table per page (fine for a console; not for a hot path).
   */
  listKeys(prefix: Buffer, after: Buffer | undefined, limit: number): { keys: StateKeyInfo[]; more: boolean };
  /** One key's value, version and expiry (0: none). */
  readKey(key: Buffer): { value: Buffer; version: string; expiresAt: number } | undefined;
  /** SET from the console: versioned and notified to watchers like an MQTT SET. */
  writeKey(key: Buffer, value: Buffer, ttlMs: number): { ok: true; version: string } | { ok: false; error: string };
  /** DEL from the console: true deleted, false absent. */
  deleteKey(key: Buffer): { ok: true; deleted: boolean } | { ok: false; error: string };
  /** Run the expiry sweep now (the timer does it every stateSweepIntervalMs). */
  sweep(): number;
  /**
   * EDB_STORAGE=durable: rebuild the table from the stored snapshot and the writes since
   * (before listeners open). Returns the keys loaded and the writes replayed.
   */
  loadFromStorage(): { keys: number; writes: number };
  /** Durable storage: store the whole table now as its snapshot (after a backup was imported). */
  checkpoint(): void;
  /** In-process read, no round trip (the rules engine's state()): the current value, or undefined. */
  read(key: Buffer): Buffer | undefined;
  /**
   * In-process SET (the rules engine's set_state): a new version, KEYNOTIFY notifications and
   * quotas as for a client's SET; `px` ms expiry. Returns "OK" or the error the request would get.
   */
  write(key: Buffer, value: Buffer, px?: number): string;
  close(): Promise<void>;
}

export interface StateKeyInfo {
  key: Buffer;
  bytes: number;
  version: string;
  expiresAt: number;
}

export interface StateStoreOptions {
  /** "wasm" (default) or the Map reference. */
  table?: 'wasm' | 'map';
  /** Clock for expiry and versions (tests). */
  now?: () => number;
  /**
   * Durable storage: each write that changes the table is stored, and its answer sent only
   * once it is on disk (a SET answered OK survives a crash).
   */
  storage?: BrokerStorage;
}

/** Writes between two compactions of the stored write log into a snapshot. */
const COMPACT_EVERY = 10_000;

/** The answer to one request. */
interface Answer {
  payload: Buffer;
  version?: Hlc;
  /** The request changed the table and the change was handed to durable storage. */
  stored?: boolean;
}

function firstProperty(props: UserProperties | undefined, name: string): string | undefined {
  const v = props?.[name];
  return Array.isArray(v) ? v[0] : v;
}


export function createStateStoreService(broker: BrokerApi, config: Config, log: Logger, options: StateStoreOptions = {}): StateStoreService {
  const section = parseStateStoreSection(config.sections['stateStore']);
  const authorizer = new StateStoreAuthorizer(section.authorization);
  const now = options.now ?? Date.now;
  const clock = new HybridLogicalClock(section.nodeId ?? 'edb', now);
  const table = createStateTable(options.table ?? 'wasm');
  table.setLimits(config.stateMaxKeys, config.stateMaxBytes);

  const ops: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let notifications = 0;
  let expired = 0;

  // KEYNOTIFY registrations: key (latin1) -> client ids, and client id -> keys
  const watchers = new Map<string, Set<string>>();
  const watchedBy = new Map<string, Set<string>>();
  let registrations = 0;

  const slog = log.child({ part: 'state' });

  function error(message: string): Answer {
    errors[message] = (errors[message] ?? 0) + 1;
    return { payload: encodeError(message) };
  }

  /**
   * Notifies the key's watchers of a SET of `value`, or of a delete when `value` is undefined.
   * The notification is encoded only when someone watches the key (most writes have no watcher).
   */
  function notify(key: Buffer, value: Buffer | undefined, version: Hlc): void {
    if (watchers.size === 0) return;
    const ids = watchers.get(key.toString('latin1'));
    if (!ids || ids.size === 0) return;
    const payload = value === undefined ? DELETE_NOTIFICATION : encodeSetNotification(value);
    const ts = formatHlc(version);
    for (const id of ids) {
      notifications++;
      broker.publish({
        topic: notifyTopic(id, key),
        payload,
        qos: 1,
        retain: false,
        properties: { contentType: CONTENT_TYPE, userProperties: { __ts: ts } },
        origin: 'state',
      });
    }
  }

  function notifyExpired(key: Buffer): void {
    expired++;
    if (watchers.has(key.toString('latin1'))) notify(key, undefined, clock.tick());
  }

  /** False when the client already holds MAX_REGISTRATIONS_PER_CLIENT. */
  function register(clientId: string, key: Buffer): boolean {
    const k = key.toString('latin1');
    let keys = watchedBy.get(clientId);
    if (keys?.has(k)) return true;
    if (keys && keys.size >= MAX_REGISTRATIONS_PER_CLIENT) return false;
    if (!keys) watchedBy.set(clientId, (keys = new Set()));
    keys.add(k);
    let ids = watchers.get(k);
    if (!ids) watchers.set(k, (ids = new Set()));
    ids.add(clientId);
    registrations++;
    return true;
  }

  function unregister(clientId: string, key: Buffer): boolean {
    const k = key.toString('latin1');
    const ids = watchers.get(k);
    if (!ids?.delete(clientId)) return false;
    if (ids.size === 0) watchers.delete(k);
    const keys = watchedBy.get(clientId);
    keys?.delete(k);
    if (keys?.size === 0) watchedBy.delete(clientId);
    registrations--;
    return true;
  }

  function dropClient(clientId: string): void {
    const keys = watchedBy.get(clientId);
    if (!keys) return;
    for (const k of keys) {
      const ids = watchers.get(k);
      ids?.delete(clientId);
      if (ids?.size === 0) watchers.delete(k);
      registrations--;
    }
    watchedBy.delete(clientId);
  }

  /** Parse a `__ts` / `__ft`: undefined when absent, an Answer when refused. */
  function timestamp(text: string | undefined, future: string): Hlc | Answer | undefined {
    if (text === undefined) return undefined;
    const t = parseHlc(text);
    if (!t) return error(ERRORS.malformedTimestamp);
    if (clock.tooFarAhead(t)) return error(future);
    return t;
  }

  const isAnswer = (x: unknown): x is Answer => typeof x === 'object' && x !== null && 'payload' in x;

  function execute(payload: Buffer, client: ClientInfo, props: UserProperties | undefined): Answer {
    const parts = decodeRequest(payload);
    if (!parts) {
      ops['invalid'] = (ops['invalid'] ?? 0) + 1;
      return error(ERRORS.syntax);
    }
    const verb = parts[0]!.toString('latin1') as Command;
    if (!COMMANDS.includes(verb)) {
      ops['invalid'] = (ops['invalid'] ?? 0) + 1;
      return error(ERRORS.unknownCommand);
    }
    ops[verb] = (ops[verb] ?? 0) + 1;
    const n = parts.length;

    // arity and options
    let flags = 0;
    let px = 0;
    let stop = false;
    switch (verb) {
      case 'GET':
      case 'DEL':
        if (n !== 2) return error(ERRORS.arity);
        break;
      case 'VDEL':
        if (n !== 3) return error(ERRORS.arity);
        break;
      case 'KEYNOTIFY':
        if (n !== 2 && n !== 3) return error(ERRORS.arity);
        if (n === 3) {
          if (parts[2]!.toString('latin1') !== 'STOP') return error(ERRORS.syntax);
          stop = true;
        }
        break;
      case 'SET': {
        if (n < 3) return error(ERRORS.arity);
        for (let i = 3; i < n; i++) {
          const opt = parts[i]!.toString('latin1');
          if (opt === 'NX' || opt === 'NEX') {
            if (flags !== 0) return error(ERRORS.syntax);
            flags = opt === 'NX' ? codes.SET_NX : codes.SET_NEX;
          } else if (opt === 'PX') {
            if (px !== 0 || i + 1 >= n) return error(ERRORS.syntax);
            const text = parts[++i]!.toString('latin1');
            if (!/^\d{1,15}$/.test(text) || Number(text) < 1) return error(ERRORS.syntax);
            px = Number(text);
          } else return error(ERRORS.syntax);
        }
        break;
      }
    }

    const key = parts[1]!;
    if (key.length === 0) return error(ERRORS.emptyKey);

    const write = verb === 'SET' || verb === 'DEL' || verb === 'VDEL';
    const tsText = firstProperty(props, '__ts');
    if (verb === 'SET' && tsText === undefined) return error(ERRORS.missingTimestamp);
    const ts = timestamp(tsText, ERRORS.timestampFuture);
    if (isAnswer(ts)) return ts;
    let ft: Hlc | undefined;
    if (write) {
      const f = timestamp(firstProperty(props, '__ft'), ERRORS.fencingFuture);
      if (isAnswer(f)) return f;
      ft = f;
    }

    const access: Access = write ? 'write' : 'read';
    if (!authorizer.allowed(client, key, access)) return error(ERRORS.notAuthorized);
    // no room on disk: a write that could not be made durable is refused before it is made
    if (write && storage?.full) return error(ERRORS.quota);

    const t = now();
    switch (verb) {
      case 'GET': {
        if (ts) clock.observe(ts);
        const value = table.get(key, t);
        if (table.last.expired) notifyExpired(key);
        if (!value) return { payload: NULL_BULK };
        return { payload: encodeBulk(value), version: lastVersion() };
      }
      case 'SET': {
        const version = clock.tick(ts);
        const value = parts[2]!;
        const expiresAt = px ? t + px : 0;
        const r = table.set(key, value, flags, version.wall, version.counter, expiresAt, ft, t);
        if (r === codes.RESULT_OK) {
          // a key that had expired and is now set again: the SET notification tells it all
          if (table.last.expired) expired++;
          const stored = record({ op: OP_SET, now: t, flags, version, expiresAt, ft, key, value });
          notify(key, value, version);
          return { payload: OK, version, stored };
        }
        if (table.last.expired) notifyExpired(key);
        if (r === codes.RESULT_NONE) return { payload: encodeInteger(-1), version: lastVersion() };
        return tableError(r);
      }
      case 'DEL':
      case 'VDEL': {
        if (ts) clock.observe(ts);
        const r = table.delete(key, verb === 'VDEL' ? parts[2] : undefined, ft, t);
        if (table.last.expired) notifyExpired(key);
        if (r === codes.RESULT_OK) {
          const version = clock.tick(ts);
          const stored = record({ op: verb === 'VDEL' ? OP_VDEL : OP_DEL, now: t, flags: 0, version, expiresAt: 0, ft, key, value: verb === 'VDEL' ? parts[2] : undefined });
          notify(key, undefined, version);
          return { payload: encodeInteger(1), version, stored };
        }
        if (r === codes.RESULT_NONE) return { payload: encodeInteger(0) };
        if (r === codes.RESULT_MISMATCH) return { payload: encodeInteger(-1), version: lastVersion() };
        return tableError(r);
      }
      case 'KEYNOTIFY': {
        if (ts) clock.observe(ts);
        if (stop) return unregister(client.clientId, key) ? { payload: OK } : { payload: encodeInteger(0) };
        return register(client.clientId, key) ? { payload: OK } : error(ERRORS.quota);
      }
    }
  }

  const storage = options.storage;
  let writesSinceCompaction = 0;

  /** Hand a write to durable storage; false without one. */
  function record(w: Parameters<typeof encodeStateWrite>[0]): boolean {
    if (!storage) return false;
    storage.appendStateOp(encodeStateWrite(w));
    if (++writesSinceCompaction >= COMPACT_EVERY) compact();
    return true;
  }

  function compact(): void {
    if (!storage) return;
    writesSinceCompaction = 0;
    storage.compactState(Buffer.from(sectionSave()));
  }

  function lastVersion(): Hlc {
    return { wall: table.last.versionWall, counter: table.last.versionCounter, node: clock.node };
  }

  function tableError(r: number): Answer {
    switch (r) {
      case codes.ERR_FENCING_REQUIRED:
        return error(ERRORS.fencingRequired);
      case codes.ERR_FENCING_STALE:
        return error(ERRORS.fencingStale);
      case codes.ERR_NO_MEMORY:
        slog.warn('state store: linear memory cannot grow; answering as over quota');
        return error(ERRORS.quota);
      default:
        return error(ERRORS.quota);
    }
  }

  function onPublish(message: Message, client: ClientInfo | undefined): boolean {
    if (message.topic !== INVOKE_TOPIC) return false;
    if (!client || client.protocolVersion !== 5) {
      // the protocol is MQTT 5 only; without a client there is no one to answer or authorize
      slog.debug({ sender: message.senderId, origin: message.origin }, 'state store: request not from an MQTT 5 client; dropped');
      return true;
    }
    const props = message.properties;
    const responseTopic = props?.responseTopic;
    const correlationData = props?.correlationData;
    if (responseTopic === undefined || correlationData === undefined) {
      errors['no response topic or correlation data'] = (errors['no response topic or correlation data'] ?? 0) + 1;
      return true;
    }
    if (!isValidTopicName(responseTopic) || responseTopic === INVOKE_TOPIC || responseTopic === RESERVED_PREFIX || responseTopic.startsWith(`${RESERVED_PREFIX}/`)) {
      errors['forbidden response topic'] = (errors['forbidden response topic'] ?? 0) + 1;
      slog.info({ clientId: client.clientId, responseTopic }, 'state store: forbidden response topic; disconnecting the client');
      const id = client.clientId;
      // not from inside the broker's publish flow
      queueMicrotask(() => broker.disconnectClient(id, RC.PROTOCOL_ERROR, 'state store: response topic not allowed'));
      return true;
    }
    // [state-store: Requests] the response topic must be one the client may subscribe to:
    // otherwise the broker would publish, in the client's name, where it may not listen.
    // Nobody to answer: the request is dropped and counted.
    if (!broker.maySubscribe(client, responseTopic)) {
      errors['response topic not authorized'] = (errors['response topic not authorized'] ?? 0) + 1;
      slog.debug({ clientId: client.clientId, responseTopic }, 'state store: the client may not subscribe to its response topic; request dropped');
      return true;
    }
    let answer: Answer;
    try {
      answer = execute(message.payload, client, props?.userProperties);
    } catch (err) {
      // a bug here must not take the connection or the broker down
      slog.error({ err: (err as Error).message, clientId: client.clientId }, 'state store: request failed');
      answer = error(ERRORS.syntax);
    }
    const userProperties: UserProperties = { __stat: '200' };
    if (answer.version) userProperties['__ts'] = formatHlc(answer.version);
    const reply = {
      topic: responseTopic,
      payload: answer.payload,
      qos: 1 as const,
      retain: false,
      properties: { correlationData, contentType: CONTENT_TYPE, userProperties },
      origin: 'state',
    };
    if (!answer.stored || !storage) broker.publish(reply);
    else {
      // [durable] the answer says OK only once the write is on disk
      storage.onDurable((err) => {
        if (err) {
          slog.error({ err: err.message, clientId: client.clientId }, 'state store: a write could not be stored; answered with an error');
          reply.payload = error(ERRORS.quota).payload;
          delete userProperties['__ts'];
        }
        broker.publish(reply);
      });
    }
    return true;
  }

  broker.addHooks({
    onPublish,
    onDisconnect(client) {
      // [state-store: Notifications] registrations end when the client disconnects
      dropClient(client.clientId);
    },
  });

  function sweep(): number {
    const removed = table.sweep(now(), SWEEP_MAX_PER_TICK, notifyExpired);
    table.maintain();
    return removed;
  }

  const sweepTimer = setInterval(() => {
    try {
      sweep();
    } catch (err) {
      slog.error({ err: (err as Error).message }, 'state store: sweep failed');
    }
  }, config.stateSweepIntervalMs);
  sweepTimer.unref();

  function stats(): TableStats {
    return table.stats();
  }

  const SECTION_VERSION = 1;
  /** Section header without the node id: version, count, node id length, clock wall, clock counter. */
  const HEADER = 4 + 4 + 2 + 8 + 4;

  function adminError(r: number): string {
    return tableError(r).payload.toString('latin1').replace(/^-/, '').trim();
  }

  function sectionSave(): Buffer {
    const node = Buffer.from(clock.node, 'utf8');
    const records = table.exportRecords(now());
    const head = Buffer.alloc(HEADER + node.length);
    head.writeUInt32LE(SECTION_VERSION, 0);
    head.writeUInt32LE(records.length === 0 ? 0 : table.size, 4);
    head.writeUInt16LE(node.length, 8);
    node.copy(head, 10);
    const last = clock.last;
    head.writeDoubleLE(last.wall, 10 + node.length);
    head.writeUInt32LE(last.counter, 18 + node.length);
    return Buffer.concat([head, ...records]);
  }

  function sectionRestore(data: Buffer): void {
    if (data.length < HEADER || data.readUInt32LE(0) !== SECTION_VERSION) throw new Error('state section: unknown version');
    const keys = data.readUInt32LE(4);
    const nodeLen = data.readUInt16LE(8);
    if (data.length < HEADER + nodeLen) throw new Error('state section: truncated header');
    clock.restore(data.readDoubleLE(10 + nodeLen), data.readUInt32LE(18 + nodeLen));
    // sized for the count up front: the bulk load never resizes
    table.clear(Math.min(keys, Math.floor(data.length / (codes.RECORD_HEADER + 1))));
    const loaded = table.importRecords(data.subarray(HEADER + nodeLen), now());
    slog.info({ keys: loaded }, 'state store restored');
  }

  return {
    table,
    clock,
    listKeys(prefix, after, limit) {
      const t = now();
      const found: StateKeyInfo[] = [];
      for (const chunk of table.exportRecords(t)) {
        let pos = 0;
        while (pos < chunk.length) {
          const len = recordLength(chunk, pos);
          const keyLen = chunk.readUInt32LE(pos);
          const key = chunk.subarray(pos + codes.RECORD_HEADER, pos + codes.RECORD_HEADER + keyLen);
          if (key.subarray(0, prefix.length).equals(prefix) && (after === undefined || Buffer.compare(key, after) > 0)) {
            found.push({
              key: Buffer.from(key),
              bytes: chunk.readUInt32LE(pos + 4),
              version: formatHlc({ wall: chunk.readDoubleLE(pos + 8), counter: chunk.readUInt32LE(pos + 16), node: clock.node }),
              expiresAt: chunk.readDoubleLE(pos + 24),
            });
          }
          pos += len;
        }
      }
      found.sort((a, b) => Buffer.compare(a.key, b.key));
      return { keys: found.slice(0, limit), more: found.length > limit };
    },
    readKey(key) {
      const t = now();
      const value = table.get(key, t);
      if (table.last.expired) notifyExpired(key);
      if (!value) return undefined;
      return { value, version: formatHlc(lastVersion()), expiresAt: table.last.expiresAt };
    },
    writeKey(key, value, ttlMs) {
      if (key.length === 0) return { ok: false, error: ERRORS.emptyKey };
      const t = now();
      const version = clock.tick();
      const r = table.set(key, value, 0, version.wall, version.counter, ttlMs > 0 ? t + ttlMs : 0, undefined, t);
      if (r !== codes.RESULT_OK) return { ok: false, error: adminError(r) };
      if (table.last.expired) expired++;
      ops['SET'] = (ops['SET'] ?? 0) + 1;
      notify(key, value, version);
      return { ok: true, version: formatHlc(version) };
    },
    deleteKey(key) {
      const t = now();
      const r = table.delete(key, undefined, undefined, t);
      if (table.last.expired) notifyExpired(key);
      if (r === codes.RESULT_NONE) return { ok: true, deleted: false };
      if (r !== codes.RESULT_OK) return { ok: false, error: adminError(r) };
      ops['DEL'] = (ops['DEL'] ?? 0) + 1;
      notify(key, undefined, clock.tick());
      return { ok: true, deleted: true };
    },
    snapshotSection(): SnapshotSection {
      return {
        name: 'state',
        // [layout] u32 version, u32 key count, u16 node id length, node id, f64 clock wall,
        // u32 clock counter, then snapshot records (assembly/state/codes.ts RECORD_HEADER)
        save: sectionSave,
        restore: sectionRestore,
        reset() {
          table.clear();
        },
      };
    },
    checkpoint() {
      compact();
    },
    loadFromStorage() {
      if (!storage) return { keys: 0, writes: 0 };
      const { snapshot, ops: writes } = storage.stateLog();
      if (snapshot) sectionRestore(snapshot);
      let replayed = 0;
      for (const raw of writes) {
        let w;
        try {
          w = decodeStateWrite(raw);
        } catch (err) {
          slog.error({ err: (err as Error).message }, 'state store: an unreadable stored write; skipped');
          continue;
        }
        if (w.op === OP_SET) table.set(w.key, w.value!, w.flags, w.version.wall, w.version.counter, w.expiresAt, w.ft, w.now);
        else table.delete(w.key, w.op === OP_VDEL ? w.value : undefined, w.ft, w.now);
        clock.restore(w.version.wall, w.version.counter);
        replayed++;
      }
      writesSinceCompaction = replayed;
      // one snapshot from now on: the next start replays nothing old
      if (replayed > 0) compact();
      slog.info({ keys: table.size, writes: replayed }, 'state store loaded from durable storage');
      return { keys: table.size, writes: replayed };
    },
    metrics(): StateStoreMetrics {
      const s = stats();
      return {
        keys: s.keys,
        bytes: s.dataBytes,
        memoryBytes: s.memoryBytes,
        maxKeys: config.stateMaxKeys,
        maxBytes: config.stateMaxBytes,
        ops: { ...ops },
        errors: { ...errors },
        notifications,
        expired,
        keyNotifyRegistrations: registrations,
      };
    },
    statusLine(): string {
      const s = stats();
      const mib = (n: number) => (n / 1048576).toFixed(1);
      const mem = s.memoryBytes !== undefined ? `, ${mib(s.memoryBytes)} MiB of memory` : '';
      return `State store: ${s.keys} of ${config.stateMaxKeys} keys, ${mib(s.dataBytes)} of ${mib(config.stateMaxBytes)} MiB${mem}, ${registrations} key notifications`;
    },
    sweep,
    read(key: Buffer): Buffer | undefined {
      if (key.length === 0) return undefined;
      const value = table.get(key, now());
      if (table.last.expired) notifyExpired(key);
      return value ?? undefined;
    },
    write(key: Buffer, value: Buffer, px?: number): string {
      if (key.length === 0) return ERRORS.emptyKey;
      ops['SET'] = (ops['SET'] ?? 0) + 1;
      const t = now();
      const version = clock.tick(undefined);
      if (storage?.full) return ERRORS.quota;
      const expiresAt = px ? t + px : 0;
      const r = table.set(key, value, 0, version.wall, version.counter, expiresAt, undefined, t);
      if (r === codes.RESULT_OK) {
        if (table.last.expired) expired++;
        // durable: stored with the next batch (a rule's write has no client waiting for its answer)
        record({ op: OP_SET, now: t, flags: 0, version, expiresAt, ft: undefined, key, value });
        notify(key, value, version);
        return 'OK';
      }
      if (table.last.expired) notifyExpired(key);
      const answer = tableError(r);
      return answer.payload.toString('utf8').replace(/^-/, '').trim();
    },
    async close() {
      clearInterval(sweepTimer);
      // the next start loads one snapshot instead of replaying every write
      if (storage && writesSinceCompaction > 0) compact();
      watchers.clear();
      watchedBy.clear();
      registrations = 0;
    },
  };
}
