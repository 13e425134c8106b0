/**
 * MQTT.js (the most used Node client) against a real broker listening on a free port:
 * MQTT 3.1.1 and 5.0, QoS 0/1/2, retained messages, wills and v5 properties.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import mqttPacket, { type IConnackPacket, type IConnectPacket } from 'mqtt-packet';
import { startBroker, waitFor, type RunningBroker } from './helpers.js';

let broker: RunningBroker;
const open: MqttClient[] = [];
let seq = 0;

beforeAll(async () => {
  broker = await startBroker();
});

afterAll(async () => {
  await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
  await broker.stop();
});

async function connect(protocolVersion: 4 | 5, opts: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, {
    protocolVersion,
    clientId: `mqttjs-${protocolVersion}-${++seq}`,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...opts,
  });
  open.push(client);
  return client;
}

interface Received {
  topic: string;
  payload: Buffer;
  packet: IPublishPacket;
}

function collect(client: MqttClient): Received[] {
  const got: Received[] = [];
  client.on('message', (topic, payload, packet) => got.push({ topic, payload, packet }));
  return got;
}

describe.each([
  { v: 4 as const, name: 'MQTT 3.1.1' },
  { v: 5 as const, name: 'MQTT 5.0' },
])('MQTT.js $name', ({ v }) => {
  const root = `e2e/mqttjs/v${v}`;

  it('connects and reports a clean session without a stored session', async () => {
    const c = await connect(v, { clean: true });
    expect(c.connected).toBe(true);
    await c.endAsync();
    expect(c.connected).toBe(false);
  });

  it.each([0, 1, 2] as const)('publishes and subscribes at QoS %i', async (qos) => {
    const sub = await connect(v);
    const got = collect(sub);
    const granted = await sub.subscribeAsync(`${root}/qos${qos}/#`, { qos });
    expect(granted[0]!.qos).toBe(qos);
    const pub = await connect(v);
    const payloads = Array.from({ length: 20 }, (_, i) => Buffer.from(`qos${qos} message ${i} ${'x'.repeat(i * 10)}`));
    for (const [i, p] of payloads.entries()) await pub.publishAsync(`${root}/qos${qos}/m${i}`, p, { qos });
    await waitFor(() => got.length === payloads.length, `${payloads.length} messages at QoS ${qos}`);
    // order per topic and publisher is kept; payloads arrive byte for byte
    expect(got.map((m) => m.topic)).toEqual(payloads.map((_, i) => `${root}/qos${qos}/m${i}`));
    expect(got.map((m) => m.payload.toString())).toEqual(payloads.map((p) => p.toString()));
    for (const m of got) expect(m.packet.qos).toBe(qos);
  });

  it('downgrades delivery to the subscription QoS', async () => {
    const sub = await connect(v);
    const got = collect(sub);
    await sub.subscribeAsync(`${root}/downgrade`, { qos: 1 });
    const pub = await connect(v);
    await pub.publishAsync(`${root}/downgrade`, 'two', { qos: 2 });
    await waitFor(() => got.length === 1, 'the downgraded message');
    expect(got[0]!.packet.qos).toBe(1);
  });

  it('keeps a retained message for later subscribers and clears it with an empty payload', async () => {
    const topic = `${root}/retained/${seq}`;
    const pub = await connect(v);
    await pub.publishAsync(topic, 'kept', { qos: 1, retain: true });

    const late = await connect(v);
    const got = collect(late);
    await late.subscribeAsync(topic, { qos: 1 });
    await waitFor(() => got.length === 1, 'the retained message');
    expect(got[0]!.payload.toString()).toBe('kept');
    expect(got[0]!.packet.retain).toBe(true);

    // a live message to an existing subscriber is not flagged retained [MQTT-5-3.3.1-9]
    await pub.publishAsync(topic, 'live', { qos: 1, retain: true });
    await waitFor(() => got.length === 2, 'the live message');
    expect(got[1]!.payload.toString()).toBe('live');
    expect(got[1]!.packet.retain).toBe(false);

    // [MQTT-5-3.3.1-6] an empty retained payload clears the topic
    await pub.publishAsync(topic, '', { qos: 1, retain: true });
    await waitFor(() => got.length === 3, 'the clearing message');
    const later = await connect(v);
    const none = collect(later);
    await later.subscribeAsync(topic, { qos: 1 });
    // a marker published after the subscription proves delivery had its chance
    await pub.publishAsync(topic, 'marker', { qos: 1 });
    await waitFor(() => none.length >= 1, 'the marker');
    expect(none.map((m) => m.payload.toString())).toEqual(['marker']);
  });

  it('sends the will when a client drops without DISCONNECT, and not after a clean DISCONNECT', async () => {
    const willTopic = `${root}/will/${seq}`;
    const watcher = await connect(v);
    const got = collect(watcher);
    await watcher.subscribeAsync(`${willTopic}/#`, { qos: 1 });

    const clean = await connect(v, { will: { topic: `${willTopic}/clean`, payload: Buffer.from('should not be sent'), qos: 1, retain: false } });
    await clean.endAsync();

    const dying = await connect(v, { will: { topic: `${willTopic}/dropped`, payload: Buffer.from('gone'), qos: 1, retain: false } });
    dying.stream.destroy(); // the TCP connection drops without a DISCONNECT packet
    await waitFor(() => got.length >= 1, 'the will message');
    // give a wrongly sent "clean" will the same chance to show up
    await watcher.publishAsync(`${willTopic}/marker`, 'marker', { qos: 1 });
    await waitFor(() => got.some((m) => m.topic.endsWith('/marker')), 'the marker');
    expect(got.map((m) => `${m.topic} ${m.payload.toString()}`)).toEqual([`${willTopic}/dropped gone`, `${willTopic}/marker marker`]);
    dying.end(true);
  });
});

describe('MQTT.js MQTT 5.0 properties', () => {
  it('forwards publish properties unchanged', async () => {
    const sub = await connect(5);
    const got = collect(sub);
    await sub.subscribeAsync('e2e/props/#', { qos: 1 });
    const pub = await connect(5);
    const correlation = Buffer.from([0, 1, 2, 0xfe, 0xff]);
    await pub.publishAsync('e2e/props/a', '{"t":21.5}', {
      qos: 1,
      properties: {
        payloadFormatIndicator: true,
        messageExpiryInterval: 3600,
        contentType: 'application/json',
        responseTopic: 'e2e/props/reply',
        correlationData: correlation,
        userProperties: { site: 'plant-7', unit: ['C', 'F'] },
      },
    });
    await waitFor(() => got.length === 1, 'the message with properties');
    const p = got[0]!.packet.properties!;
    expect(p.payloadFormatIndicator).toBe(true);
    expect(p.contentType).toBe('application/json');
    expect(p.responseTopic).toBe('e2e/props/reply');
    expect(Buffer.from(p.correlationData!).equals(correlation)).toBe(true);
    expect(p.userProperties).toEqual({ site: 'plant-7', unit: ['C', 'F'] });
    // [MQTT-5-3.3.2-6] the expiry is forwarded, reduced by the time spent in the broker
    expect(p.messageExpiryInterval).toBeGreaterThan(3590);
    expect(p.messageExpiryInterval).toBeLessThanOrEqual(3600);
  });

  it('supports request/response with response topic and correlation data', async () => {
    const responder = await connect(5);
    await responder.subscribeAsync('e2e/rpc/requests', { qos: 1 });
    responder.on('message', (_topic, payload, packet) => {
      const props = packet.properties ?? {};
      if (!props.responseTopic) return;
      void responder.publish(props.responseTopic, `echo:${payload.toString()}`, {
        qos: 1,
        properties: props.correlationData ? { correlationData: props.correlationData } : {},
      });
    });
    const requester = await connect(5);
    const replies = collect(requester);
    await requester.subscribeAsync('e2e/rpc/replies/me', { qos: 1 });
    await requester.publishAsync('e2e/rpc/requests', 'ping', {
      qos: 1,
      properties: { responseTopic: 'e2e/rpc/replies/me', correlationData: Buffer.from('req-42') },
    });
    await waitFor(() => replies.length === 1, 'the reply');
    expect(replies[0]!.payload.toString()).toBe('echo:ping');
    expect(Buffer.from(replies[0]!.packet.properties!.correlationData!).toString()).toBe('req-42');
  });

  it('tags deliveries with the subscription identifier', async () => {
    const sub = await connect(5);
    const got = collect(sub);
    await sub.subscribeAsync('e2e/subid/+', { qos: 0, properties: { subscriptionIdentifier: 77 } });
    const pub = await connect(5);
    await pub.publishAsync('e2e/subid/x', 'hello', { qos: 0 });
    await waitFor(() => got.length === 1, 'the tagged message');
    expect(got[0]!.packet.properties?.subscriptionIdentifier).toBe(77);
  });

  it('resolves topic aliases sent by the publisher', async () => {
    const sub = await connect(5);
    const got = collect(sub);
    await sub.subscribeAsync('e2e/alias/#', { qos: 1 });
    const pub = await connect(5);
    await pub.publishAsync('e2e/alias/long/topic/name', 'first', { qos: 1, properties: { topicAlias: 3 } });
    // the second publish carries only the alias
    await pub.publishAsync('', 'second', { qos: 1, properties: { topicAlias: 3 } });
    await waitFor(() => got.length === 2, 'both aliased messages');
    expect(got.map((m) => `${m.topic} ${m.payload.toString()}`)).toEqual(['e2e/alias/long/topic/name first', 'e2e/alias/long/topic/name second']);
  });

  it('delivers the will with its v5 properties after the will delay', async () => {
    const watcher = await connect(5);
    const got = collect(watcher);
    await watcher.subscribeAsync('e2e/will5/#', { qos: 1 });
    // [MQTT-5-3.1.3-9] the will waits for the delay only while the session lives: keep it for 60 s
    const dying = await connect(5, {
      properties: { sessionExpiryInterval: 60 },
      will: {
        topic: 'e2e/will5/status',
        payload: Buffer.from('offline'),
        qos: 1,
        retain: false,
        properties: { willDelayInterval: 1, contentType: 'text/plain', userProperties: { reason: 'crash' } },
      },
    });
    const droppedAt = Date.now();
    dying.stream.destroy();
    await waitFor(() => got.length === 1, 'the delayed will', 5000);
    expect(Date.now() - droppedAt).toBeGreaterThanOrEqual(900);
    expect(got[0]!.payload.toString()).toBe('offline');
    expect(got[0]!.packet.properties?.contentType).toBe('text/plain');
    expect(got[0]!.packet.properties?.userProperties).toEqual({ reason: 'crash' });
    dying.end(true);
  });

  it('sends a delayed will at once when the session ends first', async () => {
    const watcher = await connect(5);
    const got = collect(watcher);
    await watcher.subscribeAsync('e2e/will5b/#', { qos: 1 });
    const dying = await connect(5, {
      properties: { sessionExpiryInterval: 0 },
      will: { topic: 'e2e/will5b/status', payload: Buffer.from('offline'), qos: 1, retain: false, properties: { willDelayInterval: 30 } },
    });
    dying.stream.destroy();
    await waitFor(() => got.length === 1, 'the will, sent when the session ended', 3000);
    expect(got[0]!.payload.toString()).toBe('offline');
    dying.end(true);
  });
});

describe('MQTT.js sessions and subscription options', () => {
  it.each([4, 5] as const)('keeps QoS 1 messages for a persistent session while it is offline (protocol %i)', async (v) => {
    const clientId = `mqttjs-persist-${v}-${++seq}`;
    const topic = `e2e/persist/${v}/${seq}`;
    const sessionOpts: IClientOptions = v === 5 ? { clientId, clean: false, properties: { sessionExpiryInterval: 300 } } : { clientId, clean: false };
    const first = await connect(v, sessionOpts);
    await first.subscribeAsync(topic, { qos: 1 });
    await first.endAsync();

    const pub = await connect(v);
    for (let i = 0; i < 5; i++) await pub.publishAsync(topic, `offline ${i}`, { qos: 1 });

    // MQTT.js emits 'message' as soon as the stored messages arrive after CONNACK
    const got: string[] = [];
    let sessionPresent: boolean | undefined;
    const second = mqtt.connect(`mqtt://127.0.0.1:${broker.port}`, { protocolVersion: v, reconnectPeriod: 0, ...sessionOpts });
    open.push(second);
    second.on('connect', (ack) => (sessionPresent = ack.sessionPresent));
    second.on('message', (_t, payload) => got.push(payload.toString()));
    // a refused CONNACK or a connack timeout would otherwise be an uncaught 'error'
    const errors: string[] = [];
    second.on('error', (err) => errors.push(err.message));
    await waitFor(() => got.length === 5 || errors.length > 0, 'the 5 stored messages');
    expect(errors).toEqual([]);
    expect(sessionPresent).toBe(true);
    expect(got).toEqual([0, 1, 2, 3, 4].map((i) => `offline ${i}`));
  });

  it('starts a fresh session when a v5 client asks for clean start', async () => {
    const clientId = `mqttjs-fresh-${++seq}`;
    const first = await connect(5, { clientId, clean: false, properties: { sessionExpiryInterval: 300 } });
    await first.subscribeAsync('e2e/fresh/x', { qos: 1 });
    await first.endAsync();
    let sessionPresent: boolean | undefined;
    const second = mqtt.connect(`mqtt://127.0.0.1:${broker.port}`, { protocolVersion: 5, clientId, clean: true, reconnectPeriod: 0 });
    open.push(second);
    second.on('connect', (ack) => (sessionPresent = ack.sessionPresent));
    const errors: string[] = [];
    second.on('error', (err) => errors.push(err.message));
    await waitFor(() => sessionPresent !== undefined || errors.length > 0, 'CONNACK');
    expect(errors).toEqual([]);
    expect(sessionPresent).toBe(false);
    expect(broker.server.broker.subscriptions().some((s) => s.clientId === clientId)).toBe(false);
  });

  it('honours No Local: a v5 client does not get its own messages back', async () => {
    const c = await connect(5);
    const got = collect(c);
    await c.subscribeAsync('e2e/nolocal/#', { qos: 1, nl: true });
    const other = await connect(5);
    await c.publishAsync('e2e/nolocal/mine', 'own', { qos: 1 });
    await other.publishAsync('e2e/nolocal/theirs', 'other', { qos: 1 });
    await waitFor(() => got.length >= 1, 'the other client message');
    expect(got.map((m) => m.payload.toString())).toEqual(['other']);
  });

  it('splits a shared subscription ($share) between its members', async () => {
    const a = await connect(5);
    const b = await connect(5);
    const gotA = collect(a);
    const gotB = collect(b);
    await a.subscribeAsync('$share/workers/e2e/jobs', { qos: 1 });
    await b.subscribeAsync('$share/workers/e2e/jobs', { qos: 1 });
    const pub = await connect(5);
    for (let i = 0; i < 20; i++) await pub.publishAsync('e2e/jobs', `job ${i}`, { qos: 1 });
    await waitFor(() => gotA.length + gotB.length === 20, 'all 20 jobs');
    // each job goes to exactly one member, and both members get work
    const all = [...gotA, ...gotB].map((m) => m.payload.toString()).sort();
    expect(new Set(all).size).toBe(20);
    expect(gotA.length).toBeGreaterThan(0);
    expect(gotB.length).toBeGreaterThan(0);
  });

  it('expires a retained message after its Message Expiry Interval', async () => {
    const topic = `e2e/expiry/${++seq}`;
    const pub = await connect(5);
    await pub.publishAsync(topic, 'short-lived', { qos: 1, retain: true, properties: { messageExpiryInterval: 1 } });
    await new Promise((r) => setTimeout(r, 2100));
    const late = await connect(5);
    const got = collect(late);
    await late.subscribeAsync(topic, { qos: 1 });
    await pub.publishAsync(topic, 'marker', { qos: 1 });
    await waitFor(() => got.length >= 1, 'the marker');
    expect(got.map((m) => m.payload.toString())).toEqual(['marker']);
  });
});

describe('MQTT.js limits and liveness', () => {
  it('carries a 512 KiB payload intact at QoS 1', async () => {
    const sub = await connect(5);
    const got = collect(sub);
    await sub.subscribeAsync('e2e/big', { qos: 1 });
    const pub = await connect(4);
    const payload = Buffer.alloc(512 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 0xff;
    await pub.publishAsync('e2e/big', payload, { qos: 1 });
    await waitFor(() => got.length === 1, 'the large message');
    expect(got[0]!.payload.equals(payload)).toBe(true);
  });

  it('takes over a session: the older connection with the same client id is disconnected (v5: 0x8E)', async () => {
    const clientId = `mqttjs-takeover-${++seq}`;
    const first = await connect(5, { clientId });
    let reason: number | undefined;
    first.on('disconnect', (packet) => (reason = packet.reasonCode));
    const closed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const second = await connect(5, { clientId });
    await closed;
    expect(reason).toBe(0x8e); // [MQTT-5-3.1.4-3] Session taken over
    expect(second.connected).toBe(true);
  });

  it('closes a client that stops sending within 1.5x its keep alive, and publishes its will', async () => {
    const watcher = await connect(5);
    const got = collect(watcher);
    await watcher.subscribeAsync('e2e/keepalive/#', { qos: 1 });
    // a raw client: CONNECT with keep alive 1 s and a will, then silence (no PINGREQ)
    const socket = net.connect(broker.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let connected = false;
    socket.once('connect', () => (connected = true));
    await waitFor(() => connected, 'the TCP connection', 3000);
    const startedAt = Date.now();
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: `silent-${++seq}`, clean: true, keepalive: 1, will: { topic: 'e2e/keepalive/silent', payload: Buffer.from('timed out'), qos: 1, retain: false } } as IConnectPacket));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    let connack = '';
    socket.on('data', (d: Buffer) => (connack += d.toString('hex')));
    let isClosed = false;
    void closed.then(() => (isClosed = true));
    await waitFor(() => isClosed, () => `the broker to close the silent connection (received ${connack || 'nothing'}; clients online: ${broker.server.broker.clients().length})`, 6000);
    const elapsed = Date.now() - startedAt;
    // [MQTT-3.1.1-3.1.2-24] at most 1.5 x keep alive (plus the broker's sweep interval)
    expect(elapsed).toBeGreaterThanOrEqual(1000);
    expect(elapsed).toBeLessThan(3000);
    await waitFor(() => got.length === 1, 'the will of the silent client');
    expect(got[0]!.payload.toString()).toBe('timed out');
  });
});

describe('MQTT.js against a broker with a small Maximum Packet Size', () => {
  it('disconnects a v5 client that sends a packet over the limit with 0x95, others carry on', async () => {
    const small = await startBroker({ maxPacketSize: 1024 });
    try {
      const url = `mqtt://127.0.0.1:${small.port}`;
      const bystander = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
      const got: string[] = [];
      bystander.on('message', (_t, p) => got.push(p.toString()));
      await bystander.subscribeAsync('e2e/small/#', { qos: 1 });
      const offender = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
      let reason: number | undefined;
      offender.on('disconnect', (packet) => (reason = packet.reasonCode));
      const closed = new Promise<void>((resolve) => offender.once('close', () => resolve()));
      offender.publish('e2e/small/x', Buffer.alloc(4096), { qos: 0 });
      await closed;
      expect(reason).toBe(0x95); // [MQTT-5-3.2.2-15] Packet too large
      const other = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
      await other.publishAsync('e2e/small/y', 'fits', { qos: 1 });
      await waitFor(() => got.length === 1, 'the message that fits');
      expect(got).toEqual(['fits']);
      await Promise.all([bystander.endAsync(), other.endAsync(), offender.endAsync(true)]);
    } finally {
      await small.stop();
    }
  });
});

describe('MQTT.js topic rules', () => {
  it('stops delivery after UNSUBSCRIBE', async () => {
    const sub = await connect(5);
    const got = collect(sub);
    await sub.subscribeAsync('e2e/unsub/+', { qos: 1 });
    const pub = await connect(4);
    await pub.publishAsync('e2e/unsub/a', 'before', { qos: 1 });
    await waitFor(() => got.length === 1, 'the first message');
    await sub.unsubscribeAsync('e2e/unsub/+');
    await sub.subscribeAsync('e2e/unsub-marker', { qos: 1 });
    await pub.publishAsync('e2e/unsub/a', 'after', { qos: 1 });
    await pub.publishAsync('e2e/unsub-marker', 'marker', { qos: 1 });
    await waitFor(() => got.length >= 2, 'the marker');
    expect(got.map((m) => m.payload.toString())).toEqual(['before', 'marker']);
  });

  it('delivers a message once at the highest QoS when subscriptions overlap (3.1.1)', async () => {
    const sub = await connect(4);
    const got = collect(sub);
    await sub.subscribeAsync({ 'e2e/overlap/#': { qos: 0 }, 'e2e/overlap/+/x': { qos: 1 } });
    const pub = await connect(4);
    await pub.publishAsync('e2e/overlap/a/x', 'one', { qos: 1 });
    await pub.publishAsync('e2e/overlap/marker', 'marker', { qos: 1 });
    await waitFor(() => got.some((m) => m.payload.toString() === 'marker'), 'the marker');
    const ones = got.filter((m) => m.payload.toString() === 'one');
    expect(ones).toHaveLength(1);
    expect(ones[0]!.packet.qos).toBe(1);
  });

  it('keeps $SYS topics out of a "#" subscription [MQTT-5-4.7.2-1] but serves "$SYS/#"', async () => {
    const sys = await startBroker({ sysInterval: 1 });
    try {
      const url = `mqtt://127.0.0.1:${sys.port}`;
      const all = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
      const sysSub = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
      const fromAll: string[] = [];
      const fromSys: string[] = [];
      all.on('message', (t) => fromAll.push(t));
      sysSub.on('message', (t) => fromSys.push(t));
      await all.subscribeAsync('#', { qos: 0 });
      await sysSub.subscribeAsync('$SYS/#', { qos: 0 });
      await waitFor(() => fromSys.length > 0, 'a $SYS message', 4000);
      await new Promise((r) => setTimeout(r, 1200)); // another $SYS interval
      expect(fromAll.filter((t) => t.startsWith('$'))).toEqual([]);
      await Promise.all([all.endAsync(), sysSub.endAsync()]);
    } finally {
      await sys.stop();
    }
  });

  it('refuses a 3.1.1 client with an empty client id and clean session 0 (CONNACK 0x02) [MQTT-3.1.1-3.1.3-8]', async () => {
    const socket = net.connect(broker.port, '127.0.0.1');
    socket.on('error', () => undefined);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let connack: IConnackPacket | undefined;
    parser.on('packet', (p) => {
      if (p.cmd === 'connack') connack = p;
    });
    socket.on('data', (d: Buffer) => parser.parse(d));
    // hand-made: mqtt-packet itself refuses to encode this CONNECT
    // 0x10 len 12 | "MQTT" level 4 | flags 0 (clean session 0) | keep alive 0 | client id ""
    socket.write(Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00]));
    await waitFor(() => connack !== undefined, 'CONNACK');
    expect(connack!.returnCode).toBe(2);
    socket.destroy();
  });
});
