import type { Packet } from 'mqtt-packet';
import type { Connection, ConnectionEvents, TransportKind } from '../transport/connection.js';
import type { Message } from '../mqtt/message.js';
import type { Session } from '../session/session.js';
import { RC, v3ConnackCode } from '../mqtt/reason-codes.js';
import { FRAME_INCOMPLETE, FRAME_MALFORMED, frameLength } from './framing.js';
import { PacketProblem, readPacket } from '../mqtt/validate.js';
import type { BrokerCore, CoreClient } from './core.js';
import type { ClientState, CloseCause } from './lifecycle.js';
import { Outbound } from './outbound.js';

export type { CloseCause } from './lifecycle.js';

/**
 * Serves one decoded packet (handlers/index.ts). Given to the connection by the broker wiring,
 * so that the connection does not import the handlers, which work on it.
 */
export type PacketHandler = (core: BrokerCore, client: MqttClient, packet: Packet, frame: Buffer) => void;

const frameOut = { remaining: 0 };

/**
 * One MQTT network connection, I/O only: input (framing, decoding, pausing the reads for flow
 * control) and the outbound side (`out`). What a packet means is decided by its handler in
 * handlers/; the fields below are the per-connection state those handlers keep.
 */
export class MqttClient implements ConnectionEvents, CoreClient {
  state: ClientState = 'new';
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
  /** Topic aliases the client set (v5), created when first used: most clients never use them. */
  aliasesIn: Map<number, string> | undefined;
  readonly out: Outbound;
  closeCause: CloseCause | undefined;
  /**
   * [durable] Sends a PUBACK/PUBREC once the message is on disk (handlers/publish.ts): one
   * function per connection, handed to onDurable with the packet in its argument, instead of a
   * closure per message.
   */
  storedAck: ((err: Error | undefined, arg: number) => void) | undefined;

  private pending: Buffer | undefined;
  /** Chunks received after `pending`, not yet joined to it. */
  private heldChunks: Buffer[] | undefined;
  private heldBytes = 0;
  /** Bytes `pending` must reach before the next packet is whole (0: unknown). */
  private needed = 0;
  /** Reading is paused by flow control (subscribers this client feeds are backed up). */
  private blockers = 0;
  private resumeScheduled = false;
  private throttled = false;

  constructor(
    private readonly core: BrokerCore,
    private readonly conn: Connection,
    private readonly handle: PacketHandler,
  ) {
    this.transport = conn.transport;
    this.remoteAddress = conn.remoteAddress;
    if (conn.certificateSubject !== undefined) this.certificateSubject = conn.certificateSubject;
    if (conn.certificateFields !== undefined) this.certificateFields = conn.certificateFields;
    this.out = new Outbound(core, this, conn);
  }

  get isV5(): boolean {
    return this.protocolVersion === 5;
  }

  // ---------------------------------------------------------------- input

  onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.core.stats.bytesReceived += chunk.length;
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

  /** Frame, decode and hand on every whole packet received, until flow control or the handshake stops it. */
  drainInput(): void {
    if (this.heldChunks) {
      this.pending = Buffer.concat(this.pending ? [this.pending, ...this.heldChunks] : this.heldChunks);
      this.heldChunks = undefined;
      this.heldBytes = 0;
    }
    this.needed = 0;
    let buf = this.pending;
    if (!buf) return;
    let offset = 0;
    const max = this.core.config.maxPacketSize;
    while (offset < buf.length && this.state !== 'closed') {
      if (this.blockers > 0) break; // flow control: keep the rest for resume()
      if (this.state === 'authenticating') break; // nothing past CONNECT until the hooks answer
      const len = frameLength(buf, offset, frameOut);
      if (len === FRAME_INCOMPLETE) {
        if (frameOut.remaining > max) return this.protocolViolation(RC.PACKET_TOO_LARGE, 'packet too large');
        break;
      }
      if (len === FRAME_MALFORMED) return this.protocolViolation(RC.MALFORMED_PACKET, 'malformed remaining length');
      // [MQTT-5-3.2.2-15] packets over the Maximum Packet Size we announced are refused
      if (len > max) return this.protocolViolation(RC.PACKET_TOO_LARGE, 'packet too large');
      if (offset + len > buf.length) {
        this.needed = len; // parse again once the whole packet is here
        break;
      }
      const packetBytes = buf.subarray(offset, offset + len);
      offset += len;
      const packet = readPacket(packetBytes, this.state === 'new' ? 4 : this.protocolVersion);
      if (packet instanceof PacketProblem) {
        this.onBadPacket(packet);
        break;
      }
      try {
        this.handle(this.core, this, packet, packetBytes);
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

  /** A packet that could not be read: its code is answered where the protocol allows, then close. */
  private onBadPacket(problem: PacketProblem): void {
    if (problem.reasonCode === RC.UNSUPPORTED_PROTOCOL_VERSION) {
      // [MQTT-3.1.1-3.1.2-2] unsupported protocol level: CONNACK 0x01 (3.1.1 format), then close
      if (this.state === 'new') {
        this.core.countProtocolError(RC.UNSUPPORTED_PROTOCOL_VERSION);
        this.out.writePacket({ cmd: 'connack', returnCode: v3ConnackCode(RC.UNSUPPORTED_PROTOCOL_VERSION), sessionPresent: false }, 4);
        return this.close('protocol');
      }
      return this.protocolViolation(RC.PROTOCOL_ERROR, 'second CONNECT'); // [MQTT-5-3.1.0-2]
    }
    this.protocolViolation(problem.reasonCode, problem.reason);
  }

  /** Stop reading while the CONNECT's (possibly slow) authentication hooks decide. */
  pauseInput(): void {
    this.conn.pause();
  }

  /** CONNECT answered: read again (unless flow control holds us) and serve what arrived behind it. */
  resumeInput(): void {
    if (this.blockers === 0) this.conn.resume();
    this.drainInput();
  }

  // -------------------------------------------------------------- flow control

  /** Stop reading this publisher until `subscriber` drains. */
  holdFor(subscriber: Outbound): void {
    if (!subscriber.holdPublisher(this)) return;
    if (this.blockers++ === 0) this.conn.pause();
  }

  /** Stop reading for `ms` (rate limit); the current packet is still handled. */
  throttle(ms: number): void {
    if (ms <= 0 || this.throttled) return;
    this.throttled = true;
    if (this.blockers++ === 0) this.conn.pause();
    setTimeout(() => {
      this.throttled = false;
      this.release();
    }, ms).unref();
  }

  /** Reading is paused by flow control: silence from this client is ours, not its own. */
  get held(): boolean {
    return this.blockers > 0;
  }

  release(): void {
    if (this.blockers === 0 || --this.blockers > 0) return;
    if (this.state === 'closed') return;
    // [MQTT-5-3.1.2-22] keep alive counts the client's silence; while held, we were not reading
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

  // -------------------------------------------------------------- ending

  /** An unexpected exception while serving this client (`packet`): count and log it, answer 0x83, close. */
  internalError(err: unknown, packet?: Packet): void {
    const cmd = packet?.cmd ?? 'connect';
    this.core.countInternalError(`packet_${cmd}`, err, this, packet && 'topic' in packet && typeof packet.topic === 'string' ? packet.topic : undefined);
    this.protocolViolation(RC.IMPLEMENTATION_SPECIFIC_ERROR, 'internal error');
  }

  /** Reply with the reason code where v5 allows it, then close (the will is published). */
  protocolViolation(reasonCode: number, reason: string): void {
    if (this.state === 'closed') return;
    this.core.countProtocolError(reasonCode);
    this.core.log.debug({ clientId: this.clientId, address: this.remoteAddress, reason, code: reasonCode }, 'protocol violation');
    if (this.state === 'new' || this.state === 'authenticating') {
      if (this.isV5 && this.state === 'authenticating') {
        this.out.writePacket({ cmd: 'connack', reasonCode, sessionPresent: false });
      }
      this.will = undefined;
    } else if (this.isV5) {
      this.out.writePacket({ cmd: 'disconnect', reasonCode, properties: { reasonString: reason } });
    }
    this.close('protocol');
  }

  /** Server-initiated DISCONNECT (v5 with a reason code), then close. */
  disconnect(reasonCode: number, cause: CloseCause, reasonString?: string): void {
    if (this.state === 'closed') return;
    if (this.isV5 && this.state === 'open') {
      this.out.writePacket({ cmd: 'disconnect', reasonCode, ...(reasonString ? { properties: { reasonString } } : {}) });
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
    this.out.releasePublishers();
    this.conn.close();
    this.core.clientClosed(this, wasOpen, cause);
  }

  destroy(): void {
    this.conn.destroy();
  }

  // -------------------------------------------------------------- transport events

  onDrain(): void {
    this.out.writable = true;
    this.out.pump();
  }

  onClose(error?: Error): void {
    if (this.state === 'closed') {
      this.core.connectionGone(this);
      return;
    }
    if (error) this.core.log.debug({ clientId: this.clientId, err: error.message }, 'socket error');
    this.close('error');
    this.core.connectionGone(this);
  }
}
