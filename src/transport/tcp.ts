import net from 'node:net';
import tls from 'node:tls';
import type { Connection, ConnectionAcceptor, ConnectionEvents, Listener, TransportKind } from './connection.js';
import { certificateIdentity } from './tls-options.js';
import { listenServer } from './listen.js';

/** Subject fields of a verified peer certificate, as "CN=a,O=b" and a record. */
export interface PeerIdentity {
  certificateSubject?: string;
  certificateFields?: Record<string, string>;
}

/**
 * Output is batched per connection and per turn of the event loop: every packet written during
 * one turn is copied (or encoded in place, reserve/commit) into the connection's staging buffer,
 * and the connections written to are flushed together in the check phase, after every socket
 * that was readable has been served (as Redis writes its replies before it sleeps): a peer with
 * many connections is woken once for a burst of answers instead of once per answer, and each
 * connection makes one write a turn, of one buffer, rather than a writev of one buffer object
 * (and a stream write request) per packet.
 */
let toFlush: SocketConnection[] = [];
let flushScheduled = false;

function flushAll(): void {
  const list = toFlush;
  toFlush = [];
  flushScheduled = false;
  for (const c of list) c.flush();
}

/** Staging buffer of a connection: what one write carries at most (also the socket's default high-water mark). */
const STAGE_BYTES = 16 * 1024;
/** Packets larger than this are written as they are (after what is staged), not copied. */
const STAGE_MAX_PACKET = 4 * 1024;

/**
 * Connections holding a staging buffer. The sweep drops the buffer of those that wrote nothing
 * since the last sweep, so an idle connection holds none (memory per idle connection).
 */
const staging = new Set<SocketConnection>();
let sweepTimer: NodeJS.Timeout | undefined;
const SWEEP_MS = 2000;

function sweepStaging(): void {
  for (const c of staging) {
    if (c.dropIdleStage()) staging.delete(c);
  }
  if (staging.size === 0 && sweepTimer) {
    clearInterval(sweepTimer);
    sweepTimer = undefined;
  }
}

/** The socket's SocketConnection, for the shared listeners below. */
const kConnection = Symbol('edb.connection');
type AttachedSocket = net.Socket & { [kConnection]: SocketConnection };

/** Adapts a node:net / node:tls socket to the Connection interface. */
class SocketConnection implements Connection {
  readonly remoteAddress: string;
  readonly certificateSubject?: string;
  readonly certificateFields?: Readonly<Record<string, string>>;
  /** What the broker gave back for this connection (set by attach). */
  events: ConnectionEvents | undefined;
  /** onClose was called (by 'error' or 'close', whichever came first). */
  closed = false;
  /** This turn's output, not yet given to the socket: out[0, outLen). */
  private out: Buffer | undefined;
  private outLen = 0;
  /**
   * The one packet written this turn by a connection without a staging buffer, kept as it is:
   * a connection that writes one packet a turn (a CONNACK, a PINGRESP) never gets a buffer,
   * so 10,000 connecting clients do not hold 16 KiB each. A second packet in the same turn
   * gives the connection its staging buffer (and copies this one into it first).
   */
  private single: Uint8Array | undefined;
  /** In the flush list for this turn. */
  private queued = false;
  /** Wrote since the last sweep (the staging buffer is in use). */
  private used = false;
  /** The socket's buffer was past its high-water mark after our last write: until 'drain'. */
  blocked = false;

  constructor(
    private readonly socket: net.Socket,
    readonly transport: TransportKind,
    identity: PeerIdentity,
  ) {
    this.remoteAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    if (identity.certificateSubject !== undefined) this.certificateSubject = identity.certificateSubject;
    if (identity.certificateFields !== undefined) this.certificateFields = identity.certificateFields;
  }

  write(data: Uint8Array): boolean {
    if (this.socket.destroyed) return false;
    const n = data.length;
    if (n > STAGE_MAX_PACKET) {
      // large: after what is staged, as it is
      if (this.outLen > 0 || this.single !== undefined) this.flush();
      this.socket.write(data);
      this.blocked = this.socket.writableLength >= this.socket.writableHighWaterMark;
      return !this.blocked;
    }
    if (this.out === undefined && this.single === undefined) {
      this.single = data;
      this.enqueue();
      return !this.blocked;
    }
    const out = this.room(n);
    if (n > 32) out.set(data, this.outLen);
    else for (let i = 0, p = this.outLen; i < n; i++) out[p + i] = data[i]!;
    this.outLen += n;
    return !this.blocked;
  }

  /**
   * Room for `size` bytes at the end of this turn's output, to encode a packet in place: the
   * buffer to write them into at `reservedAt`; commit(size) then sends them with the batch.
   * Undefined for a packet too large to stage (use write()) or a destroyed socket.
   */
  reserve(size: number): Buffer | undefined {
    if (size > STAGE_MAX_PACKET || this.socket.destroyed) return undefined;
    // the turn's first packet of a connection without a buffer: encoded into one of its own (write)
    if (this.out === undefined && this.single === undefined) return undefined;
    return this.room(size);
  }

  get reservedAt(): number {
    return this.outLen;
  }

  commit(size: number): boolean {
    this.outLen += size;
    return !this.blocked;
  }

  /** The staging buffer with room for `n` more bytes (n <= STAGE_MAX_PACKET), this connection queued for the flush. */
  private room(n: number): Buffer {
    let out = this.out;
    if (out !== undefined && this.outLen + n > out.length) {
      this.flush();
      out = this.out;
    }
    if (out === undefined) {
      out = this.out = Buffer.allocUnsafeSlow(STAGE_BYTES);
      staging.add(this);
      sweepTimer ??= setInterval(sweepStaging, SWEEP_MS).unref();
      const first = this.single;
      if (first !== undefined) {
        this.single = undefined;
        out.set(first, 0);
        this.outLen = first.length;
      }
    }
    this.used = true;
    this.enqueue();
    return out;
  }

  /** In this turn's flush list. */
  private enqueue(): void {
    if (this.queued) return;
    this.queued = true;
    toFlush.push(this);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flushAll);
    }
  }

  /** @internal Gives what is staged to the socket (one write); called by flushAll. */
  flush(): void {
    this.queued = false;
    const single = this.single;
    if (single !== undefined) {
      // invariant: a single packet only while there is no staging buffer (so nothing staged)
      this.single = undefined;
      if (this.socket.destroyed) return;
      this.socket.write(single);
      this.blocked = this.socket.writableLength >= this.socket.writableHighWaterMark;
      return;
    }
    const n = this.outLen;
    if (n === 0) return;
    const out = this.out!;
    this.outLen = 0;
    const socket = this.socket;
    if (socket.destroyed) return;
    socket.write(n === out.length ? out : out.subarray(0, n));
    // The buffer is written again only once the socket no longer holds any of it: a write the
    // kernel took at once leaves nothing queued; otherwise the stream keeps these bytes until
    // sent, and the next turn stages into a new buffer.
    const queued = socket.writableLength;
    if (queued !== 0) this.out = undefined;
    this.blocked = queued >= socket.writableHighWaterMark;
  }

  /** @internal The sweep: true (and the staging buffer dropped) when nothing was written since the last one. */
  dropIdleStage(): boolean {
    if (this.used && !this.closed && !this.socket.destroyed) {
      this.used = false;
      return false;
    }
    if (this.outLen > 0 && !this.socket.destroyed) return false;
    this.out = undefined;
    this.outLen = 0;
    return true;
  }

  bufferedAmount(): number {
    return this.socket.writableLength + this.outLen + (this.single?.length ?? 0);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  close(): void {
    this.flush();
    this.socket.end();
    // a peer that never reads must not keep the socket half-open forever
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.outLen = 0;
    this.single = undefined;
    this.socket.destroy();
  }
}

// One set of listener functions for every socket (`this` is the socket), rather than four
// closures and their context per connection: about 270 bytes each at 10,000 connections.
function onSocketData(this: AttachedSocket, chunk: Buffer): void {
  this[kConnection].events!.onData(chunk);
}

function onSocketDrain(this: AttachedSocket): void {
  const c = this[kConnection];
  c.blocked = false;
  c.events!.onDrain();
}

function onSocketError(this: AttachedSocket, err: Error): void {
  const c = this[kConnection];
  if (!c.closed) {
    c.closed = true;
    c.events!.onClose(err);
  }
}

function onSocketClose(this: AttachedSocket): void {
  const c = this[kConnection];
  if (!c.closed) {
    c.closed = true;
    c.events!.onClose();
  }
}

function attach(socket: net.Socket, acceptor: ConnectionAcceptor, kind: TransportKind, identity: PeerIdentity): void {
  socket.setNoDelay(true);
  const connection = new SocketConnection(socket, kind, identity);
  connection.events = acceptor.accept(connection);
  (socket as AttachedSocket)[kConnection] = connection;
  socket.on('data', onSocketData);
  socket.on('drain', onSocketDrain);
  socket.on('error', onSocketError);
  socket.on('close', onSocketClose);
}

function listenerOf(server: net.Server, name: string, transport: TransportKind, engine: string, port: number): Listener {
  return {
    name,
    transport,
    engine,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}

/** MQTT over TCP (node:net). */
export async function startTcpListener(acceptor: ConnectionAcceptor, host: string, port: number): Promise<Listener> {
  const server = net.createServer({ noDelay: true }, (socket) => attach(socket, acceptor, 'tcp', {}));
  const bound = await listenServer(server, 'mqtt', host, port);
  return listenerOf(server, 'mqtt', 'tcp', 'node:net', bound);
}

/** MQTT over TLS (node:tls); with `requestCert`, the verified certificate's subject is the client's identity. */
export async function startTlsListener(
  acceptor: ConnectionAcceptor,
  host: string,
  port: number,
  options: tls.TlsOptions,
): Promise<Listener> {
  const server = tls.createServer(options, (socket) => {
    const identity = certificateIdentity(socket); // same identity format as WSS (tls-options.ts)
    attach(socket, acceptor, 'tls', identity);
  });
  server.on('tlsClientError', () => undefined); // a failed handshake concerns only that peer
  const bound = await listenServer(server, 'mqtts', host, port);
  return listenerOf(server, 'mqtts', 'tls', 'node:tls', bound);
}
