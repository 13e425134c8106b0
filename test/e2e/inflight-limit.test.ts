/**
 * The maxInflight setting ("Receive Maximum the broker announces, and QoS 1/2 messages in flight to
 * a client", src/config/schema.ts) against a subscriber that never acknowledges: at most
 * maxInflight QoS 1 PUBLISHes may be outstanding to it, the rest wait in its bounded queue.
 * (The window used to be only the client's Receive Maximum, 65535 for 3.1.1 clients.)
 */
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, waitFor, type RunningBroker } from './helpers.js';

let broker: RunningBroker;
beforeAll(async () => {
  broker = await startBroker({ maxInflight: 10 });
});
afterAll(async () => {
  await broker.stop();
});

/** A raw subscriber that counts QoS 1 PUBLISHes and never sends PUBACK. */
async function silentSubscriber(version: 4 | 5, topic: string): Promise<{ publishes: () => number; close: () => void }> {
  const socket = net.connect(broker.port, '127.0.0.1');
  const parser = mqttPacket.parser({ protocolVersion: version });
  let publishes = 0;
  let subscribed = false;
  parser.on('packet', (p) => {
    if (p.cmd === 'connack') socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] }, { protocolVersion: version }));
    else if (p.cmd === 'suback') subscribed = true;
    else if (p.cmd === 'publish') publishes++;
  });
  socket.on('data', (d: Buffer) => parser.parse(d));
  socket.on('error', () => undefined);
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clientId: `no-ack-${version}`, clean: true, keepalive: 0 }, { protocolVersion: version }));
  await waitFor(() => subscribed, 'SUBACK');
  return { publishes: () => publishes, close: () => socket.destroy() };
}

describe('maxInflight bounds QoS 1 messages in flight to a client', () => {
  it.each([4, 5] as const)('protocol %i: a subscriber that never acks gets at most maxInflight (10) of 50', async (version) => {
    const topic = `e2e/inflight/${version}`;
    const sub = await silentSubscriber(version, topic);
    const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { protocolVersion: 4, reconnectPeriod: 0 });
    try {
      for (let i = 0; i < 50; i++) await pub.publishAsync(topic, `m${i}`, { qos: 1 });
      // the first 10 must arrive; then nothing more may come while none is acknowledged
      await waitFor(() => sub.publishes() >= 10, 'the first 10 messages');
      await new Promise((r) => setTimeout(r, 300));
      expect(sub.publishes()).toBe(10);
    } finally {
      await pub.endAsync();
      sub.close();
    }
  });
});
