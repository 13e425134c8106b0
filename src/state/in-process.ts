/**
 * The state store without a round trip: the console's admin API (/api/state) and the rules
 * engine's state() / set_state(). Writes are versioned, counted and notified to KEYNOTIFY
 * watchers like an MQTT client's.
 */
import { ERRORS } from './protocol.js';
import { formatHlc } from './hlc.js';
import type { StateKeyspace } from './keyspace.js';
import { codes, recordLength } from './table.js';
import { OP_DEL, OP_SET } from './write-log.js';

export interface StateKeyInfo {
  key: Buffer;
  bytes: number;
  version: string;
  expiresAt: number;
}

/** A table result code as the text of its error answer. */
function errorText(space: StateKeyspace, r: number): string {
  return space.tableError(r).payload.toString('latin1').replace(/^-/, '').trim();
}

/** Keys in byte order from `after`, with a prefix; walks the whole table (a console's page, not a hot path). */
export function listKeys(space: StateKeyspace, prefix: Buffer, after: Buffer | undefined, limit: number): { keys: StateKeyInfo[]; more: boolean } {
  const t = space.now();
  const found: StateKeyInfo[] = [];
  for (const chunk of space.table.exportRecords(t)) {
    let pos = 0;
    while (pos < chunk.length) {
      const len = recordLength(chunk, pos);
      const keyLen = chunk.readUInt32LE(pos);
      const key = chunk.subarray(pos + codes.RECORD_HEADER, pos + codes.RECORD_HEADER + keyLen);
      if (key.subarray(0, prefix.length).equals(prefix) && (after === undefined || Buffer.compare(key, after) > 0)) {
        found.push({
          key: Buffer.from(key),
          bytes: chunk.readUInt32LE(pos + 4),
          version: formatHlc({ wall: chunk.readDoubleLE(pos + 8), counter: chunk.readUInt32LE(pos + 16), node: space.clock.node }),
          expiresAt: chunk.readDoubleLE(pos + 24),
        });
      }
      pos += len;
    }
  }
  found.sort((a, b) => Buffer.compare(a.key, b.key));
  return { keys: found.slice(0, limit), more: found.length > limit };
}

/** One key's value, version and expiry (0: none). */
export function readKey(space: StateKeyspace, key: Buffer): { value: Buffer; version: string; expiresAt: number } | undefined {
  const { table } = space;
  const value = table.get(key, space.now());
  if (table.last.expired) space.notifyExpired(key);
  if (!value) return undefined;
  return { value, version: formatHlc(space.lastVersion()), expiresAt: table.last.expiresAt };
}

/** The console's SET. */
export function writeKey(space: StateKeyspace, key: Buffer, value: Buffer, ttlMs: number): { ok: true; version: string } | { ok: false; error: string } {
  if (key.length === 0) return { ok: false, error: ERRORS.emptyKey };
  const { table } = space;
  const t = space.now();
  const version = space.clock.tick();
  const r = table.set(key, value, 0, version.wall, version.counter, ttlMs > 0 ? t + ttlMs : 0, undefined, t);
  if (r !== codes.RESULT_OK) return { ok: false, error: errorText(space, r) };
  if (table.last.expired) space.counters.expired++;
  space.counters.op('SET');
  if (space.replica) void space.replica.replicate({ op: OP_SET, now: t, flags: 0, version, expiresAt: ttlMs > 0 ? t + ttlMs : 0, ft: undefined, key, value }).catch(() => undefined);
  space.changed(key, value, version);
  return { ok: true, version: formatHlc(version) };
}

/** The console's DEL: deleted true, or false when the key was absent. */
export function deleteKey(space: StateKeyspace, key: Buffer): { ok: true; deleted: boolean } | { ok: false; error: string } {
  const { table } = space;
  const r = table.delete(key, undefined, undefined, space.now());
  if (table.last.expired) space.notifyExpired(key);
  if (r === codes.RESULT_NONE) return { ok: true, deleted: false };
  if (r !== codes.RESULT_OK) return { ok: false, error: errorText(space, r) };
  space.counters.op('DEL');
  const version = space.clock.tick();
  if (space.replica) void space.replica.replicate({ op: OP_DEL, now: space.now(), flags: 0, version, expiresAt: 0, ft: undefined, key, value: undefined }).catch(() => undefined);
  space.changed(key, undefined, version);
  return { ok: true, deleted: true };
}

/** The rules engine's state(): the current value, or undefined. */
export function readValue(space: StateKeyspace, key: Buffer): Buffer | undefined {
  if (key.length === 0) return undefined;
  const { table } = space;
  const value = table.get(key, space.now());
  if (table.last.expired) space.notifyExpired(key);
  return value ?? undefined;
}

/** The rules engine's set_state(): "OK" or the error the request would get; `px` ms expiry. */
export function writeValue(space: StateKeyspace, key: Buffer, value: Buffer, px?: number): string {
  if (key.length === 0) return ERRORS.emptyKey;
  const { table } = space;
  space.counters.op('SET');
  const t = space.now();
  const version = space.clock.tick(undefined);
  if (space.storageFull) return ERRORS.quota;
  const expiresAt = px ? t + px : 0;
  const r = table.set(key, value, 0, version.wall, version.counter, expiresAt, undefined, t);
  if (r === codes.RESULT_OK) {
    if (table.last.expired) space.counters.expired++;
    // durable: stored with the next batch (a rule's write has no client waiting for its answer)
    space.record({ op: OP_SET, now: t, flags: 0, version, expiresAt, ft: undefined, key, value });
    space.pending?.catch(() => undefined); // cluster: nobody waits for a rule's write; a failure is logged by the replica
    space.pending = undefined;
    space.changed(key, value, version);
    return 'OK';
  }
  if (table.last.expired) space.notifyExpired(key);
  return space.tableError(r).payload.toString('utf8').replace(/^-/, '').trim();
}
