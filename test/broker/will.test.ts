import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IConnectPacket, IDisconnectPacket, IPublishPacket } from 'mqtt-packet';
import { startBroker, delay, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';

let b: TestBroker;
beforeAll(async () => {
  b = await startBroker();
});
afterAll(() => b.stop());

let n = 0;
const uid = (p: string): string => `${p}-${++n}`;

async function watcher(topic: string, version: 4 | 5 = 5): Promise<RawClient> {
  const { client } = await RawClient.connect(b.port, { clientId: uid('w') }, version);
  client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1, ...(version === 5 ? { rap: true } : {}) }] });
  await client.next('suback');
  return client;
}

function will(topic: string, extra: Partial<NonNullable<IConnectPacket['will']>> = {}): IConnectPacket['will'] {
  return { topic, payload: Buffer.from(`will of ${topic}`), qos: 1, retain: false, ...extra };
}

/** Proves no will arrived: everything routed so far has reached the watcher. */
async function expectNoWill(w: RawClient): Promise<void> {
  await w.ping();
  expect(w.all('publish')).toHaveLength(0);
}

describe.concurrent('will messages [MQTT-5-3.1.2-8] to [MQTT-5-3.1.2-10]', () => {
  it('published when the socket closes without DISCONNECT, with its properties', async () => {
    const topic = uid('will');
    const w = await watcher(topic);
    const { client } = await RawClient.connect(b.port, {
      clientId: uid('c'),
      will: will(topic, { retain: true, properties: { contentType: 'text/plain', userProperties: { why: 'lost' }, responseTopic: 'r/t', correlationData: Buffer.from([9]) } }),
    });
    client.destroy();
    const got = await w.next<IPublishPacket>('publish');
    expect(got.topic).toBe(topic);
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    expect(got.qos).toBe(1);
    expect(got.retain).toBe(true); // Retain As Published
    expect(got.properties).toMatchObject({ contentType: 'text/plain', userProperties: { why: 'lost' }, responseTopic: 'r/t' });
    expect(Buffer.from(got.properties!.correlationData!)).toEqual(Buffer.from([9]));
    // the retained will is stored for later subscribers
    expect(b.server.broker.retained.get(topic)?.payload.toString()).toBe(`will of ${topic}`);
    w.destroy();
  });

  it('3.1.1: published on socket loss', async () => {
    const topic = uid('will4');
    const w = await watcher(topic, 4);
    const { client } = await RawClient.connect(b.port, { clientId: uid('c'), will: will(topic) }, 4);
    client.destroy();
    const got = await w.next<IPublishPacket>('publish');
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    w.destroy();
  });

  it('not published after a normal DISCONNECT (v5 0x00 and 3.1.1)', async () => {
    const topic = uid('normal');
    const w = await watcher(topic);
    const v5 = (await RawClient.connect(b.port, { clientId: uid('c'), will: will(topic) })).client;
    v5.send({ cmd: 'disconnect', reasonCode: 0 });
    await v5.waitClosed();
    const v4 = (await RawClient.connect(b.port, { clientId: uid('c'), will: will(topic) }, 4)).client;
    v4.send({ cmd: 'disconnect' });
    await v4.waitClosed();
    await expectNoWill(w);
    w.destroy();
  });

  it('published after DISCONNECT 0x04 (Disconnect with Will Message)', async () => {
    const topic = uid('d04');
    const w = await watcher(topic);
    const { client } = await RawClient.connect(b.port, { clientId: uid('c'), will: will(topic) });
    client.send({ cmd: 'disconnect', reasonCode: 0x04 });
    const got = await w.next<IPublishPacket>('publish');
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    w.destroy();
  });

  it('[MQTT-5-3.1.2-10] published after a DISCONNECT with an error reason code (only 0x00 discards it)', async () => {
    const topic = uid('d80');
    const w = await watcher(topic);
    const { client } = await RawClient.connect(b.port, { clientId: uid('c'), will: will(topic) });
    client.send({ cmd: 'disconnect', reasonCode: 0x80 });
    const got = await w.next<IPublishPacket>('publish');
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    w.destroy();
  });

  it('published on keep-alive timeout', async () => {
    const topic = uid('ka');
    const w = await watcher(topic);
    const { client } = await RawClient.connect(b.port, { clientId: uid('c'), keepalive: 1, will: will(topic) });
    const got = await w.next<IPublishPacket>('publish', () => true, 4000);
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    expect((await client.next<IDisconnectPacket>('disconnect')).reasonCode).toBe(0x8d);
    w.destroy();
  });

  it('published on a protocol violation', async () => {
    const topic = uid('violation');
    const w = await watcher(topic);
    const { client } = await RawClient.connect(b.port, { clientId: uid('c'), will: will(topic) });
    client.send({ cmd: 'publish', topic: 'x', payload: Buffer.from('1'), qos: 0, retain: false, dup: false, properties: { topicAlias: 0 } });
    const got = await w.next<IPublishPacket>('publish');
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    w.destroy();
  });

  it('published on takeover (the old connection ends abnormally)', async () => {
    const topic = uid('takeover');
    const w = await watcher(topic);
    const id = uid('c');
    await RawClient.connect(b.port, { clientId: id, will: will(topic) });
    const fresh = await RawClient.connect(b.port, { clientId: id });
    const got = await w.next<IPublishPacket>('publish');
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    fresh.client.destroy();
    w.destroy();
  });

  it('not published when a CONNECT is refused', async () => {
    const topic = uid('refused');
    const w = await watcher(topic);
    const { client, connack } = await RawClient.connect(b.port, { clientId: uid('c'), will: will(topic), properties: { authenticationMethod: 'x' } });
    expect(connack.reasonCode).toBe(0x8c);
    await client.waitClosed();
    await expectNoWill(w);
    w.destroy();
  });

  it('will Message Expiry Interval is passed on', async () => {
    const topic = uid('wexp');
    const w = await watcher(topic);
    const { client } = await RawClient.connect(b.port, { clientId: uid('c'), will: will(topic, { properties: { messageExpiryInterval: 30 } }) });
    client.destroy();
    const got = await w.next<IPublishPacket>('publish');
    expect(got.properties?.messageExpiryInterval).toBe(30);
    w.destroy();
  });
});

describe.concurrent('Will Delay Interval [MQTT-5-3.1.3-9]', () => {
  it('the will waits for the delay', async () => {
    const topic = uid('delay');
    const w = await watcher(topic);
    const { client } = await RawClient.connect(b.port, { clientId: uid('c'), properties: { sessionExpiryInterval: 30 }, will: will(topic, { properties: { willDelayInterval: 1 } }) });
    client.destroy();
    const t0 = Date.now();
    await delay(300);
    await expectNoWill(w);
    const got = await w.next<IPublishPacket>('publish', () => true, 3000);
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    w.destroy();
  });

  it('reconnecting within the delay cancels the will', async () => {
    const topic = uid('cancel');
    const w = await watcher(topic);
    const id = uid('c');
    const { client } = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 30 }, will: will(topic, { properties: { willDelayInterval: 1 } }) });
    client.destroy();
    await client.closedPromise;
    const again = await RawClient.connect(b.port, { clientId: id, clean: false, properties: { sessionExpiryInterval: 30 } });
    expect(again.connack.sessionPresent).toBe(true);
    await delay(1600);
    await expectNoWill(w);
    again.client.destroy();
    w.destroy();
  });

  it('a session that ends before the delay publishes the will then', async () => {
    const topic = uid('ends');
    const w = await watcher(topic);
    const { client } = await RawClient.connect(b.port, { clientId: uid('c'), properties: { sessionExpiryInterval: 0 }, will: will(topic, { properties: { willDelayInterval: 60 } }) });
    client.destroy();
    const got = await w.next<IPublishPacket>('publish', () => true, 1000);
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    w.destroy();
  });

  it('reconnecting with Clean Start within the delay ends the old session: the will is published', async () => {
    const topic = uid('clean');
    const w = await watcher(topic);
    const id = uid('c');
    const { client } = await RawClient.connect(b.port, { clientId: id, properties: { sessionExpiryInterval: 30 }, will: will(topic, { properties: { willDelayInterval: 60 } }) });
    client.destroy();
    await client.closedPromise;
    await RawClient.connect(b.port, { clientId: id, clean: true });
    const got = await w.next<IPublishPacket>('publish', () => true, 1000);
    expect(got.payload.toString()).toBe(`will of ${topic}`);
    w.destroy();
  });
});
