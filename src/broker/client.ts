import { isUtf8 } from 'node:buffer';
import mqttPacket from 'mqtt-packet';
import type {
  IConnectPacket,
  IDisconnectPacket,
  IPublishPacket,
  ISubscribePacket,
  IUnsubscribePacket,
  Packet,
} from 'mqtt-packet';
import type { Connection, ConnectionEvents, TransportKind } from '../transport/connection.js';
import type { ClientInfo } from './hooks.js';
import type { Message, MessageProperties, QoS } from './message.js';
import type { Delivery, InflightEntry, Session } from '../session/session.js';
import { RC, reasonName, v3ConnackCode } from '../mqtt/reason-codes.js';
import { hasControlCharacter, isValidTopicName } from '../topics/validate.js';
import { FRAME_INCOMPLETE, FRAME_MALFORMED, frameLength } from './framing.js';
import { malformedString } from '../mqtt/strings.js';
import { encodePublish, type PublishFields, type PublishProperties } from '../mqtt/encode-publish.js';
import { decodePacket } from '../mqtt/decode.js';
import { checkPropertyBlocks } from '../mqtt/properties.js';
import { decodeFast } from '../mqtt/decode-fast.js';
import type { Broker } from './broker.js';

type State = 'new' | 'authenticating' | 'open' | 'closed';

/** Why a connection ended, for the will and the log. */
export type CloseCause = 'disconnect' | 'error' | 'keepalive' | 'protocol' | 'takeover' | 'shutdown' | 'admin' | 'timeout';

const frameOut = { remaining: 0 };
/** First byte of PUBACK, PUBREC, PUBREL (flags 0010 [MQTT-3.6.1-1]) and PUBCOMP. */
const ACK_FIRST_BYTE: Partial<Record<string, number>> = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 };
const NEEDS_PACKET_ID = new Set(['puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'unsubscribe']);

/**
 * One MQTT network connection: framing, parsing, the CONNECT handshake, the per-packet
 * protocol rules, and the outbound side (inflight window, bounded queue, topic aliases).
 * Everything here is synchronous but authentication; routing belongs to the Broker.
 */
export class MqttClient implements ConnectionEvents, ClientInfo {
  state: State = 'new';
  clientId = '';
  username: string | undefined;
  protocolVersion: 3 | 4 | 5 = 4;
  readonly transport: TransportKind;
  readonly remoteAddress: string;
  readonly certificateSubject?: string;
  readonly certificateFields?: Readonly<Record<string, string>>;
  readonly openedAt = Date.now();
  connectedAt = 0;
  session: Session | undefined;
  keepAliveMs = 0;
  lastActivity = Date.now();
  will: Message | undefined;
  willDelay = 0;
  /** Message Expiry Interval of the will, counted from when it is published. */
  willExpirySeconds: number | undefined;

  // limits the client announced in CONNECT (v5)
  private clientReceiveMaximum = 65535;
  /** QoS 1/2 messages we may have in flight to this client: its Receive Maximum, capped by maxInflight. */
  private sendWindow = 65535;
  private clientMaxPacketSize = 268435460;
  private clientTopicAliasMax = 0;
  // topic aliases (v5), created when first used: most clients never use them
  private aliasesIn: Map<number, string> | undefined;
  private aliasesOut: Map<string, number> | undefined;

  /** The bytes of the packet being handled. */
  private frame: Buffer | undefined;
  private pending: Buffer | undefined;
  /** Chunks received after `pending`, not yet joined to it. */
  private heldChunks: Buffer[] | undefined;
  private heldBytes = 0;
  /** Bytes `pending` must reach before the next packet is whole (0: unknown). */
  private needed = 0;
  /** The transport accepted our last write without backpressure. */
  writable = true;
  /** Reading is paused by flow control (subscribers this client feeds are backed up). */
  private blockers = 0;
  /** Publishers paused because this client's queue passed the high-water mark. */
  readonly blockedPublishers = new Set<MqttClient>();
  /** Since when the queue has stayed above the high-water mark (0 = not). */
  congestedSince = 0;
  /** The queue stayed full past the stall bound: publishers are not held back for it. */
  stalled = false;
  private resumeScheduled = false;
  private throttled = false;
  closeCause: CloseCause | undefined;

  constructor(
    private readonly broker: Broker,
    private readonly conn: Connection,
  ) {
    this.transport = conn.transport;
    this.remoteAddress = conn.remoteAddress;
    if (conn.certificateSubject !== undefined) this.certificateSubject = conn.certificateSubject;
    if (conn.certificateFields !== undefined) this.certificateFields = conn.certificateFields;
  }

  get isV5(): boolean {
    return this.protocolVersion === 5;
  }

  // ---------------------------------------------------------------- input

  onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.broker.stats.bytesReceived += chunk.length;
    this.lastActivity = Date.now();
    if (!this.pending) this.pending = chunk;
    else {
      // Chunks are collected and joined once there is enough to parse: joining on every
      // chunk would copy a held client's input, or one large packet, again and again.
      (this.heldChunks ??= []).push(chunk);
      this.heldBytes += chunk.length;
    }
    if (this.blockers > 0 || this.state === 'authenticating') return;
    if (this.pending.length + this.heldBytes < this.needed) return; // the packet being assembled is not complete
    this.drainInput();
  }

  private drainInput(): void {
    if (this.heldChunks) {
      this.pending = Buffer.concat(this.pending ? [this.pending, ...this.heldChunks] : this.heldChunks);
      this.heldChunks = undefined;
      this.heldBytes = 0;
    }
    this.needed = 0;
    let buf = this.pending;
    if (!buf) return;
    let offset = 0;
    const max = this.broker.config.maxPacketSize;
    while (offset < buf.length && this.state !== 'closed') {
      if (this.blockers > 0) break; // flow control: keep the rest for resume()
      if (this.state === 'authenticating') break; // nothing past CONNECT until the hooks answer
      const len = frameLength(buf, offset, frameOut);
      if (len === FRAME_INCOMPLETE) {
        if (frameOut.remaining > max) return this.protocolViolation(RC.PACKET_TOO_LARGE, 'packet too large');
        break;
      }
      if (len === FRAME_MALFORMED) return this.protocolViolation(RC.MALFORMED_PACKET, 'malformed remaining length');
      // [MQTT-3.2.2-15] packets over the Maximum Packet Size we announced are refused
      if (len > max) return this.protocolViolation(RC.PACKET_TOO_LARGE, 'packet too large');
      if (offset + len > buf.length) {
        this.needed = len; // parse again once the whole packet is here
        break;
      }
      const packetBytes = buf.subarray(offset, offset + len);
      offset += len;
      this.frame = packetBytes;
      let packet: Packet;
      try {
        const version = this.state === 'new' ? 4 : this.protocolVersion;
        const fast = decodeFast(packetBytes, version);
        if (fast !== undefined) packet = fast;
        else {
          packet = decodePacket(packetBytes, version);
          // decode-fast is strict; mqtt-packet reads properties leniently, so its packets' property
          // blocks are read again strictly (CONNECT's in onConnect, which knows the protocol version
          // for the CONNACK)
          const problem = packet.cmd === 'connect' || version !== 5 ? undefined : checkPropertyBlocks(packetBytes);
          if (problem !== undefined) {
            this.protocolViolation(problem.reasonCode, problem.reason);
            break;
          }
        }
      } catch (err) {
        this.onParseError(err as Error);
        break;
      }
      try {
        this.onPacket(packet);
      } catch (err) {
        // a bug or a failing hook while serving this packet ends this connection only
        return this.internalError(err, packet);
      }
    }
    if (this.state === 'closed') {
      this.pending = undefined;
      return;
    }
    buf = this.pending;
    this.pending = buf && offset < buf.length ? buf.subarray(offset) : undefined;
  }

  private onParseError(err: Error): void {
    if (this.state === 'closed') return;
    if (/protocol version/i.test(err.message) && this.state === 'new') {
      // [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01 (3.1.1 format), then close
      this.broker.countProtocolError(RC.UNSUPPORTED_PROTOCOL_VERSION);
      this.writePacket({ cmd: 'connack', returnCode: 1, sessionPresent: false }, 4);
      return this.close('protocol');
    }
    this.protocolViolation(RC.MALFORMED_PACKET, err.message);
  }

  private onPacket(packet: Packet): void {
    if (this.state === 'closed') return;
    this.broker.countPacket(packet.cmd, true);
    // [MQTT-1.5.4-1/2] a string that is not well-formed UTF-8, or holds U+0000, makes the packet malformed
    const bad = this.frame && malformedString(packet, this.frame);
    if (bad) return this.protocolViolation(RC.MALFORMED_PACKET, `${bad} is not valid UTF-8 or contains U+0000`);
    if (this.state === 'new') {
      if (packet.cmd !== 'connect') return this.protocolViolation(RC.PROTOCOL_ERROR, 'first packet must be CONNECT'); // [MQTT-3.1.0-1]
      return void this.onConnect(packet).catch((err: unknown) => this.internalError(err, packet));
    }
    this.handle(packet);
  }

  private handle(packet: Packet): void {
    // [MQTT-2.2.1-3] acks, SUBSCRIBE and UNSUBSCRIBE carry a non-zero packet identifier;
    // mqtt-packet reads a missing one as -1, which must not be answered (the reply would be truncated)
    if (NEEDS_PACKET_ID.has(packet.cmd) && !((packet.messageId ?? 0) >= 1)) {
      // missing: the packet is cut short (malformed); present but 0: parsed, yet not allowed (protocol error)
      if (packet.messageId === 0) return this.protocolViolation(RC.PROTOCOL_ERROR, `${packet.cmd} with packet identifier 0`);
      return this.protocolViolation(RC.MALFORMED_PACKET, `${packet.cmd} without a packet identifier`);
    }
    switch (packet.cmd) {
      case 'publish':
        return this.onPublish(packet);
      case 'puback':
        return this.onAck(packet.messageId!, 'puback', packet.reasonCode);
      case 'pubrec':
        return this.onPubrec(packet.messageId!, packet.reasonCode);
      case 'pubrel':
        return this.onPubrel(packet.messageId!);
      case 'pubcomp':
        return this.onAck(packet.messageId!, 'pubcomp', packet.reasonCode);
      case 'subscribe':
        return this.onSubscribe(packet);
      case 'unsubscribe':
        return this.onUnsubscribe(packet);
      case 'pingreq':
        this.writePacket({ cmd: 'pingresp' });
        return;
      case 'disconnect':
        return this.onDisconnect(packet);
      case 'connect':
        // [MQTT-3.1.0-2] a second CONNECT is a protocol error
        return this.protocolViolation(RC.PROTOCOL_ERROR, 'second CONNECT');
      case 'auth':
        // no enhanced authentication method was agreed, so any AUTH is a protocol error [MQTT-4.12.0-1]
        return this.protocolViolation(RC.PROTOCOL_ERROR, 'AUTH without an authentication method');
      default:
        return this.protocolViolation(RC.PROTOCOL_ERROR, `unexpected ${packet.cmd}`);
    }
  }

  // -------------------------------------------------------------- connect

  private async onConnect(packet: IConnectPacket): Promise<void> {
    const version = packet.protocolVersion ?? 4;
    this.protocolVersion = version;
    const props = packet.properties ?? {};
    const broker = this.broker;

    // Malformed CONNECT flags the parser lets through: v5 answers CONNACK 0x81, 3.1.1 just closes
    const malformed = (reason: string): void => (version === 5 ? this.refuse(RC.MALFORMED_PACKET, reason) : this.protocolViolation(RC.MALFORMED_PACKET, reason));
    if (packet.will && (packet.will.qos ?? 0) > 2) return malformed('will QoS 3'); // [MQTT-3.1.2-12]
    const problem = version === 5 && this.frame ? checkPropertyBlocks(this.frame) : undefined;
    if (problem !== undefined) return this.refuse(problem.reasonCode, problem.reason); // only v5 has properties
    if (version !== 5 && packet.password !== undefined && packet.username === undefined) {
      return malformed('password without user name'); // [MQTT-3.1.2-22] (3.1.1; allowed in 5.0)
    }

    if (version === 5 && props.authenticationMethod !== undefined) {
      // Enhanced authentication is not offered [MQTT-3.1.2-?]: 0x8C bad authentication method
      return this.refuse(RC.BAD_AUTHENTICATION_METHOD, 'enhanced authentication is not supported');
    }
    if (version === 5) {
      if (props.receiveMaximum !== undefined) this.clientReceiveMaximum = props.receiveMaximum;
      if (props.maximumPacketSize !== undefined) this.clientMaxPacketSize = props.maximumPacketSize;
      if (props.topicAliasMaximum !== undefined) this.clientTopicAliasMax = props.topicAliasMaximum;
      if (this.clientReceiveMaximum === 0 || this.clientMaxPacketSize === 0) {
        return this.refuse(RC.PROTOCOL_ERROR, 'receive maximum and maximum packet size must not be 0'); // [MQTT-3.1.2-?]
      }
    }

    this.sendWindow = Math.min(this.clientReceiveMaximum, broker.config.maxInflight);

    let clientId = packet.clientId ?? '';
    let assigned: string | undefined;
    const clean = packet.clean !== false;
    if (clientId.length === 0) {
      // [MQTT-3.1.3-8] 3.1.1 with clean session 0 and no id: identifier rejected
      if (version !== 5 && !clean) return this.refuse(RC.CLIENT_IDENTIFIER_NOT_VALID, 'empty client id needs a clean session');
      clientId = broker.assignClientId();
      if (version === 5) assigned = clientId; // [MQTT-3.2.2-16] Assigned Client Identifier
    }
    this.clientId = clientId;
    this.username = packet.username;

    if (packet.will) {
      const w = packet.will;
      const wp = w.properties ?? {};
      if (!isValidTopicName(w.topic)) return this.refuse(RC.TOPIC_NAME_INVALID, 'invalid will topic');
      // 3.1.3.2.5: the will's Response Topic is a topic name, no wildcards (as [MQTT-3.3.2-14])
      if (wp.responseTopic !== undefined && !isValidTopicName(wp.responseTopic)) return this.refuse(RC.PROTOCOL_ERROR, 'invalid will response topic');
      const payload = typeof w.payload === 'string' ? Buffer.from(w.payload) : w.payload;
      const properties = version === 5 ? pickProperties(wp) : undefined;
      this.will = {
        topic: w.topic,
        payload,
        qos: (w.qos ?? 0) as QoS,
        retain: w.retain === true,
        senderId: clientId,
        origin: 'will',
        ...(properties ? { properties } : {}),
      };
      this.willExpirySeconds = wp.messageExpiryInterval;
      this.willDelay = wp.willDelayInterval ?? 0;
    }

    this.state = 'authenticating';
    // stop reading while the (possibly slow) hooks decide: an unauthenticated peer must not
    // make us buffer what it pipelines behind its CONNECT; it is parsed once we answer
    this.conn.pause();
    const verdict = await broker.authenticate(this, packet);
    if (this.state !== 'authenticating') return; // closed meanwhile
    if (!verdict.ok) return this.refuse(verdict.reasonCode, verdict.reasonString ?? reasonName(verdict.reasonCode));
    if (verdict.username !== undefined) this.username = verdict.username;

    // Session Expiry: v5 property; 3.1.1 clean session 0 means "keep it"
    let expiry = version === 5 ? (props.sessionExpiryInterval ?? 0) : clean ? 0 : 0xffffffff;
    const cap = broker.config.maxSessionExpiry;
    const expiryCapped = expiry > cap;
    if (expiryCapped) expiry = cap;

    let keepAlive = packet.keepalive ?? 0;
    let serverKeepAlive: number | undefined;
    const maxKeepAlive = broker.config.maxKeepAlive;
    if (maxKeepAlive > 0 && (keepAlive === 0 || keepAlive > maxKeepAlive) && version === 5) {
      keepAlive = maxKeepAlive;
      serverKeepAlive = keepAlive; // [MQTT-3.2.2-21] the client must use the Server Keep Alive
    }
    this.keepAliveMs = keepAlive * 1000;

    const { session, present } = broker.openSession(this, clean, expiry);
    this.session = session;
    this.state = 'open';
    this.connectedAt = Date.now();

    if (version === 5) {
      const properties: NonNullable<import('mqtt-packet').IConnackPacket['properties']> = {
        receiveMaximum: broker.config.maxInflight,
        maximumPacketSize: broker.config.maxPacketSize,
        topicAliasMaximum: broker.config.topicAliasMaximum,
        retainAvailable: true,
        wildcardSubscriptionAvailable: true,
        subscriptionIdentifiersAvailable: true,
        sharedSubscriptionAvailable: true,
      };
      if (assigned !== undefined) properties.assignedClientIdentifier = assigned;
      if (serverKeepAlive !== undefined) properties.serverKeepAlive = serverKeepAlive;
      if (expiryCapped) properties.sessionExpiryInterval = expiry;
      this.writePacket({ cmd: 'connack', reasonCode: 0, sessionPresent: present, properties });
    } else {
      this.writePacket({ cmd: 'connack', returnCode: 0, sessionPresent: present });
    }
    broker.clientOnline(this);
    // [MQTT-4.4.0-1] resend unacknowledged PUBLISH (with DUP) and PUBREL on reconnect
    for (const entry of session.inflight.values()) this.writeInflight(entry, true);
    this.pump();

    if (this.blockers === 0) this.conn.resume();
    this.drainInput(); // what arrived behind the CONNECT
  }

  /** CONNACK with a failure code, then close [MQTT-3.2.2-7]. */
  private refuse(reasonCode: number, reason: string): void {
    this.broker.log.info({ clientId: this.clientId, address: this.remoteAddress, reason }, 'connection refused');
    if (this.isV5) {
      this.writePacket({ cmd: 'connack', reasonCode, sessionPresent: false, properties: { reasonString: reason } });
    } else {
      this.writePacket({ cmd: 'connack', returnCode: v3ConnackCode(reasonCode), sessionPresent: false });
    }
    this.will = undefined;
    this.close('protocol');
  }

  // -------------------------------------------------------------- publish in

  private onPublish(packet: IPublishPacket): void {
    const props = packet.properties;
    // [MQTT-3.3.4-6] Subscription Identifiers only travel from the server to a client
    if (props?.subscriptionIdentifier !== undefined) return this.protocolViolation(RC.PROTOCOL_ERROR, 'subscription identifier in PUBLISH');
    let topic = packet.topic;
    if (this.isV5 && props?.topicAlias !== undefined) {
      const alias = props.topicAlias;
      // [MQTT-3.3.2-9] alias 0 or over our Topic Alias Maximum is a protocol error: 0x94
      if (alias === 0 || alias > this.broker.config.topicAliasMaximum) return this.protocolViolation(RC.TOPIC_ALIAS_INVALID, 'topic alias invalid');
      if (topic.length > 0) (this.aliasesIn ??= new Map()).set(alias, topic);
      else {
        const known = this.aliasesIn?.get(alias);
        if (known === undefined) return this.protocolViolation(RC.PROTOCOL_ERROR, 'unknown topic alias');
        topic = known;
      }
    }
    if (!isValidTopicName(topic)) return this.protocolViolation(RC.TOPIC_NAME_INVALID, 'invalid topic name');
    // [MQTT-3.3.2-14] a Response Topic is a topic name: wildcards in it are a protocol error
    if (props?.responseTopic !== undefined && !isValidTopicName(props.responseTopic)) return this.protocolViolation(RC.PROTOCOL_ERROR, 'invalid response topic');
    const qos = packet.qos;
    const id = packet.messageId ?? 0;
    // [MQTT-2.2.1-3] a QoS 1/2 PUBLISH carries a non-zero packet identifier. mqtt-packet reads one
    // cut short by the Remaining Length as -1: malformed, and never to be answered (the PUBACK or
    // PUBREC would be malformed in turn)
    if (qos > 0 && id < 1) {
      return id === 0 ? this.protocolViolation(RC.PROTOCOL_ERROR, 'packet identifier 0') : this.protocolViolation(RC.MALFORMED_PACKET, 'PUBLISH cut short in its packet identifier');
    }
    const session = this.session!;

    const limits = this.broker.limits;
    if (limits?.enabled) {
      const now = Date.now();
      const verdict = limits.onPublish(this.clientId, packet.length ?? packet.payload.length, now);
      if (verdict === 'rate') return this.disconnect(RC.MESSAGE_RATE_TOO_HIGH, 'protocol', 'message rate too high');
      if (verdict === 'quota') return this.disconnect(RC.QUOTA_EXCEEDED, 'protocol', 'byte rate quota exceeded');
      // over the rate: stop reading until the client is back within it (TCP pushes back)
      if (verdict === 'slow') this.throttle(limits.resumeDelay(this.clientId, now));
    }

    if (qos === 2 && !session.incomingQos2.has(id) && session.incomingQos2.size >= this.broker.config.maxInflight) {
      // [MQTT-3.3.4-9] more unacknowledged QoS 2 than our Receive Maximum
      return this.protocolViolation(RC.RECEIVE_MAXIMUM_EXCEEDED, 'receive maximum exceeded');
    }
    if (qos === 2 && session.incomingQos2.has(id)) {
      // a resent QoS 2 PUBLISH we already own: answer, do not deliver twice [MQTT-4.3.3-10]
      this.writePacket({ cmd: 'pubrec', messageId: id });
      return;
    }

    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const message: Message = { topic, payload, qos, retain: packet.retain, senderId: this.clientId };
    if (this.isV5 && props) {
      const properties = pickProperties(props);
      if (properties) message.properties = properties;
      if (props.messageExpiryInterval !== undefined) message.expiresAt = Date.now() + props.messageExpiryInterval * 1000;
      // [MQTT-3.3.2-4] Payload Format Indicator 1: the payload must be UTF-8
      if (props.payloadFormatIndicator === true && !isUtf8(payload)) {
        return this.ackPublish(qos, id, RC.PAYLOAD_FORMAT_INVALID);
      }
    }
    this.broker.stats.publishReceived++;

    const verdict = this.broker.authorizePublish(this, message);
    if (verdict !== 0) {
      this.broker.countDrop('not_authorized');
      // 3.1.1 has no way to say no: acknowledge and drop [MQTT-3.3.5-2]
      return this.ackPublish(qos, id, this.isV5 ? verdict : 0);
    }
    if (qos === 2) session.incomingQos2.add(id);
    const matched = this.broker.route(message, this);
    this.ackPublish(qos, id, matched || !this.isV5 ? 0 : RC.NO_MATCHING_SUBSCRIBERS);
  }

  private ackPublish(qos: QoS, id: number, reasonCode: number): void {
    if (qos === 0) return;
    const cmd = qos === 1 ? 'puback' : 'pubrec';
    if (this.isV5 && reasonCode !== 0) this.writePacket({ cmd, messageId: id, reasonCode });
    else this.writePacket({ cmd, messageId: id });
  }

  private onPubrel(id: number): void {
    const known = this.session!.incomingQos2.delete(id);
    if (this.isV5 && !known) this.writePacket({ cmd: 'pubcomp', messageId: id, reasonCode: RC.PACKET_IDENTIFIER_NOT_FOUND });
    else this.writePacket({ cmd: 'pubcomp', messageId: id });
  }

  // -------------------------------------------------------------- publish out

  private onAck(id: number, kind: 'puback' | 'pubcomp', _reasonCode: number | undefined): void {
    const session = this.session!;
    const entry = session.inflight.get(id);
    if (!entry) return; // an ack for nothing we sent: ignore (spec allows)
    if (kind === 'puback' ? entry.qos !== 1 : entry.state !== 'pubrel') return;
    session.inflight.delete(id);
    this.pump();
  }

  private onPubrec(id: number, reasonCode: number | undefined): void {
    const session = this.session!;
    const entry = session.inflight.get(id);
    if (!entry || entry.qos !== 2) {
      if (this.isV5) this.writePacket({ cmd: 'pubrel', messageId: id, reasonCode: RC.PACKET_IDENTIFIER_NOT_FOUND });
      else this.writePacket({ cmd: 'pubrel', messageId: id });
      return;
    }
    if (reasonCode !== undefined && reasonCode >= 0x80) {
      // [MQTT-4.3.3-?] a failed PUBREC ends the exchange
      session.inflight.delete(id);
      this.pump();
      return;
    }
    entry.state = 'pubrel';
    this.writePacket({ cmd: 'pubrel', messageId: id });
  }

  /** Deliver now if the window and the socket allow, else queue (bounded). */
  deliver(d: Delivery, publisher: MqttClient | undefined): void {
    const session = this.session!;
    const canSend = this.writable && session.queued === 0 && (d.qos === 0 || session.inflight.size < this.sendWindow);
    if (canSend) {
      this.sendDelivery(d);
      return;
    }
    const cfg = this.broker.config;
    if (session.queued >= cfg.maxQueuedMessages || session.queueBytes >= cfg.maxQueuedBytes) {
      // full: a QoS 0 message is the first to go; QoS 1/2 replace the oldest QoS 0 if there is one
      if (d.qos === 0 || !session.dropOldestQos0()) {
        if (d.qos > 0 && cfg.queueFullPolicy === 'disconnect') {
          // The client is too slow for what it subscribed to: it goes offline rather than lose
          // the message; a persistent session keeps it (and the queue) for the reconnect.
          session.enqueue(d);
          this.broker.log.warn({ clientId: this.clientId, queued: session.queued }, 'outbound queue full: disconnecting the client (EDB_QUEUE_FULL_POLICY=disconnect)');
          this.broker.countQueueFullDisconnect();
          this.disconnect(RC.QUOTA_EXCEEDED, 'error', 'outbound queue full');
          return;
        }
        this.broker.countDrop('queue_full', this);
        return;
      }
      this.broker.countDrop('queue_full', this);
    }
    session.enqueue(d);
    if (publisher && publisher !== this && !this.stalled && this.aboveHighWater(session)) {
      if (this.congestedSince === 0) this.congestedSince = Date.now();
      publisher.holdFor(this);
    }
  }

  /**
   * Retained messages for a new subscription are all sent [MQTT-3.3.1-9], never dropped for the
   * queue bound: the retained store already holds them and the queue only references them. The
   * queue drains as the socket does; meanwhile publishers feeding this client are held back.
   */
  private deliverRetained(d: Delivery): void {
    const session = this.session!;
    if (this.writable && session.queued === 0 && (d.qos === 0 || session.inflight.size < this.sendWindow)) this.sendDelivery(d);
    else session.enqueue(d);
  }

  highWater(): number {
    return Math.max(1, this.broker.config.maxQueuedMessages >> 1);
  }

  /**
   * Half the queue bound is used, in messages or in bytes: publishers feeding this client are
   * held back. Bytes count too, or large payloads fill maxQueuedBytes (and are dropped) long
   * before the message high-water mark is reached.
   */
  private aboveHighWater(session: Session): boolean {
    return session.queued >= this.highWater() || session.queueBytes >= this.broker.config.maxQueuedBytes >> 1;
  }

  /** Drained to a quarter of either bound: held publishers may resume. */
  private belowLowWater(session: Session): boolean {
    return session.queued === 0 || (session.queued < this.highWater() >> 1 && session.queueBytes < this.broker.config.maxQueuedBytes >> 2);
  }

  /** Send queued messages while the socket and the inflight window allow. */
  pump(): void {
    const session = this.session;
    if (!session || this.state !== 'open') return;
    const now = Date.now();
    while (this.writable) {
      const d = session.peek();
      if (!d) break;
      if (d.qos > 0 && session.inflight.size >= this.sendWindow) break;
      session.shift();
      if (d.message.expiresAt !== undefined && d.message.expiresAt <= now) {
        this.broker.countDrop('expired');
        continue;
      }
      // a queued message may have been routed while this client was offline (no read check
      // then) or before an ACL change: read access is checked on the way out
      if (!this.broker.mayDeliver(this, d.message)) {
        this.broker.countDrop('not_authorized');
        continue;
      }
      this.sendDelivery(d);
    }
    if (this.belowLowWater(session)) {
      this.congestedSince = 0;
      this.stalled = false;
      this.releasePublishers();
    }
  }

  private sendDelivery(d: Delivery): void {
    if (d.message.quarantined) return this.broker.countDrop('quarantined', this);
    if (d.qos === 0) {
      this.writePublish(d, 0, false);
      return;
    }
    const session = this.session!;
    const entry: InflightEntry = { message: d.message, qos: d.qos, retain: d.retain, subscriptionIds: d.subscriptionIds, packetId: session.allocatePacketId(), state: 'publish' };
    session.inflight.set(entry.packetId, entry);
    this.writePublish(entry, entry.packetId, false);
  }

  private writeInflight(entry: InflightEntry, dup: boolean): void {
    if (entry.state === 'pubrel') this.writePacket({ cmd: 'pubrel', messageId: entry.packetId });
    else this.writePublish(entry, entry.packetId, dup);
  }

  private writePublish(d: Delivery, packetId: number, dup: boolean): void {
    let bytes: Buffer;
    try {
      bytes = this.encodeDelivery(d, packetId, dup);
    } catch (err) {
      // A stored message this broker cannot encode (which the inbound checks should have made
      // impossible): it is taken out of service, and this receiver stays connected.
      if (d.qos > 0) this.session!.inflight.delete(packetId);
      this.broker.quarantine(d.message, err, this);
      return this.broker.countDrop('quarantined', this);
    }
    this.sendPublishBytes(bytes, d, packetId);
  }

  private encodeDelivery(d: Delivery, packetId: number, dup: boolean): Buffer {
    const m = d.message;
    const v5 = this.isV5;
    // Fast path: a QoS 0 delivery with nothing per subscriber is encoded once per message.
    if (d.qos === 0 && m.expiresAt === undefined && (!v5 || (this.clientTopicAliasMax === 0 && !d.subscriptionIds))) {
      const slot = (v5 ? 2 : 0) + (d.retain ? 1 : 0);
      const wire = (m.wire ??= []);
      return (wire[slot] ??= encodePublish({ topic: m.topic, payload: m.payload, qos: 0, retain: d.retain, dup: false, ...(v5 && m.properties ? { properties: m.properties } : {}) }, this.protocolVersion));
    }
    const packet: PublishFields = { topic: m.topic, payload: m.payload, qos: d.qos, retain: d.retain, dup };
    if (d.qos > 0) packet.messageId = packetId;
    if (v5) {
      const properties: PublishProperties = m.properties ? { ...m.properties } : {};
      if (m.expiresAt !== undefined) {
        // [MQTT-3.3.2-6] the remaining lifetime
        properties.messageExpiryInterval = Math.max(0, Math.ceil((m.expiresAt - Date.now()) / 1000));
      }
      if (d.subscriptionIds && d.subscriptionIds.length > 0) {
        properties.subscriptionIdentifier = d.subscriptionIds.length === 1 ? d.subscriptionIds[0]! : d.subscriptionIds;
      }
      if (this.clientTopicAliasMax > 0) {
        const aliases = (this.aliasesOut ??= new Map());
        const alias = aliases.get(m.topic);
        if (alias !== undefined) {
          packet.topic = '';
          properties.topicAlias = alias;
        } else if (aliases.size < this.clientTopicAliasMax) {
          const next = aliases.size + 1;
          aliases.set(m.topic, next);
          properties.topicAlias = next;
        }
      }
      packet.properties = properties;
    }
    const newAlias = packet.properties?.topicAlias !== undefined && packet.topic !== '';
    let bytes: Buffer;
    try {
      bytes = encodePublish(packet, this.protocolVersion);
    } catch (err) {
      if (newAlias) this.aliasesOut?.delete(m.topic); // the alias was never announced
      throw err;
    }
    if (bytes.length > this.clientMaxPacketSize && newAlias) this.aliasesOut?.delete(m.topic); // never announced either
    return bytes;
  }

  private sendPublishBytes(bytes: Buffer, d: Delivery, packetId: number): void {
    // [MQTT-3.1.2-25] never send a packet over the client's Maximum Packet Size: drop it
    if (bytes.length > this.clientMaxPacketSize) {
      if (d.qos > 0) this.session!.inflight.delete(packetId);
      this.broker.countDrop('too_large');
      return;
    }
    this.broker.stats.publishSent++;
    this.broker.stats.messagesSent++;
    this.rawWrite(bytes, 'publish');
  }

  // -------------------------------------------------------------- subscribe

  private onSubscribe(packet: ISubscribePacket): void {
    // [MQTT-3.8.3-2] at least one topic filter
    if (packet.subscriptions.length === 0) return this.protocolViolation(RC.PROTOCOL_ERROR, 'SUBSCRIBE without a topic filter');
    // a control character in a filter: 0x8F for that filter on v5 (the broker's filter check);
    // 3.1.1 has no such code, and the string is one a receiver may treat as malformed [MQTT-5-1.5.4]
    if (!this.isV5 && packet.subscriptions.some((s) => hasControlCharacter(s.topic))) return this.protocolViolation(RC.MALFORMED_PACKET, 'control character in a topic filter');
    const subId = packet.properties?.subscriptionIdentifier;
    if (subId === 0) return this.protocolViolation(RC.PROTOCOL_ERROR, 'subscription identifier 0'); // [MQTT-3.8.2-?]
    const result = this.broker.subscribe(this, packet.subscriptions, subId);
    if (result === 'protocol-error') return this.protocolViolation(RC.PROTOCOL_ERROR, 'no local on a shared subscription');
    const granted = this.isV5 ? result.codes : result.codes.map((c) => (c >= 0x80 ? 0x80 : c));
    this.writePacket({ cmd: 'suback', messageId: packet.messageId!, granted });
    // [MQTT-3.8.4-4] retained messages after the SUBACK
    for (const d of result.retained) this.deliverRetained(d);
  }

  private onUnsubscribe(packet: IUnsubscribePacket): void {
    // [MQTT-3.10.3-2] at least one topic filter
    if (packet.unsubscriptions.length === 0) return this.protocolViolation(RC.PROTOCOL_ERROR, 'UNSUBSCRIBE without a topic filter');
    if (!this.isV5 && packet.unsubscriptions.some(hasControlCharacter)) return this.protocolViolation(RC.MALFORMED_PACKET, 'control character in a topic filter');
    const codes = this.broker.unsubscribe(this, packet.unsubscriptions);
    if (this.isV5) this.writePacket({ cmd: 'unsuback', messageId: packet.messageId!, granted: codes });
    else this.writePacket({ cmd: 'unsuback', messageId: packet.messageId!, granted: [] });
  }

  // -------------------------------------------------------------- disconnect

  private onDisconnect(packet: IDisconnectPacket): void {
    const session = this.session!;
    const newExpiry = packet.properties?.sessionExpiryInterval;
    if (newExpiry !== undefined) {
      // [MQTT-3.14.2-2] a session that was to end with the connection cannot be extended here
      if (session.expiryInterval === 0 && newExpiry !== 0) return this.protocolViolation(RC.PROTOCOL_ERROR, 'session expiry set on DISCONNECT');
      session.expiryInterval = Math.min(newExpiry, this.broker.config.maxSessionExpiry);
    }
    // [MQTT-3.14.4-3] only a normal DISCONNECT (0x00; 3.1.1 has no code) discards the will;
    // 0x04 and error codes leave it to be published [MQTT-3.1.2-10]
    if ((packet.reasonCode ?? RC.SUCCESS) === RC.SUCCESS) this.will = undefined;
    this.close('disconnect');
  }

  /** An unexpected exception while serving this client: log it, answer 0x83, close. */
  private internalError(err: unknown, packet?: Packet): void {
    const cmd = packet?.cmd ?? 'connect';
    this.broker.countInternalError(`packet_${cmd}`, err, this, packet && 'topic' in packet && typeof packet.topic === 'string' ? packet.topic : undefined);
    this.protocolViolation(RC.IMPLEMENTATION_SPECIFIC_ERROR, 'internal error');
  }

  /** Reply with the reason code where v5 allows it, then close (the will is published). */
  protocolViolation(reasonCode: number, reason: string): void {
    if (this.state === 'closed') return;
    this.broker.countProtocolError(reasonCode);
    this.broker.log.debug({ clientId: this.clientId, address: this.remoteAddress, reason, code: reasonCode }, 'protocol violation');
    if (this.state === 'new' || this.state === 'authenticating') {
      if (this.isV5 && this.state === 'authenticating') {
        this.writePacket({ cmd: 'connack', reasonCode, sessionPresent: false });
      }
      this.will = undefined;
    } else if (this.isV5) {
      this.writePacket({ cmd: 'disconnect', reasonCode, properties: { reasonString: reason } });
    }
    this.close('protocol');
  }

  /** Server-initiated DISCONNECT (v5 with a reason code), then close. */
  disconnect(reasonCode: number, cause: CloseCause, reasonString?: string): void {
    if (this.state === 'closed') return;
    if (this.isV5 && this.state === 'open') {
      this.writePacket({ cmd: 'disconnect', reasonCode, ...(reasonString ? { properties: { reasonString } } : {}) });
    }
    this.close(cause);
  }

  /** End the connection; the broker decides about the will and the session. */
  close(cause: CloseCause): void {
    if (this.state === 'closed') return;
    const wasOpen = this.state === 'open';
    this.state = 'closed';
    this.closeCause = cause;
    this.pending = undefined;
    this.heldChunks = undefined;
    this.releasePublishers();
    this.conn.close();
    this.broker.clientClosed(this, wasOpen, cause);
  }

  // transport events
  onDrain(): void {
    this.writable = true;
    this.pump();
  }

  onClose(error?: Error): void {
    if (this.state === 'closed') {
      this.broker.connectionGone(this);
      return;
    }
    if (error) this.broker.log.debug({ clientId: this.clientId, err: error.message }, 'socket error');
    this.close('error');
    this.broker.connectionGone(this);
  }

  // -------------------------------------------------------------- flow control

  /** Stop reading this publisher until `subscriber` drains. */
  holdFor(subscriber: MqttClient): void {
    if (subscriber.blockedPublishers.has(this)) return;
    subscriber.blockedPublishers.add(this);
    if (this.blockers++ === 0) this.conn.pause();
  }

  /** Stop reading for `ms` (rate limit); the current packet is still handled. */
  private throttle(ms: number): void {
    if (ms <= 0 || this.throttled) return;
    this.throttled = true;
    if (this.blockers++ === 0) this.conn.pause();
    setTimeout(() => {
      this.throttled = false;
      this.release();
    }, ms).unref();
  }

  private releasePublishers(): void {
    if (this.blockedPublishers.size === 0) return;
    for (const p of this.blockedPublishers) p.release();
    this.blockedPublishers.clear();
  }

  /** Reading is paused by flow control: silence from this client is ours, not its own. */
  get held(): boolean {
    return this.blockers > 0;
  }

  private release(): void {
    if (this.blockers === 0 || --this.blockers > 0) return;
    if (this.state === 'closed') return;
    // [MQTT-3.1.2-22] keep alive counts the client's silence; while held, we were not reading
    this.lastActivity = Date.now();
    this.conn.resume();
    // what was read before the pause is parsed on the next turn, never inside a subscriber's pump
    if ((this.pending || this.heldChunks) && !this.resumeScheduled) {
      this.resumeScheduled = true;
      setImmediate(() => {
        this.resumeScheduled = false;
        if (this.blockers === 0) this.drainInput();
      });
    }
  }

  /** Called by the housekeeping sweep: a subscriber congested too long stops holding publishers. */
  checkStall(now: number, stallMs: number): void {
    if (this.congestedSince !== 0 && !this.stalled && now - this.congestedSince >= stallMs) {
      this.stalled = true;
      this.broker.log.warn({ clientId: this.clientId, queued: this.session?.queued }, 'subscriber stalled: no longer holding publishers back, QoS 0 may be dropped');
      this.releasePublishers();
    }
  }

  // -------------------------------------------------------------- output

  writePacket(packet: Packet, version?: 3 | 4 | 5): void {
    // A successful ack without properties is four fixed bytes in every version
    // ([MQTT-3.4.2-1]: v5 may omit reason code 0 and the properties)
    const ackType = ACK_FIRST_BYTE[packet.cmd];
    if (ackType !== undefined) {
      const ack = packet as { messageId?: number; reasonCode?: number; properties?: object };
      if (!ack.reasonCode && !ack.properties && ack.messageId !== undefined) {
        const bytes = Buffer.allocUnsafe(4);
        bytes[0] = ackType;
        bytes[1] = 2;
        bytes.writeUInt16BE(ack.messageId, 2);
        return this.rawWrite(bytes, packet.cmd);
      }
    }
    let bytes: Buffer | undefined;
    try {
      bytes = mqttPacket.generate(packet, { protocolVersion: version ?? this.protocolVersion });
    } catch (err) {
      this.broker.log.error({ clientId: this.clientId, err: (err as Error).message, cmd: packet.cmd }, 'cannot encode packet');
      return;
    }
    if (bytes.length > this.clientMaxPacketSize && packet.cmd !== 'connack') {
      // [MQTT-3.1.2-24] drop reason strings rather than exceed the client's limit
      const p = packet as { properties?: { reasonString?: string } };
      if (p.properties?.reasonString !== undefined) {
        delete p.properties.reasonString;
        return this.writePacket(packet, version);
      }
      return;
    }
    this.rawWrite(bytes, packet.cmd);
  }

  private rawWrite(bytes: Buffer, cmd: string): void {
    if (this.state === 'closed' && cmd !== 'disconnect' && cmd !== 'connack') return;
    this.broker.countPacket(cmd, false);
    this.broker.stats.bytesSent += bytes.length;
    if (!this.conn.write(bytes)) this.writable = false;
  }

  destroy(): void {
    this.conn.destroy();
  }
}

function pickProperties(p: {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: import('mqtt-packet').UserProperties;
}): MessageProperties | undefined {
  let out: MessageProperties | undefined;
  if (p.payloadFormatIndicator !== undefined) (out ??= {}).payloadFormatIndicator = p.payloadFormatIndicator;
  if (p.contentType !== undefined) (out ??= {}).contentType = p.contentType;
  if (p.responseTopic !== undefined) (out ??= {}).responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) (out ??= {}).correlationData = p.correlationData;
  if (p.userProperties !== undefined) (out ??= {}).userProperties = p.userProperties;
  return out;
}
