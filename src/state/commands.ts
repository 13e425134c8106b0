/**
 * GET, SET, DEL, VDEL and KEYNOTIFY from an MQTT client: the request's timestamps checked,
 * the key authorized, the table called and the answer encoded (docs/state-store.md).
 */
import type { ClientInfo } from '../broker/hooks.js';
import type { UserProperties } from '../mqtt/message.js';
import type { StateStoreAuthorizer } from './authorization.js';
import type { Answer } from './counters.js';
import { parseHlc, type Hlc } from './hlc.js';
import type { StateKeyspace } from './keyspace.js';
import { ERRORS } from './protocol.js';
import type { StateRequest } from './request.js';
import { encodeBulk, encodeInteger, NULL_BULK, OK } from './resp.js';
import { codes } from './table.js';
import { OP_DEL, OP_SET, OP_VDEL } from './write-log.js';

function firstProperty(props: UserProperties | undefined, name: string): string | undefined {
  const v = props?.[name];
  return Array.isArray(v) ? v[0] : v;
}

/** A `__ts` / `__ft` read: undefined when absent, an error answer when refused. */
function timestamp(space: StateKeyspace, text: string | undefined, future: string): Hlc | Answer | undefined {
  if (text === undefined) return undefined;
  const t = parseHlc(text);
  if (!t) return space.counters.error(ERRORS.malformedTimestamp);
  if (space.clock.tooFarAhead(t)) return space.counters.error(future);
  return t;
}

const isAnswer = (x: unknown): x is Answer => typeof x === 'object' && x !== null && 'payload' in x;

export function executeRequest(space: StateKeyspace, authorizer: StateStoreAuthorizer, req: StateRequest, client: ClientInfo, props: UserProperties | undefined): Answer {
  const { verb, key } = req;
  const { table, clock, counters } = space;
  const write = verb === 'SET' || verb === 'DEL' || verb === 'VDEL';
  const tsText = firstProperty(props, '__ts');
  if (verb === 'SET' && tsText === undefined) return counters.error(ERRORS.missingTimestamp);
  const ts = timestamp(space, tsText, ERRORS.timestampFuture);
  if (isAnswer(ts)) return ts;
  let ft: Hlc | undefined;
  if (write) {
    const f = timestamp(space, firstProperty(props, '__ft'), ERRORS.fencingFuture);
    if (isAnswer(f)) return f;
    ft = f;
  }

  if (!authorizer.allowed(client, key, write ? 'write' : 'read')) return counters.error(ERRORS.notAuthorized);
  // no room on disk: a write that could not be made durable is refused before it is made
  if (write && space.storageFull) return counters.error(ERRORS.quota);

  const t = space.now();
  switch (verb) {
    case 'GET': {
      if (ts) clock.observe(ts);
      const value = table.get(key, t);
      if (table.last.expired) space.notifyExpired(key);
      if (!value) return { payload: NULL_BULK };
      return { payload: encodeBulk(value), version: space.lastVersion() };
    }
    case 'SET': {
      const version = clock.tick(ts);
      const value = req.arg!;
      const flags = req.flags;
      const expiresAt = req.px ? t + req.px : 0;
      const r = table.set(key, value, flags, version.wall, version.counter, expiresAt, ft, t);
      if (r === codes.RESULT_OK) {
        // a key that had expired and is now set again: the SET notification tells it all
        if (table.last.expired) counters.expired++;
        const stored = space.record({ op: OP_SET, now: t, flags, version, expiresAt, ft, key, value });
        space.changed(key, value, version);
        return { payload: OK, version, stored };
      }
      if (table.last.expired) space.notifyExpired(key);
      if (r === codes.RESULT_NONE) return { payload: encodeInteger(-1), version: space.lastVersion() };
      return space.tableError(r);
    }
    case 'DEL':
    case 'VDEL': {
      if (ts) clock.observe(ts);
      const match = verb === 'VDEL' ? req.arg : undefined;
      const r = table.delete(key, match, ft, t);
      if (table.last.expired) space.notifyExpired(key);
      if (r === codes.RESULT_OK) {
        const version = clock.tick(ts);
        const stored = space.record({ op: verb === 'VDEL' ? OP_VDEL : OP_DEL, now: t, flags: 0, version, expiresAt: 0, ft, key, value: match });
        space.changed(key, undefined, version);
        return { payload: encodeInteger(1), version, stored };
      }
      if (r === codes.RESULT_NONE) return { payload: encodeInteger(0) };
      if (r === codes.RESULT_MISMATCH) return { payload: encodeInteger(-1), version: space.lastVersion() };
      return space.tableError(r);
    }
    case 'KEYNOTIFY': {
      if (ts) clock.observe(ts);
      if (req.stop) return space.keyNotify.unregister(client.clientId, key) ? { payload: OK } : { payload: encodeInteger(0) };
      return space.keyNotify.register(client.clientId, key) ? { payload: OK } : counters.error(ERRORS.quota);
    }
  }
}
