/**
 * The narrow interface every transport adapts to (TCP, TLS, uWebSockets.js, ws).
 * Bytes in through ConnectionEvents.onData, `write()` reports backpressure, a drain
 * signal, `close()`. uWS sockets are not Node streams; adapters call these directly.
 */

export type TransportKind = 'tcp' | 'tls' | 'ws' | 'wss';

export interface Connection {
  readonly transport: TransportKind;
  /** "address:port" of the peer. */
  readonly remoteAddress: string;
  /** Subject of a verified client certificate (e.g. "CN=device-1,O=Acme"), if any. */
  readonly certificateSubject?: string;
  /** Parsed subject fields of the verified client certificate, if any. */
  readonly certificateFields?: Readonly<Record<string, string>>;
  /**
   * Queue bytes for the peer. Returns false when the transport's buffer is past its
   * high-water mark: the caller should stop writing until `onDrain`.
   */
  write(data: Uint8Array): boolean;
  /**
   * Optional (TCP and TLS): room for `size` bytes in this turn's output, to encode a packet in
   * place instead of into a buffer of its own. Returns the buffer to write them into, starting
   * at `reservedAt`, then `commit(size)` sends them (after everything written before, with the
   * batch); undefined when the packet is too large to stage (use write()).
   */
  reserve?(size: number): Buffer | undefined;
  readonly reservedAt?: number;
  /** The `size` bytes written at `reservedAt` go out; the result is write()'s. */
  commit?(size: number): boolean;
  /** Bytes accepted by write() and not yet handed to the kernel. */
  bufferedAmount(): number;
  /** Stop / restart reading from the peer (flow control towards a fast publisher). */
  pause(): void;
  resume(): void;
  /** Flush what is queued, then close. */
  close(): void;
  /** Close now, dropping anything queued. */
  destroy(): void;
}

/** What the broker gives back for each accepted connection; the transport calls these. */
export interface ConnectionEvents {
  onData(chunk: Buffer): void;
  onDrain(): void;
  onClose(error?: Error): void;
}

/** The broker side of a transport: one call per accepted connection. */
export interface ConnectionAcceptor {
  accept(connection: Connection): ConnectionEvents;
}

/** A listening transport. */
export interface Listener {
  readonly name: string;
  readonly transport: TransportKind | 'http';
  /** Engine that runs it: "node:net", "node:tls", "uWebSockets.js", "ws". */
  readonly engine: string;
  /** Bound port (resolved when the configured port was 0). */
  readonly port: number;
  close(): Promise<void>;
}
