/**
 * QoS 2 over a bridge is exactly once across a SIGKILL of our broker (EDB_STORAGE=durable):
 * the link's QoS 2 state (packet ids in flight out and their stage, inbound ids not yet
 * released) is stored before it is acted on (bridge.ts, document "bridge/<name>.qos2").
 * - out: numbered QoS 2 load into a real `edb start` process, bridged out to mosquitto (v5),
 *   the process SIGKILLed at random moments and started again, several times; a verifier on
 *   mosquitto (persistent session) fails on any message that arrives twice, and on any message
 *   whose publish completed here (PUBCOMP) that never arrives;
 * - in: numbered QoS 2 load on mosquitto, bridged in (3.1.1, the bridge's persistent session
 *   there queues while we are down; a proxy holds what we send for 100 ms, so that kills land
 *   between a delivery here and its PUBREC at mosquitto) to a persistent local subscriber;
 *   killed the same way, with messages published while we are down; every message mosquitto
 *   completed arrives here exactly once.
 */
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/broker.js';
import { sleep } from '../helpers/bridge-load.js';
import { freePort, startMosquitto } from '../helpers/mosquitto.js';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const CYCLES = 4;

/** Publishes numbered QoS 2 messages on one topic, a few in flight, recording the completed ones. */
class Qos2Load {
  readonly completed = new Set<number>();
  private running = true;
  private readonly done: Promise<void>;
  constructor(
    client: MqttClient,
    topic: string,
    private next: { n: number },
    window = 6,
    pauseMs = 5,
  ) {
    const worker = async () => {
      while (this.running && client.connected) {
        const k = next.n++;
        try {
          await client.publishAsync(topic, String(k), { qos: 2 });
          this.completed.add(k);
        } catch {
          return; // the broker went away: not completed, not counted (it may or may not arrive, once)
        }
        await sleep(pauseMs);
      }
    };
    this.done = Promise.all(Array.from({ length: window }, worker)).then(() => undefined);
  }
  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

/** Every arrival, in order, through a persistent session (MQTT.js keeps its QoS 2 state across reconnects). */
async function receiver(port: number, filter: string, id: string, version: 4 | 5): Promise<{ seen: number[]; client: MqttClient }> {
  const seen: number[] = [];
  const client = await mqtt.connectAsync({ host: '127.0.0.1', port, clientId: id, clean: false, reconnectPeriod: 200, protocolVersion: version, ...(version === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {}) });
  client.on('message', (t, payload) => void (t.endsWith('/probe') || seen.push(Number(payload.toString()))));
  client.on('error', () => undefined);
  await client.subscribeAsync(filter, { qos: 2 });
  return { seen, client };
}

function checkExactlyOnce(seen: number[], completed: Set<number>): void {
  const counts = new Map<number, number>();
  for (const k of seen) counts.set(k, (counts.get(k) ?? 0) + 1);
  expect([...counts].filter(([, c]) => c > 1).map(([k]) => k), 'messages that arrived more than once').toEqual([]);
  expect([...completed].filter((k) => !counts.has(k)).sort((a, b) => a - b), 'completed messages that never arrived').toEqual([]);
  expect(seen, 'order').toEqual([...seen].sort((a, b) => a - b));
}

/**
 * A TCP proxy that holds what the bridge sends for `ms` before passing it on, and drops what it
 * holds when the bridge's side closes (as a SIGKILL loses what is on the wire): our PUBRECs are
 * in flight for a while, so that kills land between a delivery here and its PUBREC at the remote.
 */
async function slowUplink(upstream: number, ms: number): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((down) => {
    const up = net.connect(upstream, '127.0.0.1');
    sockets.add(down).add(up);
    let closed = false;
    const end = () => {
      closed = true;
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    down.on('data', (d: Buffer) => void setTimeout(() => closed || up.write(d), ms));
    up.on('data', (d: Buffer) => void (closed || down.write(d)));
    down.on('close', end).on('error', end);
    up.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const restored = (p: BrokerProcess) => p.logs.filter((l) => typeof l['msg'] === 'string' && /QoS 2 state restored/.test(l['msg']));

describe('bridge QoS 2: exactly once across a SIGKILL of our broker', () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  afterAll(async () => {
    for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  });

  it('out (MQTT 5 to mosquitto): killed again and again under QoS 2 load, no message twice, none completed missing', async () => {
    const remote = await startMosquitto();
    cleanup.push(() => remote.stop());
    const v = await receiver(remote.port, 'q2k/#', 'verifier-q2k', 5);
    cleanup.push(() => v.client.end(true));
    const mqttPort = await freePort();
    const env = {
      EDB_STORAGE: 'durable',
      EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-bridge-q2k-')),
      EDB_MQTT_PORT: String(mqttPort),
      EDB_MQTTS_PORT: '-1',
      EDB_BRIDGE_BR0: `127.0.0.1:${remote.port}`,
      EDB_BRIDGE_BR0_TOPIC_1: 'q2k/# out 2',
      EDB_BRIDGE_BR0_RECONNECT_MIN: '100ms',
      EDB_BRIDGE_BR0_RECONNECT_MAX: '500ms',
    };
    const next = { n: 0 };
    const completed = new Set<number>();
    let restoredOut = 0;
    for (let cycle = 0; cycle <= CYCLES; cycle++) {
      const edb = await startBrokerProcess(env);
      cleanup.push(() => edb.stop('SIGKILL'));
      for (const l of restored(edb)) restoredOut += Number(l['out'] ?? 0);
      const pub = await mqtt.connectAsync({ host: '127.0.0.1', port: mqttPort, reconnectPeriod: 0, clientId: `pub-${cycle}` });
      pub.on('error', () => undefined);
      const load = new Qos2Load(pub, 'q2k/x', next);
      if (cycle === CYCLES) {
        await until(() => load.completed.size > 100, 30_000, 'load after the last restart');
        await load.stop();
        for (const k of load.completed) completed.add(k);
        pub.end(true);
        await until(() => [...completed].every((k) => v.seen.includes(k)), 60_000, 'every completed message on the remote');
        await sleep(1500); // a late duplicate would come now
        await edb.stop('SIGTERM');
        break;
      }
      await until(() => load.completed.size > 50, 30_000, `load in cycle ${cycle}`);
      await sleep(200 + Math.floor(Math.random() * 1500));
      await edb.stop('SIGKILL');
      pub.end(true);
      await load.stop();
      for (const k of load.completed) completed.add(k);
    }
    checkExactlyOnce(v.seen, completed);
    expect(restoredOut, 'QoS 2 messages in flight out when killed, restored at a start').toBeGreaterThan(0);
  }, 170_000);

  it('in (MQTT 3.1.1 from mosquitto): killed again and again, messages published while we are down, each completed one arrives here once', async () => {
    const remote = await startMosquitto();
    cleanup.push(() => remote.stop());
    const link = await slowUplink(remote.port, 100);
    cleanup.push(() => link.close());
    const mqttPort = await freePort();
    const env = {
      EDB_STORAGE: 'durable',
      EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-bridge-q2k-in-')),
      EDB_MQTT_PORT: String(mqttPort),
      EDB_MQTTS_PORT: '-1',
      EDB_BRIDGE_BR0: `127.0.0.1:${link.port}`,
      EDB_BRIDGE_BR0_TOPIC_1: 'q2i/# in 2',
      EDB_BRIDGE_BR0_PROTOCOL_VERSION: '3.1.1',
      EDB_BRIDGE_BR0_RECONNECT_MIN: '100ms',
      EDB_BRIDGE_BR0_RECONNECT_MAX: '500ms',
    };
    let edb = await startBrokerProcess(env);
    cleanup.push(() => edb.stop('SIGKILL'));
    const local = await receiver(mqttPort, 'q2i/#', 'local-q2i', 5);
    cleanup.push(() => local.client.end(true));
    // the bridge's subscription on mosquitto is in place once a probe (QoS 0, again and again) comes through
    const pub = await mqtt.connectAsync({ host: '127.0.0.1', port: remote.port, reconnectPeriod: 0, clientId: 'remote-pub' });
    cleanup.push(() => pub.end(true));
    let probed = false;
    local.client.on('message', (t) => void (t === 'q2i/probe' && (probed = true)));
    for (let i = 0; i < 150 && !probed; i++) {
      await pub.publishAsync('q2i/probe', 'p', { qos: 0 });
      await sleep(100);
    }
    expect(probed, 'a probe through the bridge').toBe(true);
    // about 60 a second: each inbound QoS 2 message is stored with its packet id (a commit)
    // before its PUBREC, and MQTT.js takes the next packet after that
    const load = new Qos2Load(pub, 'q2i/x', { n: 0 }, 1, 15);
    let whileDown = 0;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const before = load.completed.size;
      await until(() => load.completed.size > before + 30, 30_000, `load in cycle ${cycle}`);
      await sleep(200 + Math.floor(Math.random() * 1500));
      await edb.stop('SIGKILL');
      const atKill = load.completed.size;
      await sleep(500);
      whileDown += load.completed.size - atKill;
      edb = await startBrokerProcess(env);
    }
    await sleep(1000);
    await load.stop();
    const completed = load.completed;
    await until(() => [...completed].every((k) => local.seen.includes(k)), 60_000, 'every message mosquitto completed, here');
    await sleep(1500); // a late duplicate would come now
    checkExactlyOnce(local.seen, completed);
    expect(whileDown, 'messages mosquitto completed while we were down').toBeGreaterThan(0);
    await edb.stop('SIGTERM');
  }, 170_000);
});
