/**
 * Snapshot of the broker's durable data: retained messages and persistent sessions
 * (subscriptions, queued and inflight QoS 1/2 messages, QoS 2 receipts, pending wills).
 * Each message is written once however many sessions hold it; sessions refer to it by
 * index.
 *
 * Layout (all integers big-endian):
 *   "EDBS" u8 version(1)
 *   u32 messageCount, then per message:
 *     str topic, bytes payload, u8 qos, u8 retain, f64 expiresAt (NaN: none),
 *     str senderId (empty: none), str origin (empty: none), str propertiesJson (empty: none)
 *   u32 retainedCount, u32 messageIndex each
 *   u32 sessionCount, then per session:
 *     str clientId, f64 expiryInterval, f64 offlineSince (NaN: was connected at the snapshot)
 *     u32 subs: str topic, u8 qos, u8 flags (1 noLocal, 2 retainAsPublished), u8 retainHandling, u32 subscriptionId (0: none)
 *     u32 inflight: u16 packetId, u8 state (0 publish, 1 pubrel), delivery
 *     u32 queued: delivery
 *     u32 qos2 receipts: u16 packetId
 *     u8 hasWill [u32 messageIndex, f64 dueIn ms, f64 expirySeconds (NaN: none), u8 hasUser [str username]]
 *   delivery = u32 messageIndex, u8 qos, u8 retain, u8 n, u32 subscriptionId x n
 * str = u32 byte length + UTF-8; bytes = u32 length + bytes.
 */
import type { Message, MessageProperties, QoS } from '../mqtt/message.js';
import { Session, type Delivery, type Subscription } from '../session/session.js';
import type { SessionStore } from '../session/store.js';
import { isValidTopicName, parseSharedFilter } from '../topics/validate.js';

const MAGIC = 'EDBS';
const VERSION = 1;

class Writer {
  private chunks: Buffer[] = [];
  private cur = Buffer.allocUnsafe(64 * 1024);
  private pos = 0;

  private room(n: number): void {
    if (this.pos + n <= this.cur.length) return;
    this.chunks.push(this.cur.subarray(0, this.pos));
    this.cur = Buffer.allocUnsafe(Math.max(64 * 1024, n));
    this.pos = 0;
  }
  u8(v: number): void {
    this.room(1);
    this.cur[this.pos++] = v;
  }
  u16(v: number): void {
    this.room(2);
    this.cur.writeUInt16BE(v, this.pos);
    this.pos += 2;
  }
  u32(v: number): void {
    this.room(4);
    this.cur.writeUInt32BE(v, this.pos);
    this.pos += 4;
  }
  f64(v: number): void {
    this.room(8);
    this.cur.writeDoubleBE(v, this.pos);
    this.pos += 8;
  }
  bytes(b: Buffer): void {
    this.u32(b.length);
    this.room(b.length);
    b.copy(this.cur, this.pos);
    this.pos += b.length;
  }
  str(s: string): void {
    this.bytes(Buffer.from(s, 'utf8'));
  }
  finish(): Buffer {
    this.chunks.push(this.cur.subarray(0, this.pos));
    return Buffer.concat(this.chunks);
  }
}

/** Reads what Writer wrote; any overrun throws (a truncated or foreign file). */
class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new Error('broker snapshot is truncated');
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  f64(): number {
    this.need(8);
    const v = this.buf.readDoubleBE(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(): Buffer {
    const n = this.u32();
    this.need(n);
    // copy: the snapshot buffer is released after the restore
    const b = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return b;
  }
  str(): string {
    const n = this.u32();
    this.need(n);
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  done(): boolean {
    return this.pos === this.buf.length;
  }
}

function propertiesToJson(p: MessageProperties | undefined): string {
  if (!p) return '';
  return JSON.stringify({ ...p, ...(p.correlationData ? { correlationData: p.correlationData.toString('base64') } : {}) });
}

function propertiesFromJson(s: string): MessageProperties | undefined {
  if (!s) return undefined;
  const raw = JSON.parse(s) as MessageProperties & { correlationData?: string };
  const out: MessageProperties = { ...raw } as MessageProperties;
  if (typeof raw.correlationData === 'string') out.correlationData = Buffer.from(raw.correlationData, 'base64');
  return out;
}

/** The view of a broker the snapshot needs. */
export interface SnapshotSource {
  readonly sessions: SessionStore;
  readonly online: Map<string, unknown>;
  readonly retained: { all(): IterableIterator<Message>; set(m: Message): void };
  restoreSession(session: Session): void;
}

/** Serialise retained messages and every session that outlives its connection. */
export function snapshotBroker(src: SnapshotSource, now = Date.now()): Buffer {
  const index = new Map<Message, number>();
  const messages: Message[] = [];
  const ref = (m: Message): number => {
    let i = index.get(m);
    if (i === undefined) {
      i = messages.length;
      messages.push(m);
      index.set(m, i);
    }
    return i;
  };
  const retained = [...src.retained.all()].filter((m) => m.expiresAt === undefined || m.expiresAt > now).map(ref);
  // sessions with expiry 0 end with their connection: nothing to keep
  const sessions = [...src.sessions.values()].filter((s) => s.expiryInterval > 0);
  for (const s of sessions) {
    for (const e of s.inflight.values()) ref(e.message);
    for (let i = s.queueHead; i < s.queue.length; i++) ref(s.queue[i]!.message);
    if (s.pendingWill) ref(s.pendingWill.message);
  }

  const w = new Writer();
  w.bytes(Buffer.from(MAGIC));
  w.u8(VERSION);
  w.u32(messages.length);
  for (const m of messages) {
    w.str(m.topic);
    w.bytes(m.payload);
    w.u8(m.qos);
    w.u8(m.retain ? 1 : 0);
    w.f64(m.expiresAt ?? Number.NaN);
    w.str(m.senderId ?? '');
    w.str(m.origin ?? '');
    w.str(propertiesToJson(m.properties));
  }
  w.u32(retained.length);
  for (const i of retained) w.u32(i);
  const delivery = (d: Delivery): void => {
    w.u32(index.get(d.message)!);
    w.u8(d.qos);
    w.u8(d.retain ? 1 : 0);
    const ids = d.subscriptionIds ?? [];
    w.u8(ids.length);
    for (const id of ids) w.u32(id);
  };
  w.u32(sessions.length);
  for (const s of sessions) {
    w.str(s.clientId);
    w.f64(s.expiryInterval);
    w.f64(src.online.has(s.clientId) ? Number.NaN : s.expiresAt === undefined ? now : s.expiresAt - s.expiryInterval * 1000);
    w.u32(s.subscriptions.size);
    for (const sub of s.subscriptions.values()) {
      w.str(sub.topic);
      w.u8(sub.qos);
      w.u8((sub.noLocal ? 1 : 0) | (sub.retainAsPublished ? 2 : 0));
      w.u8(sub.retainHandling);
      w.u32(sub.subscriptionIdentifier ?? 0);
    }
    w.u32(s.inflight.size);
    for (const e of s.inflight.values()) {
      w.u16(e.packetId);
      w.u8(e.state === 'pubrel' ? 1 : 0);
      delivery(e);
    }
    w.u32(s.queued);
    for (let i = s.queueHead; i < s.queue.length; i++) delivery(s.queue[i]!);
    w.u32(s.incomingQos2.size);
    for (const id of s.incomingQos2) w.u16(id);
    if (s.pendingWill) {
      w.u8(1);
      w.u32(index.get(s.pendingWill.message)!);
      w.f64(Math.max(0, (s.willDueAt ?? now) - now));
      w.f64(s.pendingWill.expirySeconds ?? Number.NaN);
      const user = s.pendingWill.username;
      w.u8(user === undefined ? 0 : 1);
      if (user !== undefined) w.str(user);
    } else w.u8(0);
  }
  return w.finish();
}

/**
 * Restore what snapshotBroker wrote. Validates everything before touching the broker,
 * so a bad snapshot changes nothing (the caller logs it and starts clean).
 * Offline time counts from the snapshot: sessions connected then start their expiry now.
 */
export function restoreBroker(dst: SnapshotSource, buf: Buffer, now = Date.now()): { retained: number; sessions: number; messages: number } {
  const r = new Reader(buf);
  if (r.bytes().toString() !== MAGIC) throw new Error('not a broker snapshot');
  const version = r.u8();
  if (version !== VERSION) throw new Error(`unsupported broker snapshot version ${version}`);
  const messages: Message[] = [];
  const count = r.u32();
  for (let i = 0; i < count; i++) {
    const topic = r.str();
    const payload = r.bytes();
    const qos = r.u8();
    if (qos > 2) throw new Error('bad QoS in broker snapshot');
    const retain = r.u8() === 1;
    const expiresAt = r.f64();
    const senderId = r.str();
    const origin = r.str();
    const properties = propertiesFromJson(r.str());
    const m: Message = { topic, payload, qos: qos as QoS, retain };
    if (!Number.isNaN(expiresAt)) m.expiresAt = expiresAt;
    if (senderId) m.senderId = senderId;
    if (origin) m.origin = origin;
    if (properties) m.properties = properties;
    messages.push(m);
  }
  const msg = (i: number): Message => {
    const m = messages[i];
    if (!m) throw new Error('bad message index in broker snapshot');
    return m;
  };
  const retained: Message[] = [];
  for (let n = r.u32(), i = 0; i < n; i++) {
    const m = msg(r.u32());
    // a backup written before control characters were refused may hold such a topic: it is left
    // out, as it would make libmosquitto subscribers drop their connection [MQTT-5-1.5.4]
    if (isValidTopicName(m.topic)) retained.push(m);
  }
  const readDelivery = (): Delivery => {
    const message = msg(r.u32());
    const qos = r.u8() as QoS;
    const retain = r.u8() === 1;
    const n = r.u8();
    const ids: number[] = [];
    for (let i = 0; i < n; i++) ids.push(r.u32());
    return { message, qos, retain, subscriptionIds: n > 0 ? ids : undefined };
  };
  const sessions: Session[] = [];
  for (let n = r.u32(), i = 0; i < n; i++) {
    const s = new Session(r.str());
    s.expiryInterval = r.f64();
    const offlineSince = r.f64();
    const from = Number.isNaN(offlineSince) ? now : offlineSince;
    s.expiresAt = s.expiryInterval >= 0xffffffff ? undefined : from + s.expiryInterval * 1000;
    for (let k = r.u32(), j = 0; j < k; j++) {
      const topic = r.str();
      const qos = r.u8() as QoS;
      const flags = r.u8();
      const retainHandling = r.u8();
      const subId = r.u32();
      const shared = parseSharedFilter(topic);
      if (shared === null) throw new Error('bad shared filter in broker snapshot');
      const sub: Subscription = {
        topic,
        qos,
        noLocal: (flags & 1) !== 0,
        retainAsPublished: (flags & 2) !== 0,
        retainHandling,
        filter: shared ? shared.filter : topic,
        ...(subId ? { subscriptionIdentifier: subId } : {}),
        ...(shared ? { shareGroup: shared.group } : {}),
      };
      s.setSubscription(topic, sub);
    }
    for (let k = r.u32(), j = 0; j < k; j++) {
      const packetId = r.u16();
      const state = r.u8() === 1 ? 'pubrel' : 'publish';
      s.restoreInflight({ ...readDelivery(), packetId, state });
    }
    for (let k = r.u32(), j = 0; j < k; j++) s.enqueue(readDelivery());
    for (let k = r.u32(), j = 0; j < k; j++) s.restoreQos2(r.u16());
    if (r.u8() === 1) {
      const message = msg(r.u32());
      const dueIn = r.f64();
      const expirySeconds = r.f64();
      const username = r.u8() === 1 ? r.str() : undefined;
      s.pendingWill = { message, expirySeconds: Number.isNaN(expirySeconds) ? undefined : expirySeconds, username };
      s.willDueAt = now + dueIn;
    }
    sessions.push(s);
  }
  if (!r.done()) throw new Error('trailing bytes after broker snapshot');
  for (const m of retained) dst.retained.set(m);
  for (const s of sessions) dst.restoreSession(s);
  return { retained: retained.length, sessions: sessions.length, messages: messages.length };
}
