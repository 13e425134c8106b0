/**
 * The in direction's crash window: a QoS 1 message from the remote is acknowledged to it
 * (PUBACK) only once it is stored here. Numbered QoS 1 load on mosquitto, bridged in
 * (MQTT 5, the bridge's persistent session there queues while we are down) to a real `edb
 * start` process with durable storage and a persistent local subscriber (offline through the
 * load, so what comes in lives only in its stored session here; the log's commit interval is
 * raised to 40 ms so that an acknowledgement sent before the commit would be lost with the
 * process); our broker SIGKILLed at random moments under the load, several times. Every message mosquitto
 * acknowledged to its publisher must reach the local subscriber: mosquitto drops a message for
 * our bridge's session only on our PUBACK, so one acknowledged before it was stored here and
 * lost in a kill would be missing. Per topic the first arrivals are in order.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/broker.js';
import { sleep } from '../helpers/bridge-load.js';
import { freePort, startMosquitto } from '../helpers/mosquitto.js';
import { startBrokerProcess } from '../helpers/process.js';

const CYCLES = 5;

describe('bridge in: a QoS 1 message is acknowledged to the remote only once stored here', () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  afterAll(async () => {
    for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  });

  it('our broker SIGKILLed again and again under inbound QoS 1 load: every message mosquitto acknowledged arrives here', async () => {
    const remote = await startMosquitto();
    cleanup.push(() => remote.stop());
    const mqttPort = await freePort();
    const env = {
      EDB_STORAGE: 'durable',
      EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-bridge-in-kill-')),
      EDB_MQTT_PORT: String(mqttPort),
      EDB_MQTTS_PORT: '-1',
      // a message waits up to 40 ms in memory for its batch's commit: an acknowledgement sent
      // before the commit would be lost with the process (SIGKILL keeps what reached the file)
      EDB_STORAGE_FLUSH_INTERVAL_MS: '40',
      EDB_BRIDGE_BR0: `127.0.0.1:${remote.port}`,
      EDB_BRIDGE_BR0_TOPIC_1: 'q1i/# in 1',
      EDB_BRIDGE_BR0_RECONNECT_MIN: '100ms',
      EDB_BRIDGE_BR0_RECONNECT_MAX: '500ms',
    };
    let edb = await startBrokerProcess(env);
    cleanup.push(() => edb.stop('SIGKILL'));
    // the local subscriber: a persistent session, offline through the load (so what comes in
    // lives only in its stored session here), back at the end
    const seen: number[] = [];
    let probed = false;
    const connectLocal = async (): Promise<MqttClient> => {
      // handlers before the CONNACK: a resumed session's messages come right behind it
      const c = mqtt.connect({ host: '127.0.0.1', port: mqttPort, clientId: 'local-q1i', clean: false, reconnectPeriod: 300, protocolVersion: 5, properties: { sessionExpiryInterval: 3600 } });
      cleanup.push(() => c.end(true));
      c.on('error', () => undefined);
      c.on('message', (t, payload) => {
        if (t === 'q1i/probe') probed = true;
        else seen.push(Number(payload.toString()));
      });
      await new Promise((resolve) => c.once('connect', resolve));
      return c;
    };
    const local = await connectLocal();
    await local.subscribeAsync('q1i/#', { qos: 1 });
    const pub = await mqtt.connectAsync({ host: '127.0.0.1', port: remote.port, reconnectPeriod: 0, clientId: 'remote-pub-q1' });
    cleanup.push(() => pub.end(true));
    for (let i = 0; i < 150 && !probed; i++) {
      await pub.publishAsync('q1i/probe', 'p', { qos: 0 });
      await sleep(100);
    }
    expect(probed, 'a probe through the bridge').toBe(true);
    await local.endAsync();

    // numbered QoS 1 on mosquitto, about 20 a second (each one waits here for its commit before
    // its PUBACK, and MQTT.js takes the next after that); what mosquitto acknowledged is counted
    const acked = new Set<number>();
    let next = 0;
    let running = true;
    const worker = async () => {
      while (running) {
        const k = next++;
        await pub.publishAsync('q1i/x', String(k), { qos: 1 });
        acked.add(k);
        await sleep(50);
      }
    };
    const load = worker();
    let whileDown = 0;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const before = acked.size;
      await until(() => acked.size > before + 15, 30_000, `load in cycle ${cycle}`);
      await sleep(100 + Math.floor(Math.random() * 800));
      await edb.stop('SIGKILL');
      const atKill = acked.size;
      await sleep(300);
      whileDown += acked.size - atKill;
      edb = await startBrokerProcess(env);
    }
    await sleep(500);
    running = false;
    await load;
    await connectLocal();
    await until(() => {
      const have = new Set(seen);
      return [...acked].every((k) => have.has(k));
    }, 45_000, 'every message mosquitto acknowledged, here').catch(() => undefined); // the expect below names what is missing
    const have = new Set(seen);
    expect([...acked].filter((k) => !have.has(k)), 'acknowledged by mosquitto, missing here').toEqual([]);
    const firsts: number[] = [];
    const known = new Set<number>();
    for (const n of seen) if (!known.has(n)) known.add(n), firsts.push(n);
    expect(firsts, 'order of first arrivals').toEqual([...firsts].sort((a, b) => a - b));
    expect(whileDown, 'messages mosquitto acknowledged while we were down').toBeGreaterThan(0);
    await edb.stop('SIGTERM');
  }, 170_000);
});
