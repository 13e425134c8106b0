/**
 * Transport conformance for the MQTT-over-WebSocket listener, run against both engines
 * (uWebSockets.js and ws + node:http) with real sockets and real clients. The acceptor is
 * the small test harness in test/helpers/mini-acceptor.ts, so these tests pin down the
 * adapter (framing, sub-protocols, backpressure, close) independently of the broker core.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import mqttPacket from 'mqtt-packet';
import mqtt from 'mqtt';
import WebSocket from 'ws';
import { silentLogger } from '../../src/log.js';
import { startWebSocketListener, WS_HIGH_WATER, type WebSocketListener } from '../../src/transport/websocket.js';
import { loadUws } from '../../src/transport/uws.js';
import { createMiniAcceptor, type MiniAcceptor } from '../helpers/mini-acceptor.js';

const engines = ['uws', 'ws'] as const;

function gen(packet: object, protocolVersion = 4): Buffer {
  return mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion });
}

const CONNECT = (clientId: string) => gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 0 });

/** Opens a raw WebSocket and collects the MQTT packets the server sends back. */
async function rawClient(url: string, protocols: string[] = ['mqtt']) {
  const ws = new WebSocket(url, protocols);
  const packets: mqttPacket.Packet[] = [];
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  parser.on('packet', (p: mqttPacket.Packet) => packets.push(p));
  ws.on('message', (data: Buffer) => parser.parse(data));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
  return { ws, packets };
}

async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const uws = loadUws();
/** Engine a listener asked for `engine` must report: uws falls back to ws where the addon cannot load. */
const expectedEngine = (engine: 'uws' | 'ws') => (engine === 'uws' && uws.ok ? 'uWebSockets.js' : 'ws');

it('uWebSockets.js loads on Node 20 here; elsewhere it loads or says why not', () => {
  if (process.versions.node.startsWith('20.')) expect(uws).toMatchObject({ ok: true });
  // Node 22/24 builds of the addon need glibc 2.38+: then the reason names the loader error.
  else if (!uws.ok) expect(uws.reason).toMatch(/GLIBC|cannot open|not found|invalid ELF|Module did not self-register/i);
});

it('falls back to ws, and says why, when uWebSockets.js cannot be used', async () => {
  const acceptor = createMiniAcceptor();
  const listener = await startWebSocketListener({ host: '127.0.0.1', port: 0, engine: 'uws', acceptor, log: silentLogger(), maxPacketSize: 1024 });
  try {
    if (uws.ok) {
      expect(listener.engine).toBe('uWebSockets.js');
      expect(listener.fallbackReason).toBeUndefined();
    } else {
      expect(listener.engine).toBe('ws');
      expect(listener.fallbackReason).toMatch(/^uWebSockets\.js cannot load: /);
    }
  } finally {
    await listener.close();
  }
  const forced = await startWebSocketListener({ host: '127.0.0.1', port: 0, engine: 'ws', acceptor, log: silentLogger(), maxPacketSize: 1024 });
  expect(forced.engine).toBe('ws');
  expect(forced.fallbackReason).toBe('EDB_WS_ENGINE=ws');
  await forced.close();
});

describe.each(engines)('MQTT over WebSocket, engine %s', (engine) => {
  let acceptor: MiniAcceptor;
  let listener: WebSocketListener;
  let url: string;
  const cleanups: (() => unknown)[] = [];

  beforeEach(async () => {
    acceptor = createMiniAcceptor();
    listener = await startWebSocketListener({ host: '127.0.0.1', port: 0, engine, acceptor, log: silentLogger(), maxPacketSize: 1024 * 1024 });
    url = `ws://127.0.0.1:${listener.port}`;
  });

  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
    await listener.close();
  });

  it('runs on the engine asked for and reports it', () => {
    expect(listener.engine).toBe(expectedEngine(engine));
    expect(listener.transport).toBe('ws');
    expect(listener.port).toBeGreaterThan(0);
    expect(listener.listening).toBe(true);
  });

  it('MQTT.js connects on /mqtt, subscribes, publishes and receives', async () => {
    const client = await mqtt.connectAsync(`${url}/mqtt`, { clientId: 'js-1', reconnectPeriod: 0 });
    cleanups.push(() => client.endAsync());
    await client.subscribeAsync('t/1');
    const got = new Promise<string>((resolve) => client.on('message', (_t, p) => resolve(p.toString())));
    await client.publishAsync('t/1', 'hello', { qos: 1 });
    expect(await got).toBe('hello');
    const conn = acceptor.accepted[0]!;
    expect(conn.transport).toBe('ws');
    expect(conn.remoteAddress).toMatch(/^127\.0\.0\.1/);
  });

  it('accepts the path / and the sub-protocol mqttv3.1 (MQTT 3.1 clients)', async () => {
    const { ws, packets } = await rawClient(`${url}/`, ['mqttv3.1']);
    cleanups.push(() => ws.terminate());
    expect(ws.protocol).toBe('mqttv3.1');
    ws.send(gen({ cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clean: true, clientId: 'old', keepalive: 0 }, 3));
    await until(() => packets.length > 0, 'CONNACK');
    expect(packets[0]!.cmd).toBe('connack');
  });

  it('prefers "mqtt" when a client offers both', async () => {
    const { ws } = await rawClient(`${url}/mqtt`, ['mqttv3.1', 'mqtt']);
    cleanups.push(() => ws.terminate());
    expect(ws.protocol).toBe('mqtt');
  });

  it('refuses other paths and clients that offer only other sub-protocols', async () => {
    await expect(rawClient(`${url}/chat`)).rejects.toThrow(/400/);
    await expect(rawClient(`${url}/mqtt`, ['chat'])).rejects.toThrow(/400/);
    const res = await fetch(`http://127.0.0.1:${listener.port}/mqtt`);
    expect(res.status).toBe(426);
    expect(acceptor.accepted).toHaveLength(0);
  });

  it('parses a packet split across frames', async () => {
    const { ws, packets } = await rawClient(`${url}/mqtt`);
    cleanups.push(() => ws.terminate());
    const bytes = CONNECT('split-client');
    ws.send(bytes.subarray(0, 1));
    ws.send(bytes.subarray(1, 5));
    await new Promise((r) => setTimeout(r, 30));
    expect(packets).toHaveLength(0);
    ws.send(bytes.subarray(5));
    await until(() => packets.length === 1, 'CONNACK');
    expect(packets[0]!.cmd).toBe('connack');
    expect([...acceptor.clients.values()][0]!.id).toBe('split-client');
  });

  it('parses several packets in one frame', async () => {
    const { ws, packets } = await rawClient(`${url}/mqtt`);
    cleanups.push(() => ws.terminate());
    ws.send(
      Buffer.concat([
        CONNECT('batch'),
        gen({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'a/b', qos: 0 }] }),
        gen({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'), qos: 0, retain: false, dup: false }),
        gen({ cmd: 'pingreq' }),
      ]),
    );
    await until(() => packets.length === 4, 'four answers');
    expect(packets.map((p) => p.cmd)).toEqual(['connack', 'suback', 'publish', 'pingresp']);
    expect((packets[2] as mqttPacket.IPublishPacket).payload.toString()).toBe('x');
  });

  it('closes a connection that sends MQTT in a text frame [MQTT-5-6.0.0-1]', async () => {
    const { ws } = await rawClient(`${url}/mqtt`);
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    ws.send(CONNECT('text').toString('latin1'));
    expect(await closed).toBe(1003);
    await until(() => acceptor.counters.closes === 1, 'onClose');
  });

  it('reports a client going away through onClose', async () => {
    const client = await mqtt.connectAsync(`${url}/mqtt`, { clientId: 'bye', reconnectPeriod: 0 });
    await client.endAsync();
    await until(() => acceptor.counters.closes === 1, 'onClose');
    expect(listener.connectionCount()).toBe(0);
  });

  it('close() from the broker side flushes and ends the connection', async () => {
    const { ws, packets } = await rawClient(`${url}/mqtt`);
    const closed = new Promise<void>((resolve) => ws.on('close', () => resolve()));
    ws.send(CONNECT('closer'));
    await until(() => packets.length === 1, 'CONNACK');
    acceptor.accepted[0]!.close();
    await closed;
    await until(() => acceptor.counters.closes === 1, 'onClose');
  });

  it('a slow consumer gets backpressure and drain; others keep receiving', async () => {
    // The slow one: a raw client whose socket stops reading, so the server's buffer fills.
    const slow = await rawClient(`${url}/mqtt`);
    cleanups.push(() => slow.ws.terminate());
    slow.ws.send(CONNECT('slow'));
    slow.ws.send(gen({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'load/#', qos: 0 }] }));
    await until(() => slow.packets.length === 2, 'slow SUBACK');
    slow.ws.pause();

    const fast = await mqtt.connectAsync(`${url}/mqtt`, { clientId: 'fast', reconnectPeriod: 0 });
    cleanups.push(() => fast.endAsync());
    await fast.subscribeAsync('load/#');
    let fastCount = 0;
    fast.on('message', () => fastCount++);
    const publisher = await mqtt.connectAsync(`${url}/mqtt`, { clientId: 'pub', reconnectPeriod: 0 });
    cleanups.push(() => publisher.endAsync());

    const payload = Buffer.alloc(32 * 1024, 1);
    const count = 200; // 6.4 MB towards a consumer that reads nothing
    for (let i = 0; i < count; i++) publisher.publish('load/x', payload, { qos: 0 });
    await until(() => fastCount === count, 'the fast consumer to get every message', 15000);

    const slowConn = [...acceptor.clients.values()].find((c) => c.id === 'slow')!;
    expect(acceptor.counters.blocked).toBeGreaterThan(0);
    expect(slowConn.blocked).toBe(true);
    expect(slowConn.conn.bufferedAmount()).toBeGreaterThanOrEqual(WS_HIGH_WATER);
    expect(slowConn.held.length).toBeGreaterThan(0);

    // Reading again drains the buffer: onDrain lets the held packets go out.
    slow.ws.resume();
    await until(() => slow.packets.length === 2 + count, 'the slow consumer to catch up', 15000);
    expect(acceptor.counters.drains).toBeGreaterThan(0);
  });

  it('pause() holds the input of a client until resume()', async () => {
    const { ws, packets } = await rawClient(`${url}/mqtt`);
    cleanups.push(() => ws.terminate());
    ws.send(CONNECT('paused'));
    await until(() => packets.length === 1, 'CONNACK');
    const conn = acceptor.accepted[0]!;
    const before = acceptor.counters.bytesIn;
    conn.pause();
    ws.send(gen({ cmd: 'pingreq' }));
    await new Promise((r) => setTimeout(r, 100));
    expect(acceptor.counters.bytesIn).toBe(before);
    expect(packets).toHaveLength(1);
    conn.resume();
    await until(() => packets.length === 2, 'PINGRESP after resume');
    expect(packets[1]!.cmd).toBe('pingresp');
  });

  it('close() of the listener stops accepting, waits for the broker to close connections, then closes the rest', async () => {
    await listener.close(); // the one from beforeEach; this test uses its own
    listener = await startWebSocketListener({ host: '127.0.0.1', port: 0, engine, acceptor, log: silentLogger(), maxPacketSize: 1024, closeTimeoutMs: 400 });
    const port = listener.port;
    const polite = await mqtt.connectAsync(`ws://127.0.0.1:${port}/mqtt`, { clientId: 'polite', reconnectPeriod: 0 });
    const stubborn = await mqtt.connectAsync(`ws://127.0.0.1:${port}/mqtt`, { clientId: 'stubborn', reconnectPeriod: 0 });
    const stubbornGone = new Promise<number>((resolve) => stubborn.stream.on('close', () => resolve(Date.now())));
    const started = Date.now();
    const closing = listener.close();
    expect(listener.listening).toBe(false);
    // New connections are refused at once.
    await expect(rawClient(`ws://127.0.0.1:${port}/mqtt`)).rejects.toThrow();
    // The broker closes one connection itself (as a graceful stop does) ...
    acceptor.accepted.find((c) => acceptor.clients.get(c)?.id === 'polite')!.close();
    await until(() => acceptor.counters.closes === 1, 'the polite client to close');
    // ... the other is closed by the listener when the grace period is over.
    await closing;
    expect((await stubbornGone) - started).toBeGreaterThanOrEqual(350);
    await until(() => acceptor.counters.closes === 2, 'both closed');
    polite.end(true);
    stubborn.end(true);
  });
});

describe.skipIf(!uws.ok)('uWebSockets.js engine only', () => {
  it('closes a paused client that keeps sending past maxPausedBytes (it cannot stop reading)', async () => {
    const acceptor = createMiniAcceptor();
    const listener = await startWebSocketListener({ host: '127.0.0.1', port: 0, engine: 'uws', acceptor, log: silentLogger(), maxPacketSize: 1024 * 1024, maxPausedBytes: 64 * 1024 });
    try {
      const { ws, packets } = await rawClient(`ws://127.0.0.1:${listener.port}/mqtt`);
      const closed = new Promise<void>((resolve) => ws.on('close', () => resolve()));
      ws.send(CONNECT('flood'));
      await until(() => packets.length === 1, 'CONNACK');
      acceptor.accepted[0]!.pause();
      const chunk = gen({ cmd: 'publish', topic: 'x', payload: Buffer.alloc(16 * 1024), qos: 0, retain: false, dup: false });
      for (let i = 0; i < 3; i++) ws.send(chunk);
      await new Promise((r) => setTimeout(r, 100));
      expect(acceptor.counters.closes).toBe(0); // 48 KiB held: still under the bound
      for (let i = 0; i < 2; i++) ws.send(chunk);
      await closed;
      await until(() => acceptor.counters.closes === 1, 'onClose');
    } finally {
      await listener.close();
    }
  });
});
