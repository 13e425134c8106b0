/**
 * What broker nodes send each other over NATS, and its byte layout.
 *
 * A forwarded message (subject edb.<cluster>.msg.<node>):
 *   u32 BE  length H of the header
 *   H bytes UTF-8 JSON header: { t: topic, q: qos, r?: 1 (retain), e?: expiresAt (ms),
 *           s?: senderId, o?: origin, g?: shared groups this node delivers (shareKey),
 *           p?: properties (correlationData as base64 in p.cd), n: from node, at: sent (ms),
 *           sq?: sequence in the session-message stream (sessions.ts),
 *           i?: the publisher's QoS 2 packet id (in the session-message stream only),
 *           d?: 1, a copy stored for one session (imported from a node's local log): a replay
 *           by subscriptions passes over it }
 *   rest    the payload, as published
 * JSON keeps the header readable with `nats sub` when debugging; the payload is not copied
 * into it, so a large payload costs one copy into the NATS buffer.
 *
 * A retained record (the value of one key in the retained bucket) has the same layout with
 * no `g`; its key is the topic in base64url (NATS keys allow only [-/_=.a-zA-Z0-9]).
 */
import type { Message, MessageProperties, QoS } from '../mqtt/message.js';

interface WireHeader {
  t: string;
  q: QoS;
  r?: 1;
  e?: number;
  s?: string;
  o?: string;
  g?: string[];
  p?: Omit<MessageProperties, 'correlationData'> & { cd?: string };
  n: string;
  at: number;
  /** Its sequence in the session-message stream (Message.clusterSeq), once stored there. */
  sq?: number;
  /** The publisher's QoS 2 packet id (Message.inboundQos2Id), written in the session-message stream. */
  i?: number;
  /** A copy for one session, named in its position (not matched by subscriptions). */
  d?: 1;
}

export interface WireMessage {
  message: Message;
  /** The node that sent it. */
  from: string;
  /** When it was sent (ms since epoch, the sender's clock). */
  sentAt: number;
  /** The publisher's QoS 2 packet id, when written (stream records). */
  qos2Id?: number;
  /** A copy stored for one session (stream records). */
  direct?: boolean;
}

export function encodeMessage(message: Message, from: string, shares?: readonly string[], stream: { qos2Id?: boolean; direct?: boolean } = {}): Uint8Array {
  const h: WireHeader = { t: message.topic, q: message.qos, n: from, at: Date.now() };
  if (stream.qos2Id && message.inboundQos2Id !== undefined) h.i = message.inboundQos2Id;
  if (stream.direct) h.d = 1;
  if (message.retain) h.r = 1;
  if (message.expiresAt !== undefined) h.e = message.expiresAt;
  if (message.senderId !== undefined) h.s = message.senderId;
  if (message.origin !== undefined) h.o = message.origin;
  if (shares && shares.length > 0) h.g = [...shares];
  if (message.clusterSeq !== undefined) h.sq = message.clusterSeq;
  const props = message.properties;
  if (props) {
    const { correlationData, ...rest } = props;
    h.p = correlationData ? { ...rest, cd: correlationData.toString('base64') } : rest;
  }
  const head = Buffer.from(JSON.stringify(h));
  const out = Buffer.allocUnsafe(4 + head.length + message.payload.length);
  out.writeUInt32BE(head.length, 0);
  head.copy(out, 4);
  message.payload.copy(out, 4 + head.length);
  return out;
}

/** The message and the shared groups it is for; throws WireError on anything malformed. */
export function decodeMessage(data: Uint8Array): WireMessage & { shares: string[] | undefined } {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length < 4) throw new WireError('shorter than its header length');
  const n = buf.readUInt32BE(0);
  if (4 + n > buf.length) throw new WireError('header longer than the record');
  let h: WireHeader;
  try {
    h = JSON.parse(buf.subarray(4, 4 + n).toString('utf8')) as WireHeader;
  } catch {
    throw new WireError('header is not JSON');
  }
  if (typeof h.t !== 'string' || (h.q !== 0 && h.q !== 1 && h.q !== 2) || typeof h.n !== 'string') throw new WireError('header lacks topic, qos or node');
  // the payload is copied out: NATS reuses nothing, but a retained copy outlives the record
  const message: Message = { topic: h.t, payload: Buffer.from(buf.subarray(4 + n)), qos: h.q, retain: h.r === 1 };
  if (typeof h.e === 'number') message.expiresAt = h.e;
  if (typeof h.s === 'string') message.senderId = h.s;
  if (typeof h.o === 'string') message.origin = h.o;
  if (typeof h.sq === 'number') message.clusterSeq = h.sq;
  if (h.p && typeof h.p === 'object') {
    const { cd, ...rest } = h.p;
    message.properties = cd !== undefined ? { ...rest, correlationData: Buffer.from(cd, 'base64') } : rest;
  }
  const out: WireMessage & { shares: string[] | undefined } = { message, from: h.n, sentAt: typeof h.at === 'number' ? h.at : Date.now(), shares: Array.isArray(h.g) ? h.g.filter((x) => typeof x === 'string') : undefined };
  if (typeof h.i === 'number') out.qos2Id = h.i;
  if (h.d === 1) out.direct = true;
  return out;
}

export class WireError extends Error {}

/** A topic as a NATS key (base64url is within the allowed characters, and reversible). */
export function topicKey(topic: string): string {
  return Buffer.from(topic, 'utf8').toString('base64url') || '_';
}

export function keyTopic(key: string): string {
  return key === '_' ? '' : Buffer.from(key, 'base64url').toString('utf8');
}
