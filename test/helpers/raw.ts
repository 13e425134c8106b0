import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import type { IConnackPacket, IConnectPacket, Packet } from 'mqtt-packet';

type Version = 3 | 4 | 5;

/**
 * A raw MQTT client over node:net: writes bytes made by mqtt-packet `generate()` (or by
 * hand), parses replies with mqtt-packet's parser, and lets tests await packets and the
 * connection's end with timeouts.
 */
export class RawClient {
  readonly packets: Packet[] = [];
  private readonly waiters: { match: (p: Packet) => boolean; resolve: (p: Packet) => void }[] = [];
  private readonly consumed = new Set<Packet>();
  closed = false;
  readonly closedPromise: Promise<void>;
  parseError: Error | undefined;

  private constructor(
    readonly socket: net.Socket,
    readonly version: Version,
  ) {
    const parser = mqttPacket.parser({ protocolVersion: version });
    parser.on('packet', (p: Packet) => this.push(p));
    parser.on('error', (err: Error) => (this.parseError = err));
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    socket.on('error', () => undefined);
    this.closedPromise = new Promise((resolve) => socket.on('close', () => {
      this.closed = true;
      resolve();
    }));
  }

  static async open(port: number, version: Version = 5): Promise<RawClient> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawClient(socket, version);
  }

  /** Open a socket, send CONNECT, await the CONNACK. */
  static async connect(port: number, connect: Partial<IConnectPacket> = {}, version: Version = (connect.protocolVersion as Version) ?? 5): Promise<{ client: RawClient; connack: IConnackPacket }> {
    const client = await RawClient.open(port, version);
    client.send({ cmd: 'connect', protocolId: version === 3 ? 'MQIsdp' : 'MQTT', protocolVersion: version, clean: true, keepalive: 0, clientId: '', ...connect } as IConnectPacket);
    const connack = (await client.next('connack')) as IConnackPacket;
    return { client, connack };
  }

  private push(p: Packet): void {
    this.packets.push(p);
    const i = this.waiters.findIndex((w) => w.match(p));
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1);
      this.consumed.add(p);
      w!.resolve(p);
    }
  }

  send(packet: Packet, version: Version = this.version): void {
    this.socket.write(mqttPacket.generate(packet, { protocolVersion: version }));
  }

  sendBytes(bytes: Buffer | number[]): void {
    this.socket.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes));
  }

  /**
   * The first packet not yet returned by next() of the given type and matching `match`.
   * Rejects after `timeoutMs` (or when the socket closes first).
   */
  next<P extends Packet = Packet>(cmd?: Packet['cmd'], match: (p: P) => boolean = () => true, timeoutMs = 3000): Promise<P> {
    const test = (p: Packet): boolean => (cmd === undefined || p.cmd === cmd) && match(p as P);
    for (const p of this.packets) {
      if (!this.consumed.has(p) && test(p)) {
        this.consumed.add(p);
        return Promise.resolve(p as P);
      }
    }
    return new Promise<P>((resolve, reject) => {
      const waiter = { match: test, resolve: (p: Packet) => { clearTimeout(timer); resolve(p as P); } };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`timed out waiting for ${cmd ?? 'a packet'}; got ${this.packets.map((x) => x.cmd).join(',')}`));
      }, timeoutMs);
      this.waiters.push(waiter);
      void this.closedPromise.then(() => {
        // give any last bytes a turn to be parsed before declaring the packet missing
        setTimeout(() => {
          if (this.waiters.includes(waiter)) {
            this.waiters.splice(this.waiters.indexOf(waiter), 1);
            clearTimeout(timer);
            reject(new Error(`connection closed while waiting for ${cmd ?? 'a packet'}`));
          }
        }, 20);
      });
    });
  }

  /** All packets of a type received so far. */
  all<P extends Packet = Packet>(cmd: Packet['cmd']): P[] {
    return this.packets.filter((p) => p.cmd === cmd) as P[];
  }

  /** Resolves when the broker closes the connection; rejects after `timeoutMs`. */
  async waitClosed(timeoutMs = 3000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.closedPromise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('connection still open')), timeoutMs))),
    ]);
    clearTimeout(timer);
  }

  /** Ping round trip: proves the connection is alive and everything sent before was processed. */
  async ping(timeoutMs = 3000): Promise<void> {
    this.send({ cmd: 'pingreq' });
    await this.next('pingresp', () => true, timeoutMs);
  }

  destroy(): void {
    this.socket.destroy();
  }
}
