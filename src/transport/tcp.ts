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
 * Connections written to during this turn of the event loop. They are flushed together in
 * the check phase, after every socket that was readable has been served (as Redis writes its
 * replies before it sleeps): a peer process with many connections is then woken once for a
 * burst of answers instead of once per answer, and each connection still gets one writev.
 */
let toFlush: SocketConnection[] = [];
let flushScheduled = false;

function flushAll(): void {
  const list = toFlush;
  toFlush = [];
  flushScheduled = false;
  for (const c of list) c.uncork();
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
    const socket = this.socket;
    if (socket.destroyed) return false;
    // Packets written in one turn of the event loop leave in one writev: cork on the
    // first write, uncork with every other connection after this turn's I/O (flushAll).
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      toFlush.push(this);
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flushAll);
      }
    }
    if (socket.write(data)) return true;
    // Only this turn's batching went past the high-water mark: send the batch now rather than
    // report a backpressure the peer did not cause (publishers would be held for nothing).
    this.uncork();
    return socket.writableLength < socket.writableHighWaterMark;
  }

  private corked = false;

  /** @internal Sends what this turn wrote (one writev); called by flushAll. */
  uncork(): void {
    this.corked = false;
    this.socket.uncork();
  }

  bufferedAmount(): number {
    return this.socket.writableLength;
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  close(): void {
    this.socket.end();
    // a peer that never reads must not keep the socket half-open forever
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// One set of listener functions for every socket (`this` is the socket), rather than four
// closures and their context per connection: about 270 bytes each at 10,000 connections.
function onSocketData(this: AttachedSocket, chunk: Buffer): void {
  this[kConnection].events!.onData(chunk);
}

function onSocketDrain(this: AttachedSocket): void {
  this[kConnection].events!.onDrain();
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
