/**
 * Store-and-forward under faults, with a verifier that numbers every message (per topic):
 * the remote (mosquitto) stopped for 30 s under QoS 1 load; the link black-holed by a TCP
 * proxy that stops forwarding without closing (only keep alive can notice); our broker
 * SIGKILLed with a backlog and restarted (EDB_STORAGE=durable: the backlog is read back from
 * the log). Every message acknowledged locally must reach the remote, and per topic the
 * first arrivals must be in order (QoS 1 may bring a message twice after a reconnect).
 * The same against a second Edge Data Broker: bridge-outages-edb.test.ts.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBridge } from '../../src/config/bridges.js';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { blackHoleProxy, Load, sleep, Verifier } from '../helpers/bridge-load.js';
import { freePort, startMosquitto } from '../helpers/mosquitto.js';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const fast = { reconnectMin: '100ms', reconnectMax: '1s', keepAlive: 2 };

describe('bridge store-and-forward under faults', () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  afterAll(async () => {
    for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  });

  it('the remote stopped for 30 s under QoS 1 load: nothing acknowledged is lost, order per topic holds', async () => {
    const remote = await startMosquitto({ persistence: true });
    cleanup.push(() => remote.stop());
    const verifier = await Verifier.start(remote.port, 'outage', 'verifier-outage');
    cleanup.push(() => verifier.client.end(true));
    const edb: TestBroker = await startBroker({ storage: 'durable', bridges: [parseBridge('br0', { url: `mqtt://127.0.0.1:${remote.port}`, ...fast, topics: ['outage/# out 1'] })] });
    cleanup.push(() => edb.stop());
    await until(() => edb.server.bridges.get('br0')!.state === 'connected', 15_000, 'bridge up');
    const pub = await mqtt.connectAsync(edb.url, { reconnectPeriod: 0 });
    cleanup.push(() => pub.end(true));
    const load = new Load(pub, 'outage');
    await until(() => load.total > 200, 20_000, 'some load');
    await remote.stop();
    const atStop = load.total;
    await sleep(30_000);
    const during = load.total - atStop;
    await remote.restart();
    await sleep(1000);
    await load.stop();
    await until(() => verifier.allArrived(load.acked), 60_000, 'every acknowledged message on the remote');
    verifier.check(load.acked);
    const bridge = edb.server.bridges.get('br0')!;
    expect(during, 'messages published while the remote was away').toBeGreaterThan(100);
    expect(bridge.counters.reconnects).toBeGreaterThan(0);
    await until(() => bridge.backlog.size === 0, 10_000, 'backlog released');
    expect(bridge.dropped).toEqual({ buffer_full: 0, too_old: 0, retention: 0, size_cap: 0 });
  });

  it('the link black-holed (no close, only keep alive notices): nothing acknowledged is lost', async () => {
    const remote = await startMosquitto();
    cleanup.push(() => remote.stop());
    const proxy = await blackHoleProxy(remote.port);
    cleanup.push(() => proxy.close());
    const verifier = await Verifier.start(remote.port, 'hole', 'verifier-hole');
    cleanup.push(() => verifier.client.end(true));
    const edb = await startBroker({ storage: 'durable', bridges: [parseBridge('br0', { url: `mqtt://127.0.0.1:${proxy.port}`, ...fast, topics: ['hole/# out 1'] })] });
    cleanup.push(() => edb.stop());
    const bridge = edb.server.bridges.get('br0')!;
    await until(() => bridge.state === 'connected', 15_000, 'bridge up');
    const pub = await mqtt.connectAsync(edb.url, { reconnectPeriod: 0 });
    cleanup.push(() => pub.end(true));
    const load = new Load(pub, 'hole');
    await until(() => load.total > 200, 20_000, 'some load');
    proxy.set(true);
    const connects = bridge.counters.connects;
    await until(() => bridge.state !== 'connected', 30_000, 'keep alive to notice the black hole');
    await sleep(2000);
    proxy.set(false);
    await until(() => bridge.counters.connects > connects && bridge.state === 'connected', 30_000, 'the bridge back through the proxy');
    await sleep(500);
    await load.stop();
    await until(() => verifier.allArrived(load.acked), 60_000, 'every acknowledged message on the remote');
    verifier.check(load.acked);
  });

  it('our broker SIGKILLed with a backlog, then restarted: the backlog is read back from the log and delivered', async () => {
    const remote = await startMosquitto({ persistence: true });
    cleanup.push(() => remote.stop());
    const verifier = await Verifier.start(remote.port, 'kill', 'verifier-kill');
    cleanup.push(() => verifier.client.end(true));
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-bridge-kill-'));
    const mqttPort = await freePort();
    const env = {
      EDB_STORAGE: 'durable',
      EDB_DATA_DIR: dataDir,
      EDB_MQTT_PORT: String(mqttPort),
      EDB_MQTTS_PORT: '-1',
      EDB_BRIDGE_BR0: `127.0.0.1:${remote.port}`,
      EDB_BRIDGE_BR0_TOPIC_1: 'kill/# out 1',
      EDB_BRIDGE_BR0_RECONNECT_MIN: '100ms',
      EDB_BRIDGE_BR0_RECONNECT_MAX: '1s',
      EDB_BRIDGE_BR0_KEEP_ALIVE: '2',
    };
    let edb: BrokerProcess = await startBrokerProcess(env);
    cleanup.push(() => edb.stop('SIGKILL'));
    const pub = await mqtt.connectAsync({ port: mqttPort, host: '127.0.0.1', reconnectPeriod: 0 });
    const load = new Load(pub, 'kill');
    await until(() => load.total > 200, 20_000, 'some load while the remote is up');
    await remote.stop();
    const atStop = load.total;
    await until(() => load.total > atStop + 500, 30_000, 'a backlog while the remote is away');
    // SIGKILL in the middle of the load, with the backlog unsent
    await edb.stop('SIGKILL');
    pub.end(true); // fails the publish in flight (never acknowledged: not counted)
    await load.stop();
    expect(load.total - atStop).toBeGreaterThan(500);
    await remote.restart();
    edb = await startBrokerProcess(env);
    await until(() => verifier.allArrived(load.acked), 60_000, 'every acknowledged message on the remote after the restart');
    verifier.check(load.acked);
    expect(edb.logs.some((l) => typeof l['msg'] === 'string' && /messages of its backlog read back from the log/.test(l['msg']))).toBe(true);
    await edb.stop('SIGTERM');
  });

  it('a full buffer drops the oldest and counts them; hot add and remove under load leave the other bridge alone', async () => {
    const remote = await startMosquitto();
    cleanup.push(() => remote.stop());
    const other = await startMosquitto();
    cleanup.push(() => other.stop());
    const verifier = await Verifier.start(remote.port, 'bound', 'verifier-bound');
    cleanup.push(() => verifier.client.end(true));
    const edb = await startBroker({
      storage: 'durable',
      bridges: [parseBridge('keep', { url: `mqtt://127.0.0.1:${remote.port}`, ...fast, topics: ['bound/# out 1'] }), parseBridge('small', { url: `mqtt://127.0.0.1:${other.port}`, ...fast, maxOutgoingBufferedMessages: 50, topics: ['bound/# out 1'] })],
    });
    cleanup.push(() => edb.stop());
    await until(() => edb.server.bridges.list().every((b) => b.state === 'connected'), 15_000, 'bridges up');
    await other.stop(); // "small" now buffers, and its bound of 50 drops the oldest
    await until(() => edb.server.bridges.get('small')!.state !== 'connected', 15_000, 'small down');
    const pub = await mqtt.connectAsync(edb.url, { reconnectPeriod: 0 });
    cleanup.push(() => pub.end(true));
    const load = new Load(pub, 'bound');
    await until(() => load.total > 300, 20_000, 'load');
    const small = edb.server.bridges.get('small')!;
    expect(small.backlog.size).toBe(50);
    expect(small.dropped.buffer_full).toBeGreaterThan(200);
    // hot add and remove while the load runs; "keep" goes on undisturbed
    const keepConnects = edb.server.bridges.get('keep')!.counters.connects;
    await edb.server.bridges.add(parseBridge('extra', { url: `mqtt://127.0.0.1:${remote.port}`, ...fast, clientId: 'extra-bridge', topics: ['bound/# out 1 "" extra/'] }));
    await until(() => edb.server.bridges.get('extra')!.state === 'connected', 15_000, 'extra up');
    await edb.server.bridges.remove('small');
    expect(edb.server.bridges.get('small')).toBeUndefined();
    await load.stop();
    await until(() => verifier.allArrived(load.acked), 60_000, 'every message through "keep"');
    verifier.check(load.acked);
    expect(edb.server.bridges.get('keep')!.counters.connects).toBe(keepConnects);
  });
});
