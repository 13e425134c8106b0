/**
 * MQTT over WebSocket through the real broker, on both engines: MQTT.js in Node over
 * WebSocket, mixed TCP/WebSocket delivery, and a slow WebSocket consumer that must not
 * stall anyone else.
 */
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import WebSocket from 'ws';
import { pino } from 'pino';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { loadUws } from '../../src/transport/uws.js';

async function until(check: () => boolean, what: string, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function nextMessage(client: MqttClient): Promise<{ topic: string; payload: string; retain: boolean }> {
  return new Promise((resolve) => client.once('message', (topic, payload, packet) => resolve({ topic, payload: payload.toString(), retain: packet.retain })));
}

describe.each(['uws', 'ws'] as const)('broker over WebSocket, engine %s', (wsEngine) => {
  let server: EdbServer;
  let logLines: Record<string, unknown>[];
  const clients: MqttClient[] = [];
  let wsUrl: string;
  let tcpUrl: string;

  async function connect(url: string, clientId: string, opts: mqtt.IClientOptions = {}): Promise<MqttClient> {
    const c = await mqtt.connectAsync(url, { clientId, reconnectPeriod: 0, ...opts });
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    logLines = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line) logLines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    server = await startEdb(testConfig({ wsPort: 0, wsEngine, maxQueuedMessages: 50, stallTimeoutMs: 100 }), pino({ level: 'info' }, sink));
    wsUrl = `ws://127.0.0.1:${server.port('ws')}/mqtt`;
    tcpUrl = `mqtt://127.0.0.1:${server.port('mqtt')}`;
  });

  afterEach(() => {
    for (const c of clients.splice(0)) c.end(true);
  });

  afterAll(async () => {
    await server.stop();
  });

  it('logs which engine runs the WebSocket listener', () => {
    const ws = server.listeners.find((l) => l.name === 'ws')!;
    expect(ws.engine).toBe(wsEngine === 'uws' && loadUws().ok ? 'uWebSockets.js' : 'ws');
    const line = logLines.find((l) => l['listener'] === 'ws' && typeof l['engine'] === 'string' && /WebSocket on port/.test(String(l['msg'])));
    expect(line?.['engine']).toBe(ws.engine);
    if (wsEngine === 'ws') expect(line?.['fallbackReason']).toBe('EDB_WS_ENGINE=ws');
  });

  it.each([4, 5] as const)('MQTT.js (protocol version %i) subscribes and receives over WebSocket', async (protocolVersion) => {
    const a = await connect(wsUrl, `a${protocolVersion}`, { protocolVersion });
    const b = await connect(wsUrl, `b${protocolVersion}`, { protocolVersion });
    await a.subscribeAsync('room/+', { qos: 1 });
    const got = nextMessage(a);
    await b.publishAsync('room/1', 'over ws', { qos: 1 });
    expect(await got).toMatchObject({ topic: 'room/1', payload: 'over ws' });
    const row = server.broker.clients().find((c) => c.clientId === `a${protocolVersion}`)!;
    expect(row.transport).toBe('ws');
    expect(row.protocolVersion).toBe(protocolVersion);
  });

  it('a TCP client and a WebSocket client talk to each other, both ways', async () => {
    const tcp = await connect(tcpUrl, 'tcp-1');
    const ws = await connect(wsUrl, 'ws-1', { protocolVersion: 5 });
    await tcp.subscribeAsync('from/ws', { qos: 2 });
    await ws.subscribeAsync('from/tcp', { qos: 2 });
    const atWs = nextMessage(ws);
    const atTcp = nextMessage(tcp);
    await tcp.publishAsync('from/tcp', 'hello browser', { qos: 2 });
    await ws.publishAsync('from/ws', 'hello device', { qos: 1 });
    expect(await atWs).toMatchObject({ topic: 'from/tcp', payload: 'hello browser' });
    expect(await atTcp).toMatchObject({ topic: 'from/ws', payload: 'hello device' });
  });

  it('retained messages published over TCP reach a later WebSocket subscriber', async () => {
    const tcp = await connect(tcpUrl, 'tcp-r');
    await tcp.publishAsync('config/led', 'on', { qos: 1, retain: true });
    const ws = await connect(wsUrl, 'ws-r');
    const got = nextMessage(ws);
    await ws.subscribeAsync('config/#');
    expect(await got).toMatchObject({ topic: 'config/led', payload: 'on', retain: true });
  });

  it('a WebSocket consumer that stops reading does not stall the others', async () => {
    // The slow consumer: a raw WebSocket whose socket stops reading after SUBACK.
    const slow = new WebSocket(wsUrl, ['mqtt']);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const seen: string[] = [];
    parser.on('packet', (p: mqttPacket.Packet) => seen.push(p.cmd));
    slow.on('message', (d: Buffer) => parser.parse(d));
    await new Promise((r) => slow.once('open', r));
    slow.send(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'slow', keepalive: 0 }));
    slow.send(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'load/#', qos: 0 }] }));
    await until(() => seen.includes('suback'), 'SUBACK');
    slow.pause();

    const fast = await connect(tcpUrl, 'fast');
    await fast.subscribeAsync('load/#');
    const fastWs = await connect(wsUrl, 'fast-ws');
    await fastWs.subscribeAsync('load/#');
    let fastCount = 0;
    let fastWsCount = 0;
    fast.on('message', () => fastCount++);
    fastWs.on('message', () => fastWsCount++);

    const publisher = await connect(tcpUrl, 'pub');
    const payload = Buffer.alloc(16 * 1024, 7);
    const count = 400; // 6.4 MB towards a consumer that reads nothing; its queue holds 50
    for (let i = 0; i < count; i++) publisher.publish('load/x', payload, { qos: 0 });
    await until(() => fastCount === count && fastWsCount === count, `both fast consumers to get ${count} messages`, 20000);

    // The slow one's bounded queue overflowed: QoS 0 messages were dropped for it, counted.
    expect(server.broker.stats.dropped['queue_full'] ?? 0).toBeGreaterThan(0);
    slow.terminate();
  });

  it('the listener refuses non-MQTT paths and answers plain HTTP with 426', async () => {
    const res = await fetch(`http://127.0.0.1:${server.port('ws')}/mqtt`);
    expect(res.status).toBe(426);
    const refused = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port('ws')}/other`, ['mqtt']);
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.once('open', () => reject(new Error('upgraded on /other')));
    });
    expect(refused).toBe(400);
  });
});

describe.each(['uws', 'ws'] as const)('graceful stop over WebSocket, engine %s', (wsEngine) => {
  it('a v5 WebSocket client is told "server shutting down" (0x8B) before the socket closes', async () => {
    const server = await startEdb(testConfig({ wsPort: 0, wsEngine, shutdownTimeoutMs: 2000 }), silentLogger());
    const client = await mqtt.connectAsync(`ws://127.0.0.1:${server.port('ws')}/mqtt`, { clientId: 'leaving', protocolVersion: 5, reconnectPeriod: 0 });
    const told = new Promise<number | undefined>((resolve) => client.once('disconnect', (packet) => resolve(packet.reasonCode)));
    const started = Date.now();
    await server.stop();
    expect(await told).toBe(0x8b);
    // The broker closed it; the listener did not have to wait out its grace period.
    expect(Date.now() - started).toBeLessThan(2000);
    client.end(true);
  });
});

describe('WebSocket listener settings', () => {
  it('EDB_WS_PORT=-1 turns the listener off', async () => {
    const server = await startEdb(testConfig({ wsPort: -1 }), silentLogger());
    try {
      expect(server.listeners.map((l) => l.name)).not.toContain('ws');
    } finally {
      await server.stop();
    }
  });
});
