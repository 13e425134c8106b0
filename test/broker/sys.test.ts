import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { collect, connectClient } from '../helpers/mqttjs.js';
import { VERSION } from '../../src/server.js';

let b: TestBroker;
beforeAll(async () => {
  b = await startBroker({ sysInterval: 1, maxConnections: 321 });
});
afterAll(() => b.stop());

describe('$SYS/broker topics', () => {
  it('are retained, readable by $SYS/# and updated every sysInterval', async () => {
    const sub = await connectClient(b.port, { clientId: 'sys-watch' });
    const got = collect(sub);
    const latest = new Map<string, string>();
    sub.on('message', (topic, payload) => latest.set(topic.replace('$SYS/broker/', ''), payload.toString()));
    await sub.subscribeAsync('$SYS/broker/#', { qos: 0 });
    await until(() => latest.has('uptime') && latest.has('bytes/sent'), 3000, 'the retained $SYS values');
    expect(got.messages.every((m) => m.packet.retain)).toBe(true); // delivered from the retained store
    expect(latest.get('version')).toBe(`edge-data-broker ${VERSION}`);
    expect(latest.get('uptime')).toMatch(/^\d+ seconds$/);
    expect(latest.get('clients/maximum')).toBe('321');
    const num = (k: string): number => Number(latest.get(k));
    for (const k of ['clients/connected', 'messages/received', 'messages/sent', 'bytes/received', 'bytes/sent', 'retained messages/count', 'subscriptions/count']) {
      expect(Number.isInteger(num(k)), k).toBe(true);
    }
    const before = { received: num('publish/messages/received'), bytesIn: num('bytes/received') };

    const pub = await connectClient(b.port, { clientId: 'sys-pub' });
    await pub.publishAsync('sys-test/retained', 'r', { qos: 1, retain: true });
    for (let i = 0; i < 5; i++) await pub.publishAsync('sys-test/x', Buffer.alloc(100), { qos: 1 });
    const stats = b.server.broker.stats;
    // the next ticks publish the changes
    await until(
      () =>
        num('publish/messages/received') === before.received + 6 &&
        num('clients/connected') === 2 &&
        num('retained messages/count') === b.server.broker.retainedCount(),
      3500,
      'updated counters',
    );
    expect(stats.clientsConnected).toBe(2);
    expect(num('bytes/received')).toBeGreaterThan(before.bytesIn + 500);
    expect(num('bytes/received')).toBeLessThanOrEqual(stats.bytesReceived);
    expect(num('messages/sent')).toBeLessThanOrEqual(stats.messagesSent);
    expect(b.server.broker.retained.get('sys-test/retained')?.payload.toString()).toBe('r');
    const uptime = Number(latest.get('uptime')!.split(' ')[0]);
    expect(uptime).toBeGreaterThanOrEqual(1);

    await pub.endAsync();
    await until(() => num('clients/connected') === 1, 3500, 'clients/connected to drop');
    await sub.endAsync();
  });

  it('a plain # subscription does not see $SYS', async () => {
    const sub = await connectClient(b.port, { clientId: 'sys-hash' });
    const got = collect(sub);
    await sub.subscribeAsync('#', { qos: 0 });
    const pub = await connectClient(b.port, { clientId: 'sys-hash-pub' });
    await pub.publishAsync('visible', 'v', { qos: 1 });
    const [first] = await got.wait(1);
    expect(first!.topic).not.toMatch(/^\$SYS/);
    expect(got.messages.filter((m) => m.topic.startsWith('$SYS'))).toEqual([]);
    await pub.endAsync();
    await sub.endAsync();
  });
});
