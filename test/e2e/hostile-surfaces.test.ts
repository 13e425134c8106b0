/**
 * The other ways in, with hostile input (issue "Hostile input"): WebSocket frames (fragmented,
 * huge, protocol-breaking raw frames), the rules API (deep nesting, huge strings, numbers that
 * overflow, prototype-pollution keys), the state store (RESP with wrong counts and lengths) and
 * the HTTP API. Each gets a clear refusal; the broker keeps serving a watchdog client over
 * TCP and WebSocket, keeps the active rules document, and counts no internal error.
 */
import net from 'node:net';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient, type IPublishPacket } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import WebSocket from 'ws';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { encodeRequest } from '../../src/state/resp.js';
import { INVOKE_TOPIC } from '../../src/state/protocol.js';
import { Rng } from '../../bench/fuzz-packets.js';
import { waitFor } from './helpers.js';

let server: EdbServer;
const clients: MqttClient[] = [];
const MAX_PACKET = 64 * 1024;

beforeAll(async () => {
  server = await startEdb(testConfig({ host: '127.0.0.1', wsPort: 0, httpPort: 0, rulesPort: 0, maxPacketSize: MAX_PACKET }), silentLogger());
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
  await server.stop();
});

async function client(url: string, opts: mqtt.IClientOptions = {}): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0, ...opts });
  clients.push(c);
  return c;
}

/** One QoS 1 round trip through the broker on a fresh topic: the watchdog's heartbeat. */
async function roundTrip(pub: MqttClient, sub: MqttClient, tag: string): Promise<void> {
  const topic = `watchdog/${tag}/${randomBytes(4).toString('hex')}`;
  await sub.subscribeAsync(topic, { qos: 1 });
  const got = new Promise<string>((resolve) => sub.on('message', (t, p) => t === topic && resolve(p.toString())));
  await pub.publishAsync(topic, 'beat', { qos: 1 });
  expect(await got).toBe('beat');
}

function noInternalError(): void {
  expect(server.broker.stats.internalErrors).toEqual({});
  expect(server.broker.stats.protocolErrors['implementation_specific_error']).toBeUndefined();
}

const CONNECT = (clientId: string): Buffer => mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId }, { protocolVersion: 4 });

// ------------------------------------------------------------------ WebSocket

/** A raw WebSocket client: the HTTP upgrade by hand, then frames written as bytes. */
async function rawWebSocket(port: number): Promise<{ socket: net.Socket; received: Buffer[]; closed: Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.on('error', () => undefined);
  const received: Buffer[] = [];
  const upgraded = new Promise<void>((resolve, reject) => {
    let head = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      if (!head.subarray(0, 12).toString().includes('101')) return reject(new Error(`no upgrade: ${head.toString()}`));
      if (head.length > end + 4) received.push(head.subarray(end + 4));
      socket.on('data', (x: Buffer) => received.push(x));
      resolve();
    };
    socket.on('data', onData);
  });
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.write(`GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n`);
  await upgraded;
  return { socket, received, closed };
}

/** A client-to-server frame: FIN/RSV/opcode byte, a masked payload (unmasked when `mask` is false). */
function wsFrame(first: number, payload: Buffer, mask = true, lengthOverride?: bigint): Buffer {
  const parts: Buffer[] = [Buffer.from([first])];
  const m = mask ? 0x80 : 0;
  if (lengthOverride !== undefined) {
    const b = Buffer.alloc(9);
    b[0] = m | 127;
    b.writeBigUInt64BE(lengthOverride, 1);
    parts.push(b);
  } else if (payload.length < 126) parts.push(Buffer.from([m | payload.length]));
  else if (payload.length < 65536) {
    const b = Buffer.alloc(3);
    b[0] = m | 126;
    b.writeUInt16BE(payload.length, 1);
    parts.push(b);
  } else {
    const b = Buffer.alloc(9);
    b[0] = m | 127;
    b.writeBigUInt64BE(BigInt(payload.length), 1);
    parts.push(b);
  }
  if (mask) {
    const key = randomBytes(4);
    parts.push(key, Buffer.from(payload.map((x, i) => x ^ key[i % 4]!)));
  } else parts.push(payload);
  return Buffer.concat(parts);
}

describe('WebSocket: hostile frames close only their own connection', () => {
  let wsUrl: string;
  let pub: MqttClient;
  let sub: MqttClient;
  beforeAll(async () => {
    wsUrl = `ws://127.0.0.1:${server.port('ws')}/mqtt`;
    pub = await client(`mqtt://127.0.0.1:${server.port('mqtt')}`);
    sub = await client(wsUrl); // the watchdog's receiver is on WebSocket too
  });

  it('an MQTT packet in fragmented frames, and packets split across messages at every byte, are served', async () => {
    const ws = new WebSocket(wsUrl, 'mqtt');
    await new Promise((r) => ws.once('open', r));
    const answers: Buffer[] = [];
    ws.on('message', (d: Buffer) => answers.push(d));
    const connect = CONNECT('fragmented');
    // one WebSocket message in three fragments (continuation frames)
    ws.send(connect.subarray(0, 3), { binary: true, fin: false });
    ws.send(connect.subarray(3, 7), { binary: true, fin: false });
    ws.send(connect.subarray(7), { binary: true, fin: true });
    await waitFor(() => answers.length >= 1, 'CONNACK');
    expect(answers[0]![0]).toBe(0x20);
    // [MQTT-5-6.0.0-2] a packet may span WebSocket messages: a SUBSCRIBE and a PINGREQ sent a byte per message
    const more = Buffer.concat([mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'frag/x', qos: 0 }] }, { protocolVersion: 4 }), Buffer.from([0xc0, 0x00])]);
    for (const byte of more) ws.send(Buffer.from([byte]));
    await waitFor(() => Buffer.concat(answers).includes(Buffer.from([0xd0, 0x00])), 'SUBACK and PINGRESP');
    expect(Buffer.concat(answers.slice(1))[0]).toBe(0x90);
    ws.close();
  });

  it('a frame over the packet size limit ends that connection; the watchdog on TCP and WS keeps going', async () => {
    const ws = new WebSocket(wsUrl, 'mqtt');
    await new Promise((r) => ws.once('open', r));
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    ws.on('error', () => undefined);
    ws.send(CONNECT('huge'));
    ws.send(Buffer.alloc(MAX_PACKET * 8, 0x30));
    const code = await closed;
    expect([1006, 1009, 1002]).toContain(code); // uWebSockets.js and ws close a too-big message each their way
    await roundTrip(pub, sub, 'after-huge');
    noInternalError();
  });

  const rawCases: [string, () => Buffer][] = [
    ['a continuation frame with no message started', () => wsFrame(0x80, CONNECT('c'))],
    ['a reserved opcode (0x3)', () => wsFrame(0x83, Buffer.from([1, 2, 3]))],
    ['RSV bits set without an extension', () => wsFrame(0xc2, CONNECT('rsv'))],
    ['a 2^62-byte length', () => wsFrame(0x82, Buffer.alloc(0), true, 1n << 62n)],
    ['a fragmented control frame (PING without FIN)', () => wsFrame(0x09, Buffer.from('p'))],
    ['a control frame over 125 bytes', () => wsFrame(0x89, Buffer.alloc(200))],
    ['a text frame with invalid UTF-8', () => wsFrame(0x81, Buffer.from([0xc3, 0x28]))],
  ];
  it.each(rawCases)('%s: the connection is closed', async (_name, make) => {
    const raw = await rawWebSocket(server.port('ws'));
    raw.socket.write(make());
    const timeout = new Promise<'open'>((resolve) => setTimeout(() => resolve('open'), 5000));
    expect(await Promise.race([raw.closed.then(() => 'closed' as const), timeout])).toBe('closed');
    await roundTrip(pub, sub, 'after-raw');
    noInternalError();
  });

  it('random and mutated binary frames on 200 connections: nothing leaks to others', async () => {
    const rng = new Rng(0xf00d);
    for (let i = 0; i < 200; i++) {
      const ws = new WebSocket(wsUrl, 'mqtt');
      ws.on('error', () => undefined);
      await new Promise((r) => ws.once('open', r).once('error', r).once('close', r));
      if (ws.readyState !== WebSocket.OPEN) continue;
      const connect = CONNECT(`wsfuzz-${i}`);
      const packets = [connect, rng.bytes(1 + rng.int(64)), mqttPacket.generate({ cmd: 'publish', topic: 'wsfuzz/t', payload: rng.bytes(8), qos: 1, messageId: 3, retain: rng.chance(0.3), dup: false }, { protocolVersion: 4 })];
      for (const p of packets) {
        const b = Buffer.from(p);
        for (let k = 0; k < 2 && b.length > 1; k++) b[1 + rng.int(b.length - 1)] = rng.int(256);
        ws.send(b);
      }
      ws.terminate();
    }
    await roundTrip(pub, sub, 'after-ws-fuzz');
    noInternalError();
  });
});

// ------------------------------------------------------------------ rules API

function request(port: number, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const GOOD_DOC = JSON.stringify({ filters: [{ topic: 'hostile/in/#', subtopic: 'out/', statements: [{ condition: '$v > 1', new_payload: 'big' }] }], rules: [] });
/** A document of the right shape with `filter` merged into its one filter and `statement` into its statement. */
const doc = (filter: Record<string, unknown> = {}, statement: Record<string, unknown> = {}): string =>
  JSON.stringify({ filters: [{ topic: 'a/#', subtopic: 'b/', statements: [{ condition: '$v > 1', new_payload: 'x', ...statement }], ...filter }], rules: [] });

describe('rules API: hostile JSON gets a 4xx, the active document stays, nothing is polluted', () => {
  let port: number;
  beforeAll(async () => {
    port = server.port('rules');
    const put = await request(port, 'POST', '/', GOOD_DOC);
    expect(put.status, put.body).toBeLessThan(300);
  }, 180_000);

  const hostile: [string, () => string | Buffer][] = [
    ['100,000 nested arrays', () => '['.repeat(100_000) + ']'.repeat(100_000)],
    ['100,000 nested objects under filters', () => '{"filters":' + '{"a":'.repeat(100_000) + '1' + '}'.repeat(100_000) + '}'],
    ['a condition nested 20,000 brackets deep', () => doc({}, { condition: '('.repeat(20_000) + '$v' + ')'.repeat(20_000) })],
    ['a condition of 20,000 chained operators', () => doc({}, { condition: Array.from({ length: 20_000 }, () => '$v').join(' + ') + ' > 1' })],
    ['a 900 KB topic string', () => doc({ topic: 'x/'.repeat(450_000) })],
    ['a 900 KB condition', () => doc({}, { condition: '$v > ' + '1'.repeat(900_000) })],
    ['a body over the size limit (3 MB)', () => Buffer.alloc(3 * 1024 * 1024, 0x20)],
    ['numbers that overflow in the JSON', () => doc({ qos: 1e400 }).replace('"qos":null', '"qos":1e400')],
    ['a number that overflows in a condition, and an unknown key', () => doc({}, { condition: '$v > 1e400 and $v < -1e400', unknown_key: 1 })],
    ['a number with 400 digits in a condition', () => doc({}, { condition: '$v > ' + '9'.repeat(400) })],
    ['__proto__ at the top', () => '{"__proto__":{"polluted":"yes"},"filters":[],"rules":[]}'],
    ['__proto__ inside a filter', () => doc().replace('{"topic"', '{"__proto__":{"polluted":"yes"},"topic"')],
    ['constructor.prototype keys', () => doc().replace('{"topic"', '{"constructor":{"prototype":{"polluted":"yes"}},"topic"')],
    ['invalid UTF-8 bytes', () => Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d])],
    ['a lone surrogate escape in a topic', () => doc({ topic: 'a/\ud800' })],
    ['not JSON at all', () => '\u0000\u0001garbage'],
  ];

  it.each(hostile)('%s', async (_name, make) => {
    const before = await request(port, 'GET', '/');
    const res = await request(port, 'POST', '/', make());
    // a 4xx with a JSON error body naming what is wrong; never a 5xx, never accepted
    expect(res.status, res.body.slice(0, 300)).toBeGreaterThanOrEqual(400);
    expect(res.status, res.body.slice(0, 300)).toBeLessThan(500);
    if (res.status !== 413) expect(() => JSON.parse(res.body)).not.toThrow();
    const after = await request(port, 'GET', '/');
    expect(after.body).toBe(before.body);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted')).toBe(false);
  }, 60_000);

  it('a condition naming __proto__ and constructor: refused or run without touching any prototype', async () => {
    const res = await request(port, 'POST', '/', doc({ topic: 'proto/#' }, { condition: '$__proto__.polluted == 1 or $constructor.prototype > 0 or $v.__proto__ > 1' }));
    expect(res.status, res.body.slice(0, 300)).toBeLessThan(500);
    if (res.status < 300) {
      const c = await client(`mqtt://127.0.0.1:${server.port('mqtt')}`);
      for (const payload of ['{"__proto__":{"polluted":1},"v":2}', '{"constructor":{"prototype":{"polluted":1}}}', '{"v":{"__proto__":5}}']) await c.publishAsync('proto/x', payload, { qos: 1 });
      await roundTrip(c, c, 'after-proto');
      const back = await request(port, 'POST', '/', GOOD_DOC);
      expect(back.status, back.body).toBeLessThan(300);
    }
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    noInternalError();
  }, 180_000);

  it('POST /test with hostile message lists gets a 4xx too, when the endpoint exists', async () => {
    const probe = await request(port, 'POST', '/test', '{}');
    if (probe.status === 404) return; // the endpoint of the rules-with-memory work
    for (const body of ['[' .repeat(50_000), '{"document":' + GOOD_DOC + ',"messages":[{"topic":"a","payload":' + '['.repeat(50_000) + '}]}', '{"__proto__":{"polluted":1},"document":{},"messages":[]}']) {
      const res = await request(port, 'POST', '/test', body);
      expect(res.status, res.body.slice(0, 300)).toBeGreaterThanOrEqual(400);
      expect(res.status, res.body.slice(0, 300)).toBeLessThan(500);
    }
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });
});

// ------------------------------------------------------------------ state store

describe('state store: RESP with wrong counts and lengths', () => {
  it('every mutated request gets an -ERR answer (or none when it is not a request), and the store keeps serving', async () => {
    const c = await client(`mqtt://127.0.0.1:${server.port('mqtt')}`, { clientId: 'resp-fuzz' });
    const responseTopic = 'clients/resp-fuzz/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response';
    await c.subscribeAsync(responseTopic, { qos: 1 });
    const answers = new Map<string, IPublishPacket>();
    c.on('message', (_t, _p, packet) => {
      const id = packet.properties?.correlationData?.toString();
      if (id) answers.set(id, packet);
    });
    const send = async (payload: Buffer, id: string): Promise<void> => {
      await c.publishAsync(INVOKE_TOPIC, payload, { qos: 1, properties: { responseTopic, correlationData: Buffer.from(id), userProperties: { __srcId: 'resp-fuzz', __protVer: '1.0', __ts: `${Date.now()}:0:resp-fuzz` } } });
    };
    const hand: Buffer[] = [
      Buffer.from('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n'), // fewer elements than announced
      Buffer.from('*2\r\n$3\r\nGET\r\n$9\r\nk\r\n'), // a bulk string shorter than its length
      Buffer.from('*2\r\n$3\r\nGET\r\n$-7\r\nk\r\n'), // a negative length
      Buffer.from('*99999999999\r\n'), // a count that overflows
      Buffer.from('*2\r\n$3\r\nGET\r\n$99999999999999999999\r\n'),
      Buffer.from('*1\r\n$3\r\nGE'), // cut short
      Buffer.from('*-1\r\n'),
      Buffer.from('*0\r\n'),
      Buffer.from('$3\r\nSET\r\n'), // not an array
      Buffer.from('*2\r\n*1\r\n$1\r\nx\r\n$1\r\ny\r\n'), // nested arrays
      Buffer.from('*2\r\n$3\r\nGET\r\n$1\r\nk\n'), // LF without CR
      Buffer.alloc(0),
      Buffer.from('*3\r\n$3\r\nSET\r\n$9\r\n__proto__\r\n$1\r\nx\r\n'),
    ];
    const rng = new Rng(0x5ee);
    const base = encodeRequest(['SET', 'fuzz:key', 'value', 'PX', '60000']);
    for (let i = 0; i < 150; i++) {
      const b = Buffer.from(base);
      for (let k = 0, n = 1 + rng.int(3); k < n; k++) b[rng.int(b.length)] = rng.pick([0x2a, 0x24, 0x2d, 0x0d, 0x0a, 0x30, 0x39, rng.int(256)]);
      hand.push(rng.chance(0.2) ? b.subarray(0, rng.int(b.length)) : b);
    }
    for (const [i, payload] of hand.entries()) await send(payload, `m${i}`);
    await send(encodeRequest(['SET', 'after:fuzz', 'ok']), 'final-set');
    await waitFor(() => answers.has('final-set'), 'the answer to a good SET after the fuzz', 10_000);
    expect(Buffer.from(answers.get('final-set')!.payload as Buffer).toString()).toBe('+OK\r\n');
    // each malformed request of the hand-written list was answered with an error, not dropped
    for (let i = 0; i < 13; i++) {
      const a = answers.get(`m${i}`);
      if (i === 12) continue; // __proto__ is a fine key name
      expect(a, `request ${i}: ${hand[i]!.toString('latin1')}`).toBeDefined();
      expect(Buffer.from(a!.payload as Buffer).toString('latin1'), `request ${i}`).toMatch(/^-ERR /);
    }
    expect(({} as Record<string, unknown>)['x']).toBeUndefined();
    noInternalError();
  });
});

// ------------------------------------------------------------------ HTTP API

describe('HTTP API: hostile requests get a 4xx, never a 5xx', () => {
  it('bad JSON, huge bodies, __proto__ and odd methods on every POST route it has', async () => {
    const port = server.port('http');
    const routes = ['/api/login', '/login', '/api/state', '/api/clients', '/api/bridges', '/api/tokens', '/rules', '/api/publish'];
    const bodies: (string | Buffer)[] = ['{', '['.repeat(100_000), '{"__proto__":{"polluted":1}}', Buffer.alloc(3 * 1024 * 1024, 0x7b), '{"user":' + '9'.repeat(400) + ',"password":1e400}', '\u0000'];
    for (const route of routes) {
      for (const body of bodies) {
        const res = await request(port, 'POST', route, body, { origin: 'http://127.0.0.1' });
        expect(res.status, `${route}: ${res.body.slice(0, 200)}`).toBeLessThan(500);
      }
      const odd = await request(port, 'BREW', route);
      expect(odd.status, route).toBeLessThan(500);
    }
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    noInternalError();
  }, 60_000);
});
