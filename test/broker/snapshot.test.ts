import { afterEach, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { restoreBroker, snapshotBroker } from '../../src/broker/snapshot.js';

const servers: EdbServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function start(): Promise<EdbServer> {
  const s = await startEdb(testConfig(), silentLogger());
  servers.push(s);
  return s;
}

function connect(port: number, opts: mqtt.IClientOptions): Promise<mqtt.MqttClient> {
  const c = mqtt.connect({ port, reconnectPeriod: 0, ...opts });
  return new Promise((resolve, reject) => c.once('connect', () => resolve(c)).once('error', reject));
}

describe('broker snapshot', () => {
  it('carries retained messages, subscriptions and queued QoS 1 messages to a new broker', async () => {
    const a = await start();
    const port = a.port('mqtt');
    // a persistent v5 session that subscribes, then goes offline
    const sub = await connect(port, { clientId: 'keeper', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 3600 } });
    await sub.subscribeAsync('plant/#', { qos: 1 });
    await sub.subscribeAsync('$share/g/shared/+', { qos: 1 });
    sub.end();
    await new Promise((r) => setTimeout(r, 50));
    const pub = await connect(port, { protocolVersion: 5 });
    await pub.publishAsync('plant/1', 'queued-1', { qos: 1, properties: { contentType: 'text/plain', correlationData: Buffer.from([1, 2]) } });
    await pub.publishAsync('plant/2', 'queued-2', { qos: 1 });
    await pub.publishAsync('status/a', 'retained-a', { qos: 0, retain: true });
    pub.end();
    await new Promise((r) => setTimeout(r, 50));

    const bytes = snapshotBroker(a.broker);
    expect(a.broker.sessions.get('keeper')!.queued).toBe(2);

    const b = await start();
    const restored = restoreBroker(b.broker, bytes);
    expect(restored).toMatchObject({ retained: 1, sessions: 1 });
    // the two queued messages and the retained one share nothing but are each stored once
    expect(restored.messages).toBe(3);

    // the queued messages may arrive with the CONNACK: listen before connecting
    const back = mqtt.connect({ port: b.port('mqtt'), reconnectPeriod: 0, clientId: 'keeper', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 3600 } });
    const got: { topic: string; payload: string; ct?: string | undefined }[] = [];
    back.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), ct: packet.properties?.contentType }));
    const connack = await new Promise<mqtt.IConnackPacket>((resolve, reject) => back.once('connect', resolve).once('error', reject));
    expect(connack.sessionPresent).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual([
      { topic: 'plant/1', payload: 'queued-1', ct: 'text/plain' },
      { topic: 'plant/2', payload: 'queued-2', ct: undefined },
    ]);
    // the restored subscription routes new messages
    const pub2 = await connect(b.port('mqtt'), { protocolVersion: 4 });
    await pub2.publishAsync('plant/3', 'live', { qos: 1 });
    await new Promise((r) => setTimeout(r, 100));
    expect(got.map((g) => g.payload)).toContain('live');
    // retained message survived
    const reader = await connect(b.port('mqtt'), { protocolVersion: 4 });
    const retained = new Promise<string>((resolve) => reader.on('message', (_t, p) => resolve(p.toString())));
    await reader.subscribeAsync('status/#');
    expect(await retained).toBe('retained-a');
    for (const c of [back, pub2, reader]) c.end(true);
  });

  it('refuses garbage and truncated snapshots without changing the broker', async () => {
    const a = await start();
    a.broker.retained.set({ topic: 'x', payload: Buffer.from('y'), qos: 0, retain: true });
    const good = snapshotBroker(a.broker);
    const b = await start();
    expect(() => restoreBroker(b.broker, Buffer.from('garbage'))).toThrow();
    expect(() => restoreBroker(b.broker, good.subarray(0, good.length - 3))).toThrow(/truncated|trailing/);
    expect(b.broker.retainedCount()).toBe(0);
    expect(restoreBroker(b.broker, good).retained).toBe(1);
  });
});
