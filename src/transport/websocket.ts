/**
 * MQTT over WebSocket (and secure WebSocket): one listener, two engines.
 *
 * - uWebSockets.js (native, fast): its sockets are not Node streams; `UwsConnection` adapts
 *   one directly to the Connection interface (send() reports backpressure, getBufferedAmount(),
 *   the `drain` handler).
 * - `ws` on node:http / node:https: the fallback when the addon cannot load, when
 *   EDB_WS_ENGINE=ws, and for WSS with client certificates (uWebSockets.js does not show the
 *   peer certificate to JavaScript, and the certificate subject is the client's identity).
 *
 * Both accept the paths /mqtt and /, the sub-protocols "mqtt" and "mqttv3.1", and binary
 * frames only. Frames are a byte stream to the broker: a packet split across frames and
 * several packets in one frame both parse, because the broker's parser sees the bytes only.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { WebSocket as WsSocket, WebSocketServer as WsServer } from 'ws';
import type { Connection, ConnectionAcceptor, ConnectionEvents, Listener, TransportKind } from './connection.js';
import { listenServer } from './listen.js';
import { certificateIdentity, type CertificateIdentity, type TlsServerOptions } from './tls-options.js';
import {
  chooseEngine,
  loadUws,
  uwsAddressText,
  type UwsListenSocket,
  type UwsWebSocket,
  type WsEngineName,
  type WsEngineSetting,
} from './uws.js';

/** Paths that accept MQTT over WebSocket. */
export const MQTT_WS_PATHS = ['/mqtt', '/'] as const;
/** Sub-protocols accepted, in order of preference. [MQTT-5-6.0.0-4] the server selects "mqtt". */
export const MQTT_WS_PROTOCOLS = ['mqtt', 'mqttv3.1'] as const;

/** write() returns false once this many bytes wait in the socket's buffer. */
export const WS_HIGH_WATER = 64 * 1024;
/** onDrain is signalled once the buffer is back under this. */
export const WS_LOW_WATER = 16 * 1024;

export interface WebSocketListenerOptions {
  /** Listener name for logs, /readyz and the status page ("ws", "wss"). */
  name?: string;
  host: string;
  port: number;
  engine: WsEngineSetting;
  acceptor: ConnectionAcceptor;
  log: Logger;
  /** Largest MQTT packet accepted; frames may hold a little more (several packets). */
  maxPacketSize: number;
  /**
   * uWebSockets.js only (it cannot stop reading a WebSocket): bytes held from a client while
   * the broker has paused it; past this the client is closed. Default 32 MiB.
   */
  maxPausedBytes?: number;
  /**
   * close() stops accepting at once, then gives open connections this long to be closed by
   * the broker (which tells v5 clients why) before it closes the rest. Default 10 s.
   */
  closeTimeoutMs?: number;
  /** TLS makes it a WSS listener. */
  tls?: TlsServerOptions;
}

export interface WebSocketListener extends Listener {
  readonly transport: 'ws' | 'wss';
  readonly engine: WsEngineName;
  /** Why `ws` runs instead of uWebSockets.js, if it does. */
  readonly fallbackReason: string | undefined;
  /** True from bind until close() starts. */
  readonly listening: boolean;
  /** Connections open right now. */
  connectionCount(): number;
}

/** The sub-protocol to answer with, or undefined when the offer has none we speak. */
export function selectSubprotocol(offered: Iterable<string>): string | undefined {
  const set = new Set<string>();
  for (const p of offered) set.add(p.trim().toLowerCase());
  return MQTT_WS_PROTOCOLS.find((p) => set.has(p));
}

function parseProtocolHeader(header: string | undefined): string[] {
  return header ? header.split(',').map((p) => p.trim()).filter(Boolean) : [];
}

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/** Why an upgrade is refused, or undefined to accept. */
function refuseUpgrade(path: string, offered: string[]): string | undefined {
  if (!(MQTT_WS_PATHS as readonly string[]).includes(path)) return 'not an MQTT path (use /mqtt)';
  // A client that offers no sub-protocol at all is accepted; one that offers only others is not.
  if (offered.length > 0 && selectSubprotocol(offered) === undefined) return 'no supported sub-protocol (mqtt, mqttv3.1)';
  return undefined;
}

/**
 * Starts a WebSocket listener on the engine `options.engine` asks for (falling back to
 * `ws` when uWebSockets.js cannot load or cannot do what is asked) and resolves once bound.
 */
export async function startWebSocketListener(options: WebSocketListenerOptions): Promise<WebSocketListener> {
  const transport: 'ws' | 'wss' = options.tls ? 'wss' : 'ws';
  const name = options.name ?? transport;
  let choice = chooseEngine(options.engine);
  if (choice.engine === 'uWebSockets.js' && options.tls?.requestCert) {
    choice = { engine: 'ws', fallbackReason: 'client certificates are required and uWebSockets.js does not expose the peer certificate' };
  }
  const log = options.log.child({ listener: name });
  if (choice.fallbackReason && options.engine === 'uws') log.warn({ reason: choice.fallbackReason }, 'EDB_WS_ENGINE=uws but uWebSockets.js is not used');
  const listener =
    choice.engine === 'uWebSockets.js'
      ? await startUwsListener(options, name, transport, log)
      : await startWsListener(options, name, transport, log, choice.fallbackReason);
  log.info(
    { port: listener.port, engine: listener.engine, ...(listener.fallbackReason ? { fallbackReason: listener.fallbackReason } : {}) },
    `MQTT over ${transport === 'wss' ? 'secure ' : ''}WebSocket on port ${listener.port} (engine ${listener.engine})`,
  );
  return listener;
}

function maxFrame(options: WebSocketListenerOptions): number {
  // A frame may carry several packets; the broker enforces the per-packet limit.
  return Math.min(options.maxPacketSize * 2 + 1024, 512 * 1024 * 1024);
}

/* ------------------------------------------------------------------ shared */

/** Writes within one tick are coalesced into one frame; a frame is sent early at this size. */
export const WS_FRAME_BYTES = 64 * 1024;

/**
 * What both engines share: writes made in the same tick are gathered and sent as one
 * binary frame on the next tick (MQTT over WebSocket allows several packets per frame,
 * [MQTT-5-6.0.0-2] the receiver must not assume packets are aligned on frame boundaries).
 * A broker that fans one message out writes many small packets per tick; one frame and one
 * syscall instead of one per packet is what keeps WebSocket close to TCP.
 * write() reports backpressure from the gathered bytes plus the engine's send buffer;
 * onDrain comes once that is back under WS_LOW_WATER.
 */
abstract class WebSocketConnection implements Connection {
  abstract readonly transport: TransportKind;
  abstract readonly remoteAddress: string;
  events: ConnectionEvents | undefined;
  closed = false;
  private needDrain = false;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  private readonly flushNow = (): void => this.flush();

  /** Hands one frame to the engine; returns false when the connection had to be closed. */
  protected abstract sendFrame(frame: Uint8Array): boolean;
  /** Bytes the engine holds and has not yet given to the kernel. */
  protected abstract engineBuffered(): number;
  /** Close frame after what is already sent. */
  protected abstract endSocket(): void;
  /** Close now. */
  protected abstract killSocket(): void;
  abstract pause(): void;
  abstract resume(): void;

  write(data: Uint8Array): boolean {
    if (this.closed) return false;
    this.pending.push(data);
    this.pendingBytes += data.length;
    if (this.pendingBytes >= WS_FRAME_BYTES) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flushNow);
    }
    if (this.pendingBytes + this.engineBuffered() < WS_HIGH_WATER) return true;
    this.needDrain = true;
    return false;
  }

  bufferedAmount(): number {
    return this.closed ? 0 : this.pendingBytes + this.engineBuffered();
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    if (!this.closed) this.endSocket();
  }

  destroy(): void {
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.closed) this.killSocket();
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.pendingBytes === 0 || this.closed) return;
    const frame = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.sendFrame(frame)) return;
    // The engine may have taken it all without ever reporting backpressure: then no drain
    // event will come from it, so tell the broker here.
    this.drained();
  }

  /** From the engine's drain signal, and after each flush. */
  drained(): void {
    if (this.needDrain && !this.closed && this.pendingBytes + this.engineBuffered() < WS_LOW_WATER) {
      this.needDrain = false;
      this.events?.onDrain();
    }
  }
}

/**
 * Waits until the broker has closed every connection (a graceful stop tells each client),
 * at most `timeoutMs`, then closes what is left.
 */
async function drainConnections(open: Set<WebSocketConnection>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (open.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  for (const conn of [...open]) conn.destroy();
}

/* ------------------------------------------------------------------ uWebSockets.js */

interface UwsUserData {
  remoteAddress: string;
  protocol: string;
  conn?: UwsConnection;
}

/**
 * One uWebSockets.js socket as a Connection. uWS has no read pause for WebSockets, so
 * pause() holds incoming bytes (bounded by maxPausedBytes) until resume().
 */
class UwsConnection extends WebSocketConnection {
  readonly transport: TransportKind;
  readonly remoteAddress: string;
  private paused = false;
  private held: Buffer[] = [];
  private heldBytes = 0;

  constructor(
    private readonly ws: UwsWebSocket<UwsUserData>,
    transport: TransportKind,
    remoteAddress: string,
    private readonly maxPausedBytes: number,
    private readonly log: Logger,
  ) {
    super();
    this.transport = transport;
    this.remoteAddress = remoteAddress;
  }

  protected sendFrame(frame: Uint8Array): boolean {
    // 1: sent, 0: kept as backpressure (drains later), 2: dropped past maxBackpressure.
    if (this.ws.send(frame, true, false) !== 2) return true;
    // A dropped frame would corrupt the MQTT byte stream: close rather than continue.
    this.log.warn({ remoteAddress: this.remoteAddress }, 'WebSocket send buffer overflow, closing');
    this.destroy();
    return false;
  }

  protected engineBuffered(): number {
    return this.closed ? 0 : this.ws.getBufferedAmount();
  }

  protected endSocket(): void {
    this.ws.end(1000);
  }

  protected killSocket(): void {
    this.ws.close();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    while (this.held.length > 0 && !this.paused && !this.closed) {
      const chunk = this.held.shift()!;
      this.heldBytes -= chunk.length;
      this.events?.onData(chunk);
    }
  }

  /** From the uWS message handler. `data` is valid only during the call: it is copied. */
  received(data: ArrayBuffer): void {
    const chunk = Buffer.copyBytesFrom(new Uint8Array(data));
    if (!this.paused) {
      this.events?.onData(chunk);
      return;
    }
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    if (this.heldBytes > this.maxPausedBytes) {
      this.log.warn({ remoteAddress: this.remoteAddress, heldBytes: this.heldBytes }, 'client kept sending while paused, closing');
      this.destroy();
    }
  }
}

async function startUwsListener(
  options: WebSocketListenerOptions,
  name: string,
  transport: 'ws' | 'wss',
  log: Logger,
): Promise<WebSocketListener> {
  const loaded = loadUws();
  if (!loaded.ok) throw new Error(`uWebSockets.js cannot load: ${loaded.reason}`);
  const uws = loaded.uws;
  const app = options.tls
    ? uws.SSLApp({ cert_file_name: options.tls.files.cert, key_file_name: options.tls.files.key })
    : uws.App();
  const open = new Set<UwsConnection>();
  // uWS cannot stop reading a WebSocket: while the broker holds a publisher back (a
  // subscriber it feeds is congested, at most EDB_STALL_TIMEOUT_MS) its frames wait here.
  const maxPausedBytes = options.maxPausedBytes ?? Math.max(32 * 1024 * 1024, options.maxPacketSize * 4);
  let listening = false;

  const behavior = {
    compression: uws.DISABLED,
    maxPayloadLength: maxFrame(options),
    // Keep alive is MQTT's job (the broker's keep-alive timer); uWS's idle timeout is off.
    idleTimeout: 0,
    sendPingsAutomatically: false,
    // Far above WS_HIGH_WATER: the broker's bounded queue stops writing long before this.
    maxBackpressure: 64 * 1024 * 1024,
    closeOnBackpressureLimit: 0,
    upgrade: (res: import('./uws.js').UwsHttpResponse, req: import('./uws.js').UwsHttpRequest, context: unknown) => {
      const path = req.getUrl();
      const offered = parseProtocolHeader(req.getHeader('sec-websocket-protocol'));
      const refusal = refuseUpgrade(path, offered);
      if (refusal) {
        res.writeStatus('400 Bad Request').end(refusal, true);
        return;
      }
      const userData: UwsUserData = {
        // uWebSockets.js gives the peer's address but not its port.
        remoteAddress: uwsAddressText(res.getRemoteAddressAsText()),
        protocol: selectSubprotocol(offered) ?? '',
      };
      res.upgrade(
        userData,
        req.getHeader('sec-websocket-key'),
        userData.protocol,
        req.getHeader('sec-websocket-extensions'),
        context as import('uWebSockets.js').us_socket_context_t,
      );
    },
    open: (ws: UwsWebSocket<UwsUserData>) => {
      const data = ws.getUserData();
      const conn = new UwsConnection(ws, transport, data.remoteAddress, maxPausedBytes, log);
      data.conn = conn;
      open.add(conn);
      conn.events = options.acceptor.accept(conn);
    },
    message: (ws: UwsWebSocket<UwsUserData>, message: ArrayBuffer, isBinary: boolean) => {
      const conn = ws.getUserData().conn;
      if (!conn) return;
      if (!isBinary) {
        // [MQTT-5-6.0.0-1] MQTT packets in a text frame: close the connection.
        ws.end(1003, 'MQTT needs binary frames');
        return;
      }
      conn.received(message);
    },
    drain: (ws: UwsWebSocket<UwsUserData>) => {
      ws.getUserData().conn?.drained();
    },
    close: (ws: UwsWebSocket<UwsUserData>, code: number) => {
      const conn = ws.getUserData().conn;
      if (!conn) return;
      conn.closed = true;
      open.delete(conn);
      const abnormal = code !== 1000 && code !== 1001 && code !== 1005;
      // uWS calls this synchronously from end()/close(), possibly from inside the broker's
      // own write(); report it on the next tick, as node:net does, to avoid re-entrancy.
      process.nextTick(() => conn.events?.onClose(abnormal ? new Error(`WebSocket closed with code ${code}`) : undefined));
    },
  };
  // Every upgrade comes to one route; refuseUpgrade() checks the path, as on the ws engine.
  app.ws<UwsUserData>('/*', behavior);
  app.any('/*', (res) => {
    res.writeStatus('426 Upgrade Required').writeHeader('Upgrade', 'websocket').end('MQTT over WebSocket: connect to /mqtt with sub-protocol "mqtt"\n');
  });

  const listenSocket = await new Promise<UwsListenSocket>((resolve, reject) => {
    app.listen(options.host, options.port, (socket) => {
      if (socket) resolve(socket);
      else reject(new Error(`${name}: cannot listen on ${options.host}:${options.port} (port in use or address not available)`));
    });
  });
  listening = true;
  const port = uws.us_socket_local_port(listenSocket as never);

  return {
    name,
    transport,
    engine: 'uWebSockets.js',
    fallbackReason: undefined,
    port,
    get listening() {
      return listening;
    },
    connectionCount: () => open.size,
    async close() {
      if (!listening) return;
      listening = false;
      uws.us_listen_socket_close(listenSocket);
      await drainConnections(open, options.closeTimeoutMs);
      app.close();
    },
  };
}

/* ------------------------------------------------------------------ ws + node:http */

/** One `ws` socket as a Connection; drain comes from the underlying net socket. */
class WsConnection extends WebSocketConnection {
  readonly transport: TransportKind;
  readonly remoteAddress: string;
  readonly certificateSubject?: string;
  readonly certificateFields?: Readonly<Record<string, string>>;

  constructor(
    private readonly ws: WsSocket,
    socket: Socket,
    transport: TransportKind,
    identity: CertificateIdentity,
  ) {
    super();
    this.transport = transport;
    const address = socket.remoteAddress ?? 'unknown';
    this.remoteAddress = `${address.startsWith('::ffff:') ? address.slice(7) : address}:${socket.remotePort ?? 0}`;
    if (identity.certificateSubject) this.certificateSubject = identity.certificateSubject;
    if (identity.certificateFields) this.certificateFields = identity.certificateFields;
    socket.on('drain', () => this.drained());
  }

  protected sendFrame(frame: Uint8Array): boolean {
    this.ws.send(frame, { binary: true, compress: false });
    return true;
  }

  protected engineBuffered(): number {
    return this.ws.bufferedAmount;
  }

  protected endSocket(): void {
    this.ws.close(1000);
  }

  protected killSocket(): void {
    this.ws.terminate();
  }

  pause(): void {
    if (!this.closed) this.ws.pause();
  }

  resume(): void {
    if (!this.closed) this.ws.resume();
  }
}

async function startWsListener(
  options: WebSocketListenerOptions,
  name: string,
  transport: 'ws' | 'wss',
  log: Logger,
  fallbackReason: string | undefined,
): Promise<WebSocketListener> {
  const server: HttpServer = options.tls
    ? createHttpsServer({
        cert: options.tls.cert,
        key: options.tls.key,
        ...(options.tls.ca ? { ca: options.tls.ca } : {}),
        requestCert: options.tls.requestCert,
        rejectUnauthorized: options.tls.rejectUnauthorized,
      })
    : createHttpServer();
  // `ws` is loaded only when this engine runs: with uWebSockets.js it is never needed.
  const { WebSocketServer } = createRequire(import.meta.url)('ws') as { WebSocketServer: typeof WsServer };
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: maxFrame(options),
    perMessageDeflate: false,
    clientTracking: false,
    handleProtocols: (protocols) => selectSubprotocol(protocols) ?? false,
  });
  const open = new Set<WsConnection>();
  const sockets = new Set<Socket>();
  let listening = false;

  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  // A TLS handshake that fails (no or bad client certificate) must not reach anything else.
  server.on('tlsClientError', (err: Error, socket: Socket) => {
    log.debug({ err: err.message, remoteAddress: socket.remoteAddress }, 'TLS handshake failed');
  });
  server.on('request', (_req, res) => {
    res.writeHead(426, { Upgrade: 'websocket', 'Content-Type': 'text/plain' });
    res.end('MQTT over WebSocket: connect to /mqtt with sub-protocol "mqtt"\n');
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const refusal = refuseUpgrade(pathOf(req.url ?? '/'), parseProtocolHeader(req.headers['sec-websocket-protocol']));
    if (refusal || !listening) {
      socket.end(`HTTP/1.1 ${refusal ? '400 Bad Request' : '503 Service Unavailable'}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n${refusal ?? 'closing'}\n`);
      return;
    }
    socket.setNoDelay(true);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const identity = options.tls ? certificateIdentity(socket as TLSSocket) : {};
      const conn = new WsConnection(ws, socket, transport, identity);
      open.add(conn);
      ws.binaryType = 'nodebuffer';
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (!isBinary) {
          // [MQTT-5-6.0.0-1] MQTT packets in a text frame: close the connection.
          ws.close(1003, 'MQTT needs binary frames');
          return;
        }
        conn.events?.onData(data);
      });
      let error: Error | undefined;
      ws.on('error', (err) => {
        error = err;
      });
      ws.on('close', (code: number) => {
        if (conn.closed) return;
        conn.closed = true;
        open.delete(conn);
        const abnormal = code !== 1000 && code !== 1001 && code !== 1005;
        conn.events?.onClose(error ?? (abnormal ? new Error(`WebSocket closed with code ${code}`) : undefined));
      });
      conn.events = options.acceptor.accept(conn);
    });
  });

  const port = await listenServer(server, name, options.host, options.port);
  listening = true;

  return {
    name,
    transport,
    engine: 'ws',
    fallbackReason,
    port,
    get listening() {
      return listening;
    },
    connectionCount: () => open.size,
    async close() {
      if (!listening) return;
      listening = false;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await drainConnections(open, options.closeTimeoutMs);
      for (const socket of sockets) socket.destroy();
      wss.close();
      await closed;
    },
  };
}
