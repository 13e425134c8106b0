import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IPublishPacket } from 'mqtt-packet';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';
import { collect, connectClient } from '../helpers/mqttjs.js';
import type { Message } from '../../src/mqtt/message.js';

/**
 * What one stored item can do to other clients: nothing. A message that cannot be encoded
 * (here: made by a buggy service; from the network the inbound checks refuse such values) is
 * quarantined at the first receiver it fails for, counted and logged once; every receiver
 * stays connected and gets everything else.
 */
describe('a stored message that fails to encode is quarantined, not fatal to receivers', () => {
  let b: TestBroker;
  beforeAll(async () => {
    b = await startBroker();
  });
  afterAll(() => b.stop());

  it('retained: v5 and 3.1.1 subscribers to # stay connected and receive every other retained message', async () => {
    const broker = b.server.broker;
    broker.publish({ topic: 'q/good/1', payload: Buffer.from('one'), qos: 1, retain: true });
    // a value no client can send any more (the property check refuses it): the encoder throws on it
    const poison: Message = { topic: 'q/bad', payload: Buffer.from('x'), qos: 1, retain: true, origin: 'rules', properties: { contentType: null as unknown as string } };
    broker.publish(poison);
    broker.publish({ topic: 'q/good/2', payload: Buffer.from('two'), qos: 0, retain: true });

    const v5 = (await RawClient.connect(b.port, { clientId: 'q-raw5' })).client;
    v5.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'q/#', qos: 1 }] });
    await v5.next('suback');
    await until(() => v5.all('publish').length >= 2, 3000, 'two retained messages');
    await v5.ping();
    expect(v5.closed).toBe(false);
    expect(v5.all<IPublishPacket>('publish').map((p) => p.topic).sort()).toEqual(['q/good/1', 'q/good/2']);

    // the poison is gone from the retained store: later subscribers, whatever their version, never see it
    expect(broker.retained.get('q/bad')).toBeUndefined();
    const js = await connectClient(b.port, { clientId: 'q-js5', protocolVersion: 5 });
    const got = collect(js);
    await js.subscribeAsync('q/#', { qos: 1 });
    const msgs = await got.wait(2);
    expect(msgs.map((m) => m.topic).sort()).toEqual(['q/good/1', 'q/good/2']);
    const v4 = (await RawClient.connect(b.port, { clientId: 'q-raw4' }, 4)).client;
    v4.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 1 }] }, 4);
    await v4.next('suback');
    await until(() => v4.all<IPublishPacket>('publish').filter((p) => p.topic.startsWith('q/')).length >= 2, 3000, 'retained for 3.1.1');
    expect(v4.all<IPublishPacket>('publish').map((p) => p.topic).filter((t) => t.startsWith('q/')).sort()).toEqual(['q/good/1', 'q/good/2']);

    // counted once, by kind and by origin
    expect(broker.stats.internalErrors).toEqual({ encode_publish: 1 });
    expect(broker.stats.quarantined).toEqual({ rules: 1 });
    v5.destroy();
    v4.destroy();
    await js.endAsync();
  });

  it('live: a message failing for one v5 subscriber is dropped for all, counted once; the subscriber keeps its session', async () => {
    const broker = b.server.broker;
    const before = broker.stats.internalErrors['encode_publish'] ?? 0;
    const subs = await Promise.all([1, 2, 3].map(async (i) => {
      const c = (await RawClient.connect(b.port, { clientId: `live-${i}` })).client;
      c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'live/#', qos: 1 }] });
      await c.next('suback');
      return c;
    }));
    broker.publish({ topic: 'live/bad', payload: Buffer.from('x'), qos: 1, retain: false, origin: 'state', properties: { correlationData: null as unknown as Buffer } });
    broker.publish({ topic: 'live/good', payload: Buffer.from('ok'), qos: 1, retain: false });
    for (const c of subs) {
      const p = await c.next<IPublishPacket>('publish');
      expect(p.topic).toBe('live/good');
      expect(c.closed).toBe(false);
      c.destroy();
    }
    expect(broker.stats.internalErrors['encode_publish']).toBe(before + 1);
    expect(broker.stats.quarantined['state']).toBe(1);
  });
});
