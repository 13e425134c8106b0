/**
 * KEYNOTIFY: which clients watch which keys, and the notifications a change of a watched key
 * sends them ([state-store: Notifications]); also in-process watchers (the console's "watch a
 * key", pushed to the browser), told of the same changes without going through MQTT.
 */
import type { BrokerApi } from '../broker/api.js';
import type { StateCounters } from './counters.js';
import { formatHlc, type Hlc } from './hlc.js';
import { CONTENT_TYPE, notifyTopic } from './protocol.js';
import { DELETE_NOTIFICATION, encodeSetNotification } from './resp.js';

/** KEYNOTIFY registrations one client may hold; more are refused as over quota. */
export const MAX_REGISTRATIONS_PER_CLIENT = 10_000;

/** An in-process watcher: the new value after a SET, undefined after a delete or expiry. */
export type KeyListener = (value: Buffer | undefined, version: string) => void;

export class KeyNotifyRegistry {
  /** key (latin1) -> client ids */
  private readonly watchers = new Map<string, Set<string>>();
  /** client id -> keys (latin1) */
  private readonly watchedBy = new Map<string, Set<string>>();
  /** In-process watchers by key (latin1). */
  private readonly listeners = new Map<string, Set<KeyListener>>();
  /** Registrations held, over all clients. */
  registrations = 0;

  constructor(
    private readonly broker: Pick<BrokerApi, 'publish'>,
    private readonly counters: StateCounters,
  ) {}

  /** Someone watches `key`. */
  watches(key: Buffer): boolean {
    const k = key.toString('latin1');
    return this.watchers.has(k) || this.listeners.has(k);
  }

  /** Calls `listener` after each change of `key`, until the returned function is called. */
  listen(key: Buffer, listener: KeyListener): () => void {
    const k = key.toString('latin1');
    let set = this.listeners.get(k);
    if (!set) this.listeners.set(k, (set = new Set()));
    set.add(listener);
    return () => {
      const s = this.listeners.get(k);
      if (s?.delete(listener) && s.size === 0) this.listeners.delete(k);
    };
  }

  /**
   * Notifies the key's watchers of a SET of `value`, or of a delete when `value` is undefined.
   * The notification is encoded only when someone watches the key (most writes have no watcher).
   */
  notify(key: Buffer, value: Buffer | undefined, version: Hlc): void {
    if (this.listeners.size > 0) this.tellListeners(key, value, version);
    if (this.watchers.size === 0) return;
    const ids = this.watchers.get(key.toString('latin1'));
    if (!ids || ids.size === 0) return;
    const payload = value === undefined ? DELETE_NOTIFICATION : encodeSetNotification(value);
    const ts = formatHlc(version);
    for (const id of ids) {
      this.counters.notifications++;
      this.broker.publish({
        topic: notifyTopic(id, key),
        payload,
        qos: 1,
        retain: false,
        properties: { contentType: CONTENT_TYPE, userProperties: { __ts: ts } },
        origin: 'state',
      });
    }
  }

  private tellListeners(key: Buffer, value: Buffer | undefined, version: Hlc): void {
    const set = this.listeners.get(key.toString('latin1'));
    if (!set) return;
    const ts = formatHlc(version);
    for (const listener of [...set]) {
      try {
        listener(value, ts);
      } catch {
        // a watcher's failure (a closed stream) is its own: the write stands
      }
    }
  }

  /** False when the client already holds MAX_REGISTRATIONS_PER_CLIENT. */
  register(clientId: string, key: Buffer): boolean {
    const k = key.toString('latin1');
    let keys = this.watchedBy.get(clientId);
    if (keys?.has(k)) return true;
    if (keys && keys.size >= MAX_REGISTRATIONS_PER_CLIENT) return false;
    if (!keys) this.watchedBy.set(clientId, (keys = new Set()));
    keys.add(k);
    let ids = this.watchers.get(k);
    if (!ids) this.watchers.set(k, (ids = new Set()));
    ids.add(clientId);
    this.registrations++;
    return true;
  }

  /** False when the client did not watch the key. */
  unregister(clientId: string, key: Buffer): boolean {
    const k = key.toString('latin1');
    const ids = this.watchers.get(k);
    if (!ids?.delete(clientId)) return false;
    if (ids.size === 0) this.watchers.delete(k);
    const keys = this.watchedBy.get(clientId);
    keys?.delete(k);
    if (keys?.size === 0) this.watchedBy.delete(clientId);
    this.registrations--;
    return true;
  }

  /** [state-store: Notifications] registrations end when the client disconnects. */
  dropClient(clientId: string): void {
    const keys = this.watchedBy.get(clientId);
    if (!keys) return;
    for (const k of keys) {
      const ids = this.watchers.get(k);
      ids?.delete(clientId);
      if (ids?.size === 0) this.watchers.delete(k);
      this.registrations--;
    }
    this.watchedBy.delete(clientId);
  }

  clear(): void {
    this.listeners.clear();
    this.watchers.clear();
    this.watchedBy.clear();
    this.registrations = 0;
  }
}
