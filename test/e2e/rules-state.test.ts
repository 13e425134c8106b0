// fr-script-state.md end to end: the spec's example uploaded over HTTP, the limit set and
// the alarm watched through the state store protocol (MQTT v5), messages from a real MQTT
// client, outputs received by another; the same through POST /test (and every vector of
// fr-script.md through /test); bad uploads of each new kind get a 4xx and keep the old document.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, test, vi } from 'vitest';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { startEdb, type EdbServer } from '../../src/server.js';
import { StateStoreClient } from '../../src/state/client.js';
import { vectors } from '../helpers/vectors.js';

vi.setConfig({ testTimeout: 240_000, hookTimeout: 240_000 });

const EXAMPLE = readFileSync('test/fixtures/state-example.json', 'utf8');
const servers: EdbServer[] = [];
const clients: MqttClient[] = [];
afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
  for (const s of servers) await s.stop();
});

async function start(overrides: Parameters<typeof testConfig>[0] = {}): Promise<EdbServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'edb-rules-state-'));
  const server = await startEdb(testConfig({ host: '127.0.0.1', rulesPort: 0, httpPort: 0, shutdownTimeoutMs: 500, dataDir, ...overrides }), silentLogger());
  servers.push(server);
  return server;
}

async function connect(server: EdbServer, id: string): Promise<MqttClient> {
  const client = await mqtt.connectAsync({ host: '127.0.0.1', port: server.port('mqtt'), clientId: id, protocolVersion: 5, reconnectPeriod: 0 });
  clients.push(client);
  return client;
}

async function call(url: string, method: string, body?: unknown): Promise<{ status: number; json: any; etag: string | null }> {
  const res = await fetch(url, { method, ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }), headers: { 'content-type': 'application/json' } });
  return { status: res.status, json: await res.json(), etag: res.headers.get('etag') };
}

const until = async (check: () => boolean, what: string, ms = 10_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('the fr-script-state example over HTTP and MQTT', () => {
  let server: EdbServer;
  let api: string;

  test('alert once after the third message with the limit from the state store; alarm/3 written with a KEYNOTIFY', async () => {
    server = await start();
    api = `http://127.0.0.1:${server.port('rules')}`;
    const up = await call(`${api}/`, 'POST', EXAMPLE);
    expect(up.status).toBe(200);

    const admin = await StateStoreClient.create(await connect(server, 'state-admin'));
    expect((await admin.set('limits/3', '30')).applied).toBe(true);
    const watcher = await StateStoreClient.create(await connect(server, 'state-watcher'));
    const notified: string[] = [];
    watcher.on('notification', (n) => notified.push(`${n.key.toString()}=${n.value?.toString() ?? '(deleted)'}`));
    await watcher.observe('alarm/3');

    const sub = await connect(server, 'alert-sub');
    const got: { after: number; topic: string; payload: string }[] = [];
    let current = -1;
    sub.on('message', (topic, payload) => got.push({ after: current, topic, payload: payload.toString() }));
    await sub.subscribeAsync('plant/+/temp/alert', { qos: 1 });
    const pub = await connect(server, 'plant-3');
    const values = [29, 31, 33, 34];
    for (let i = 0; i < values.length; i++) {
      current = i;
      await pub.publishAsync('plant/3/temp', JSON.stringify({ c: values[i] }), { qos: 1 });
      if (i === 2) await until(() => got.length === 1 && notified.length === 1, 'the alert and the KEYNOTIFY');
      await new Promise((r) => setTimeout(r, 150)); // time for anything unexpected
    }
    expect(got).toEqual([{ after: 2, topic: 'plant/3/temp/alert', payload: '{"line":"3","avg10m":31,"now":33}' }]);
    expect(JSON.parse(got[0]!.payload)).toEqual({ line: '3', avg10m: 31, now: 33 });
    expect(notified).toEqual(['alarm/3=33']);
    const alarm = await admin.get('alarm/3');
    expect(alarm.value?.toString()).toBe('33');
    expect(alarm.version).toBeDefined();

    const metrics = await (await fetch(`http://127.0.0.1:${server.port('http')}/metrics`)).text();
    expect(metrics).toMatch(/^edb_rules_memory_topics 1$/m);
    expect(metrics).toMatch(/^edb_rules_state_writes_total 1$/m);
    expect(metrics).toMatch(/^edb_rules_part_evaluations_total\{part="filters\/0",topic="plant\/\+\/temp"\} 4$/m);
    expect(metrics).toMatch(/^edb_rules_part_fires_total\{part="filters\/0",topic="plant\/\+\/temp"\} 1$/m);
  });

  test('POST /test gives the same, one minute apart, without touching the live store or memory', async () => {
    const messages = [29, 31, 33, 34].map((c, i) => ({ topic: 'plant/3/temp', payload: { c }, t: i * 60_000 }));
    const before = await (await fetch(`http://127.0.0.1:${server.port('http')}/metrics`)).text();
    // state() reads the live store (limits/3 = 30) when the request gives none
    const live = await call(`${api}/test`, 'POST', { messages });
    expect(live.status).toBe(200);
    const expected = [
      { after: 2, topic: 'plant/3/temp/alert', payload: '{"line":"3","avg10m":31,"now":33}' },
      { after: 2, set_state: { key: 'alarm/3', value: '33' } },
    ];
    expect(live.json).toEqual({ outputs: expected });
    // the given state instead; deterministic: twice the same answer, on the main HTTP port too
    const given = { document: JSON.parse(EXAMPLE), messages, state: { 'limits/3': 30 } };
    const a = await call(`${api}/test`, 'POST', given);
    const b = await call(`http://127.0.0.1:${server.port('http')}/rules/test`, 'POST', given);
    expect(a.json).toEqual({ outputs: expected });
    expect(b.json).toEqual(a.json);
    // with a limit of 40 nothing fires; with windows, time matters: 20 minutes apart, count stays 1
    expect((await call(`${api}/test`, 'POST', { ...given, state: { 'limits/3': 40 } })).json).toEqual({ outputs: [] });
    expect((await call(`${api}/test`, 'POST', { ...given, messages: messages.map((m, i) => ({ ...m, t: i * 1_200_000 })) })).json).toEqual({ outputs: [] });
    // nothing live changed: the store still has alarm/3 = 33 from the MQTT run, the memory the same topics
    const after = await (await fetch(`http://127.0.0.1:${server.port('http')}/metrics`)).text();
    const line = (text: string, name: string): string | undefined => text.split('\n').find((l) => l.startsWith(`${name} `));
    for (const name of ['edb_rules_memory_topics', 'edb_rules_state_writes_total', 'edb_rules_evaluations_total', 'edb_rules_messages_total']) expect(line(after, name)).toBe(line(before, name));
    // errors: the same as an upload, under document/
    const bad = await call(`${api}/test`, 'POST', { document: { filters: [{ topic: 'a', subtopic: 'b', statements: [{ condition: 'avg($x) > 1' }] }] }, messages: [] });
    expect(bad.status).toBe(422);
    expect(bad.json.error).toMatchObject({ code: 'EDB_RULES_SYNTAX', path: 'document/filters/0/statements/0/condition', position: 0 });
    const badMessage = await call(`${api}/test`, 'POST', { messages: [{ topic: 'a/#', payload: '{}' }] });
    expect(badMessage.status).toBe(422);
    expect(badMessage.json.error.path).toBe('messages/0/topic');
    expect((await call(`${api}/test`, 'GET')).status).toBe(405);
  });

  test('every vector of fr-script.md through /test', async () => {
    for (const v of vectors) {
      const doc = JSON.parse(readFileSync(`test/fixtures/${v.document}`, 'utf8'));
      const r = await call(`${api}/test`, 'POST', { document: doc, messages: v.input.map(([topic, payload]) => ({ topic, payload })) });
      expect(r.status).toBe(200);
      const outputs = r.json.outputs as { after: number; topic: string; payload: string }[];
      expect(outputs.map((o) => [o.after, o.topic])).toEqual(v.output.map((o) => [o.after, o.topic]));
      v.output.forEach((o, i) => {
        if (o.json !== undefined) expect(JSON.parse(outputs[i]!.payload)).toEqual(o.json);
        else expect(outputs[i]!.payload).toBe(o.payload);
      });
    }
  });

  test('bad uploads of each new kind: 422 with path and position, the old document stays active', async () => {
    const { etag } = await call(`${api}/`, 'GET');
    const cases: [unknown, string, number | undefined][] = [
      [{ condition: 'frobnicate($c) > 1', new_payload: 'x' }, 'filters/0/statements/0/condition', 0],
      [{ condition: 'avg($c) > 1', new_payload: 'x' }, 'filters/0/statements/0/condition', 0],
      [{ condition: "avg($c, '10q') > 1", new_payload: 'x' }, 'filters/0/statements/0/condition', 8],
      [{ condition: 'count(0) > 1', new_payload: 'x' }, 'filters/0/statements/0/condition', 6],
      [{ condition: 'state($k) == 1', new_payload: 'x' }, 'filters/0/statements/0/condition', 6],
      [{ condition: 'true', new_payload: 'x {{ $c ' }, 'filters/0/statements/0/new_payload', 2],
      [{ condition: 'true', new_payload: { a: '{{ deadband($c) }}' } }, 'filters/0/statements/0/new_payload/a', 3],
      [{ condition: 'true', set_state: { key: 'k/{x}', value: '1' } }, 'filters/0/statements/0/set_state/key', 0],
      [{ condition: 'true', set_state: { key: 'k', value: '1', px: -5 } }, 'filters/0/statements/0/set_state/px', undefined],
    ];
    for (const [statement, path, position] of cases) {
      const r = await call(`${api}/`, 'POST', { filters: [{ topic: 'plant/+/temp', subtopic: 'x', statements: [statement] }] });
      expect(r.status).toBe(422);
      expect(r.json.error.path).toBe(path);
      if (position !== undefined) expect(r.json.error.position).toBe(position);
    }
    const logic = await call(`${api}/`, 'PATCH', { rules: [{ statements: [{ id: 9, topic: 'a', payload_type: 'int', condition: '$x > 1' }], logic: [{ operations: '$9', new_topic: 'o', new_payload: '{{ avg($x, 3) }}' }] }] });
    expect(logic.status).toBe(422);
    expect(logic.json.error).toMatchObject({ path: 'rules/0/logic/0/new_payload', position: 3 });
    const now = await call(`${api}/`, 'GET');
    expect(now.etag).toBe(etag);
    expect(now.json.filters[0].statements[0].set_state.key).toBe('alarm/{2}');
  });

  test('PATCH keeps the memory of unchanged statements; POST clears it', async () => {
    // the example's statement holds plant/3's window (4 messages) and deadband reference (33)
    const patched = await call(`${api}/`, 'PATCH', { filters: [{ topic: 'other/#', subtopic: 'o', statements: [{ condition: 'prev($v) == 1' }] }] });
    expect(patched.status).toBe(200);
    const sub = await connect(server, 'alert-sub-2');
    const got: string[] = [];
    sub.on('message', (_t, p) => got.push(p.toString()));
    await sub.subscribeAsync('plant/+/temp/alert', { qos: 1 });
    const pub = await connect(server, 'plant-3b');
    // 36 is 3 away from the reference 33 and the window still has 3+ messages: fires at once
    await pub.publishAsync('plant/3/temp', '{"c":36}', { qos: 1 });
    await until(() => got.length === 1, 'the alert after PATCH');
    expect(JSON.parse(got[0]!)).toMatchObject({ line: '3', now: 36 });
    // after POST the same document starts from nothing: count('10m') is 1 again
    expect((await call(`${api}/`, 'POST', EXAMPLE)).status).toBe(200);
    await pub.publishAsync('plant/3/temp', '{"c":50}', { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    expect(got.length).toBe(1);
  });
});

// The inline examples of fr-script-state.md (a string template, an object template, a
// state() key with a placeholder, a set_state with px and no new_payload) over MQTT, and the
// same document through POST /test.
describe('the inline examples of fr-script-state.md', () => {
  const DOC = {
    filters: [
      { topic: 'house/+/temp', subtopic: 'hot', statements: [{ condition: "$temperature > state('limits/{2}/max')", new_payload: 'hot: {{ $temperature }} C in {{ topic(2) }}' }] },
      { topic: 'house/+/temp', subtopic: 'summary', statements: [{ condition: 'true', new_payload: { house: '{{ topic(2) }}', avg5m: "{{ avg($temperature, '5m') }}", unit: 'C' } }] },
      { topic: 'house/+/temp', subtopic: 'last', statements: [{ condition: 'true', set_state: { key: 'last/{topic}', value: '{{ $temperature }}', px: 600000 } }] },
    ],
  };
  const expected = [
    { after: 0, topic: 'house/1/temp/summary', payload: '{"house":"1","avg5m":21.5,"unit":"C"}' },
    { after: 1, topic: 'house/1/temp/hot', payload: 'hot: 31 C in 1' },
    { after: 1, topic: 'house/1/temp/summary', payload: '{"house":"1","avg5m":26.25,"unit":"C"}' },
  ];

  test('over MQTT: the templates published, last/house/1/temp written, nothing published for the write-only statement', async () => {
    const server = await start();
    const api = `http://127.0.0.1:${server.port('rules')}`;
    expect((await call(`${api}/`, 'POST', DOC)).status).toBe(200);
    const admin = await StateStoreClient.create(await connect(server, 'inline-admin'));
    expect((await admin.set('limits/1/max', '30')).applied).toBe(true);
    const sub = await connect(server, 'inline-sub');
    const got: { after: number; topic: string; payload: string }[] = [];
    let current = -1;
    sub.on('message', (topic, payload) => got.push({ after: current, topic, payload: payload.toString() }));
    await sub.subscribeAsync('house/+/temp/+', { qos: 1 });
    const pub = await connect(server, 'inline-pub');
    for (const [i, temperature] of [21.5, 31].entries()) {
      current = i;
      await pub.publishAsync('house/1/temp', JSON.stringify({ temperature }), { qos: 1 });
      await until(() => got.length === (i === 0 ? 1 : 3), `the outputs of message ${i}`);
      await new Promise((r) => setTimeout(r, 150)); // time for anything unexpected
    }
    expect(got).toEqual(expected);
    expect((await admin.get('last/house/1/temp')).value?.toString()).toBe('31');
    // px: 600000 gave the key an expiry ten minutes after the write (read through the console API)
    const written = Date.now();
    const key = (await (await fetch(`http://127.0.0.1:${server.port('http')}/api/state/key?key=last/house/1/temp`)).json()) as { expiresAt: number };
    expect(key.expiresAt).toBeGreaterThan(written + 600_000 - 60_000);
    expect(key.expiresAt).toBeLessThanOrEqual(written + 600_000);

    // the same through /test, with the limit given
    const messages = [21.5, 31].map((temperature, i) => ({ topic: 'house/1/temp', payload: { temperature }, t: i * 1000 }));
    const r = await call(`${api}/test`, 'POST', { document: DOC, messages, state: { 'limits/1/max': 30 } });
    expect(r.status).toBe(200);
    const outputs = r.json.outputs as { after: number; topic?: string; payload?: string; set_state?: { key: string; value: string } }[];
    expect(outputs.filter((o) => o.topic !== undefined)).toEqual(expected);
    expect(outputs.filter((o) => o.set_state !== undefined).map((o) => [o.after, o.set_state!.key, o.set_state!.value])).toEqual([
      [0, 'last/house/1/temp', '21.5'],
      [1, 'last/house/1/temp', '31'],
    ]);
  });
});

// A set_state write the state store refuses (here its key quota) is dropped and counted, and
// the statement's other outputs still go out.
describe('a set_state write refused by the state store', () => {
  test('past EDB_STATE_MAX_KEYS: not written, counted in edb_rules_state_write_errors_total', async () => {
    const server = await start({ stateMaxKeys: 1 });
    const doc = { filters: [{ topic: 'line/+/count', subtopic: 'seen', statements: [{ condition: 'true', new_payload: '{{ topic(2) }}', set_state: { key: 'count/{2}', value: '{{ $n }}' } }] }] };
    expect((await call(`http://127.0.0.1:${server.port('rules')}/`, 'POST', doc)).status).toBe(200);
    const sub = await connect(server, 'quota-sub');
    const got: string[] = [];
    sub.on('message', (_topic, payload) => got.push(payload.toString()));
    await sub.subscribeAsync('line/+/count/seen', { qos: 1 });
    const pub = await connect(server, 'quota-pub');
    await pub.publishAsync('line/1/count', '{"n": 5}', { qos: 1 });
    await pub.publishAsync('line/2/count', '{"n": 7}', { qos: 1 });
    await until(() => got.length === 2, 'both outputs');
    expect(got).toEqual(['1', '2']);
    const admin = await StateStoreClient.create(await connect(server, 'quota-admin'));
    expect((await admin.get('count/1')).value?.toString()).toBe('5');
    expect((await admin.get('count/2')).value).toBeUndefined();
    const metrics = await (await fetch(`http://127.0.0.1:${server.port('http')}/metrics`)).text();
    expect(metrics).toMatch(/^edb_rules_state_writes_total 1$/m);
    expect(metrics).toMatch(/^edb_rules_state_write_errors_total 1$/m);
  });
});

// The bounds of the memory are settings with metrics: a broker started with 2 topics per
// statement and 2 exact samples per window forgets and merges, and says so on /metrics.
describe('memory bounds as settings, with their metrics', () => {
  test('EDB_RULES_MEMORY_TOPICS=2 and EDB_RULES_WINDOW_SAMPLES=2: topics forgotten, samples merged, condition errors per filter', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-rules-bounds-'));
    const server = await startEdb(testConfig({ host: '127.0.0.1', rulesPort: 0, httpPort: 0, shutdownTimeoutMs: 500, dataDir, rulesMemoryTopics: 2, rulesWindowSamples: 2 }), silentLogger());
    servers.push(server);
    const api = `http://127.0.0.1:${server.port('rules')}`;
    expect((await call(`${api}/`, 'POST', { filters: [{ topic: 'm/+', subtopic: 'o', statements: [{ condition: 'avg($v, 10) > 0 and $v > 0', new_payload: 'x' }] }] })).status).toBe(200);
    const sub = await connect(server, 'bounds-sub');
    let outputs = 0;
    sub.on('message', () => outputs++);
    await sub.subscribeAsync('m/+/o', { qos: 1 });
    const pub = await connect(server, 'bounds-pub');
    // m/3 makes the statement forget m/1, m/1 again forgets m/2; then m/1's window of 2 exact
    // samples merges one per message; the last has no $v: unknown (a condition error)
    const sent: [string, string][] = [['m/1', '{"v":1}'], ['m/2', '{"v":1}'], ['m/3', '{"v":1}'], ['m/1', '{"v":2}'], ['m/1', '{"v":3}'], ['m/1', '{"v":4}'], ['m/1', '{"w":1}']];
    for (const [topic, body] of sent) await pub.publishAsync(topic, body, { qos: 1 });
    await until(() => outputs === 6, 'six outputs');
    const metrics = await (await fetch(`http://127.0.0.1:${server.port('http')}/metrics`)).text();
    expect(metrics).toMatch(/^edb_rules_memory_topics 2$/m);
    expect(metrics).toMatch(/^edb_rules_memory_evicted_total 2$/m);
    expect(metrics).toMatch(/^edb_rules_window_samples_merged_total 2$/m);
    expect(metrics).toMatch(/^edb_rules_part_evaluations_total\{part="filters\/0",topic="m\/\+"\} 7$/m);
    expect(metrics).toMatch(/^edb_rules_part_fires_total\{part="filters\/0",topic="m\/\+"\} 6$/m);
    expect(metrics).toMatch(/^edb_rules_part_condition_errors_total\{part="filters\/0",topic="m\/\+"\} 1$/m);
  });
});
