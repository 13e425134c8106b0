/**
 * Store-and-forward under faults with a second Edge Data Broker as the remote (a real `edb
 * start` process with durable storage; the verifier holds a persistent v5 session there, so
 * what arrives while it is down is queued for it): numbered QoS 1 load over four topics; the
 * remote stopped for 30 s (SIGTERM, started again on the same port and data folder); the link
 * black-holed (a proxy that stops forwarding without closing, so only keep alive notices), on
 * a 3.1.1 link; our broker SIGKILLed with a backlog and restarted. Nothing acknowledged
 * locally may be missing on the remote, and per topic the first arrivals are in order.
 * The same against mosquitto: bridge-outages.test.ts.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBridge } from '../../src/config/bridges.js';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { blackHoleProxy, Load, sleep, startEdbRemote, Verifier } from '../helpers/bridge-load.js';
import { freePort } from '../helpers/mosquitto.js';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const fast = { reconnectMin: '100ms', reconnectMax: '1s', keepAlive: 2 };

describe('bridge store-and-forward under faults, a second Edge Data Broker as the remote', () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  afterAll(async () => {
    for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  });

  it('the remote stopped for 30 s under QoS 1 load (MQTT 5 link): nothing acknowledged is lost, order per topic holds', async () => {
    const remote = await startEdbRemote();
    cleanup.push(() => remote.stop('SIGKILL'));
    const verifier = await Verifier.start(remote.port, 'outage', 'verifier-outage', 5);
    cleanup.push(() => verifier.client.end(true));
    const edb: TestBroker = await startBroker({ storage: 'durable', bridges: [parseBridge('br0', { url: `mqtt://127.0.0.1:${remote.port}`, ...fast, protocolVersion: 5, topics: ['outage/# out 1'] })] });
    cleanup.push(() => edb.stop());
    const bridge = edb.server.bridges.get('br0')!;
    await until(() => bridge.state === 'connected', 15_000, 'bridge up');
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
    expect(during, 'messages published while the remote was away').toBeGreaterThan(100);
    expect(bridge.counters.reconnects).toBeGreaterThan(0);
    await until(() => bridge.backlog.size === 0, 10_000, 'backlog released');
    expect(bridge.dropped).toEqual({ buffer_full: 0, too_old: 0, retention: 0, size_cap: 0 });
  });

  it('the link black-holed (MQTT 3.1.1 link; no close, only keep alive notices): nothing acknowledged is lost', async () => {
    const remote = await startEdbRemote();
    cleanup.push(() => remote.stop('SIGKILL'));
    const proxy = await blackHoleProxy(remote.port);
    cleanup.push(() => proxy.close());
    const verifier = await Verifier.start(remote.port, 'hole', 'verifier-hole', 5);
    cleanup.push(() => verifier.client.end(true));
    const edb = await startBroker({ storage: 'durable', bridges: [parseBridge('br0', { url: `mqtt://127.0.0.1:${proxy.port}`, ...fast, protocolVersion: 4, topics: ['hole/# out 1'] })] });
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
    const remote = await startEdbRemote();
    cleanup.push(() => remote.stop('SIGKILL'));
    const verifier = await Verifier.start(remote.port, 'kill', 'verifier-kill', 5);
    cleanup.push(() => verifier.client.end(true));
    const mqttPort = await freePort();
    const env = {
      EDB_STORAGE: 'durable',
      EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-bridge-kill-')),
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
    await edb.stop('SIGKILL'); // in the middle of the load, with the backlog unsent
    pub.end(true);
    await load.stop();
    await remote.restart();
    edb = await startBrokerProcess(env);
    await until(() => verifier.allArrived(load.acked), 60_000, 'every acknowledged message on the remote after the restart');
    verifier.check(load.acked);
    expect(edb.logs.some((l) => typeof l['msg'] === 'string' && /messages of its backlog read back from the log/.test(l['msg']))).toBe(true);
    await edb.stop('SIGTERM');
  });
});
