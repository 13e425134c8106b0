/**
 * Rules see bridged-in messages like any others: an `edb start` process bridges `house/#` and
 * `miner/#`, `mine/#` in from mosquitto (nothing publishes those topics here), a rules
 * document is uploaded over HTTP, and a real client subscribed here gets the outputs of a
 * filter and of a rule whose statements are satisfied only by messages that came over the bridge.
 * A message published here on the same topics is not bridged back out ("in" only).
 * And a bad bridge setting stops `edb start` with exit code 2 and one line naming it.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/broker.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { CLI, startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const HOUSE = readFileSync(new URL('../fixtures/house-filters.json', import.meta.url), 'utf8');
const MINE = readFileSync(new URL('../fixtures/mine-rules.json', import.meta.url), 'utf8');

describe('rules on messages that came in over a bridge', () => {
  let remote: Mosquitto;
  let edb: BrokerProcess;
  const clients: MqttClient[] = [];
  afterAll(async () => {
    for (const c of clients) c.end(true);
    await edb?.stop('SIGTERM');
    await remote?.stop();
  });

  it('a filter and a rule fire on bridged-in messages; a local client gets the outputs', async () => {
    remote = await startMosquitto();
    edb = await startBrokerProcess(
      {
        EDB_RULES_PORT: '0',
        EDB_BRIDGE_CLOUD: `127.0.0.1:${remote.port}`,
        EDB_BRIDGE_CLOUD_TOPIC_1: 'house/# in 1',
        EDB_BRIDGE_CLOUD_TOPIC_2: 'miner/# in 1',
        EDB_BRIDGE_CLOUD_TOPIC_3: 'mine/# in 1',
        EDB_BRIDGE_CLOUD_RECONNECT_MIN: '100ms',
      },
      ['mqtt', 'rules'],
      120_000,
    );
    const rulesUrl = `http://127.0.0.1:${edb.ports['rules']}/`;
    const local = await mqtt.connectAsync({ port: edb.ports['mqtt']!, host: '127.0.0.1', reconnectPeriod: 0 });
    clients.push(local);
    const got: [string, string][] = [];
    local.on('message', (t, p) => got.push([t, p.toString()]));
    await local.subscribeAsync(['house/+/alert/', '!action/#'], { qos: 1 });
    const cloud = await mqtt.connectAsync({ port: remote.port, host: '127.0.0.1', reconnectPeriod: 0 });
    clients.push(cloud);
    const cloudGot: string[] = [];
    cloud.on('message', (t) => cloudGot.push(t));
    await cloud.subscribeAsync('#', { qos: 1 });
    await until(() => edb.logs.some((l) => l['msg'] === 'bridge cloud: connected'), 15_000, 'the bridge connected');

    // a filter document: house/<n> -> house/<n>/alert/
    const up = await fetch(rulesUrl, { method: 'POST', body: HOUSE, headers: { 'content-type': 'application/json' } });
    expect(up.status, await up.clone().text()).toBe(200);
    // the bridge's subscription is in place once a message comes through: send until one does
    await until(() => edb.logs.some((l) => l['msg'] === 'rules document active'), 60_000, 'the document active');
    await cloud.publishAsync('house/1', '{"inside":{"temperature":50,"humidity":6},"temperature":8}', { qos: 1 });
    await until(() => got.length > 0, 15_000, 'the filter output from a bridged-in message');
    expect(got).toEqual([['house/1/alert/', 'fire_danger']]);

    // a rule document: both statements satisfied only by bridged-in messages
    got.length = 0;
    const up2 = await fetch(rulesUrl, { method: 'POST', body: MINE, headers: { 'content-type': 'application/json' } });
    expect(up2.status, await up2.clone().text()).toBe(200);
    await until(() => edb.logs.filter((l) => l['msg'] === 'rules document active').length >= 2, 60_000, 'the second document active');
    await cloud.publishAsync('miner/1', '{"m_id":1, "body-temperature": 36.6, "heart-rate": 105}', { qos: 1 });
    await cloud.publishAsync('mine/environment', '{"temperature": 35, "humidity": 90}', { qos: 1 });
    await until(() => got.length > 0, 15_000, 'the rule output from bridged-in messages');
    expect(got.map(([t]) => t)).toEqual(['!action/rest']);
    expect(JSON.parse(got[0]![1])).toEqual({ 'miner/1': { m_id: 1, 'body-temperature': 36.6, 'heart-rate': 105 }, 'mine/environment': { temperature: 35, humidity: 90 } });
    // "in" only: neither the outputs nor the bridged-in messages went back to the remote
    await new Promise((r) => setTimeout(r, 300));
    expect(cloudGot.sort()).toEqual(['house/1', 'mine/environment', 'miner/1']);
  }, 240_000);
});

describe('a bad bridge setting stops `edb start`', () => {
  it('exit code 2 and one line naming the variable, the bridge and the field', async () => {
    const run = async (env: Record<string, string>) => {
      const child = spawn(process.execPath, [CLI, 'start'], { env: { ...process.env, EDB_MQTT_PORT: '0', EDB_MQTTS_PORT: '-1', EDB_WS_PORT: '-1', EDB_WSS_PORT: '-1', EDB_HTTP_PORT: '-1', EDB_RULES_PORT: '-1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const [code] = (await once(child, 'exit')) as [number | null];
      clearTimeout(timer);
      return { code, stderr };
    };
    const typo = await run({ EDB_BRIDGE_BR0: '127.0.0.1:1883', EDB_BRIDGE_BR0_MAX_OUTGOING_BUFERED_MESSAGES: '10' });
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/EDB_BRIDGE_BR0_MAX_OUTGOING_BUFERED_MESSAGES: bridge br0: unknown field MAX_OUTGOING_BUFERED_MESSAGES; did you mean MAX_OUTGOING_BUFFERED_MESSAGES\?/);
    const bad = await run({ EDB_BRIDGE_BR0: '127.0.0.1:1883', EDB_BRIDGE_BR0_KEEP_ALIVE: '0' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/bridge br0: keepAlive: 0: at least 1/);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
  }, 90_000);
});
