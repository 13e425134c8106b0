/**
 * A rules document's set_state keys and its uploader's rights in the state store's per-key
 * authorization (docs/security.md#a-rules-document-acts-for-its-uploader): a real broker,
 * admin users written by the real `edb passwd --role`, uploads over HTTP (rules port and
 * /rules), messages from a real MQTT client, the state read back by MQTT 5 state-store clients.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { StateStoreClient } from '../../src/state/client.js';
import { CLI } from '../helpers/process.js';
import { run, waitFor } from './helpers.js';
import { closeAll, connectClient } from '../helpers/mqttjs.js';

const OTTO = 'operator pw!';
const auth = { authorization: `Basic ${Buffer.from(`otto:${OTTO}`).toString('base64')}`, 'content-type': 'application/json' };

async function call(url: string, method: string, body?: unknown): Promise<{ status: number; json: any; etag: string | null }> {
  const res = await fetch(url, { method, headers: auth, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  return { status: res.status, json: await res.json(), etag: res.headers.get('etag') };
}

/**
 * A broker in `dir` with the operator otto (written by the real `edb passwd --role`) and the
 * state store's per-key authorization: otto's `rules`, and everything for the test's own MQTT
 * clients (client ids `admin-*`).
 */
async function startWithKeyRules(dir: string, rules: { username: string; access: string; patterns: string[] }[]): Promise<EdbServer> {
  const users = join(dir, 'admin-users');
  const made = await run(process.execPath, [CLI, 'passwd', users, 'otto', '--role', 'operator', '--password', OTTO], 30_000);
  expect(made.code, made.stderr).toBe(0);
  const authorization = { rules: [...rules, { clientId: 'admin-*', access: 'readwrite', patterns: ['*'] }] };
  return startEdb(testConfig({ httpPort: 0, rulesPort: 0, adminUsersFile: users, dataDir: dir, sections: { stateStore: { authorization } } }), silentLogger());
}

const filter = (topic: string, key: string) => ({
  filters: [{ topic, subtopic: 'alert', statements: [{ condition: '$c > 30', set_state: { key, value: '{{ $c }}' } }] }],
});

describe('set_state keys act for the document\'s uploader', () => {
  let dir: string;
  let server: EdbServer;
  let rulesApi: string;
  let httpApi: string;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edb-rules-state-acl-'));
    // the uploader may write alarms 1 to 5 and its own keys; read everything
    server = await startWithKeyRules(dir, [
      { username: 'otto', access: 'write', patterns: ['alarm/[1-5]', 'own/{username}/*'] },
      { username: 'otto', access: 'read', patterns: ['*'] },
    ]);
    rulesApi = `http://127.0.0.1:${server.port('rules')}`;
    httpApi = `http://127.0.0.1:${server.port('http')}/rules`;
  }, 120_000);
  afterAll(async () => {
    await closeAll(...clients);
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('at upload: a key the uploader may never write gets 403 naming the JSON path and key; the old document stays', async () => {
    const before = await call(rulesApi, 'GET');
    // concrete once the topic's literal level is put in
    const concrete = await call(rulesApi, 'POST', filter('plant/7/temp', 'alarm/{2}'));
    expect(concrete.status).toBe(403);
    expect(concrete.json.error).toMatchObject({ code: 'EDB_RULES_FORBIDDEN', path: 'filters/0/statements/0/set_state/key' });
    expect(concrete.json.error.message).toContain('"alarm/7"');
    // a pattern of which no key is granted, on the main HTTP port
    const never = await call(httpApi, 'POST', filter('plant/+/temp', 'limits/{2}'));
    expect(never.status).toBe(403);
    expect(never.json.error.path).toBe('filters/0/statements/0/set_state/key');
    expect(never.json.error.message).toContain('limits/{2}');
    // a rule logic entry's key, by PATCH
    const logic = await call(rulesApi, 'PATCH', {
      rules: [{ statements: [{ id: 1, topic: 'plant/+/temp', payload_type: 'float', condition: '$c > 30' }], logic: [{ operations: '$1', new_topic: 'hot', set_state: { key: 'own/ada/last', value: '1' } }] }],
    });
    expect(logic.status).toBe(403);
    expect(logic.json.error.path).toBe('rules/0/logic/0/set_state/key');
    expect(logic.json.error.message).toContain('"own/ada/last"');
    expect((await call(rulesApi, 'GET')).etag).toBe(before.etag);
    const metrics = await (await fetch(`http://127.0.0.1:${server.port('http')}/metrics`)).text();
    expect(metrics).toMatch(/^edb_rules_rejected_writes_total 3$/m);
  });

  it('at run time: a concrete key outside the grants is not written, and counted', async () => {
    const up = await call(rulesApi, 'POST', filter('plant/+/temp', 'alarm/{2}'));
    expect(up.status, JSON.stringify(up.json)).toBe(200);
    const store = await StateStoreClient.create(await connectClient(server.port('mqtt'), { clientId: 'admin-store' }).then((c) => (clients.push(c), c)));
    const seen: string[] = [];
    store.on('notification', (n) => seen.push(`${n.key.toString()}=${n.value?.toString() ?? '(deleted)'}`));
    await store.observe('alarm/7');
    await store.observe('alarm/3');
    const pub = await connectClient(server.port('mqtt'), { clientId: 'admin-plant' });
    clients.push(pub);
    // alarm/7 first: writes happen in order, so once alarm/3 is notified alarm/7 would have been too
    await pub.publishAsync('plant/7/temp', '{"c": 41}', { qos: 1 });
    await pub.publishAsync('plant/3/temp', '{"c": 33}', { qos: 1 });
    await waitFor(() => seen.length > 0, 'the alarm/3 notification');
    expect(seen).toEqual(['alarm/3=33']);
    expect((await store.get('alarm/3')).value?.toString()).toBe('33');
    expect((await store.get('alarm/7')).value).toBeUndefined();
    const metrics = await (await fetch(`http://127.0.0.1:${server.port('http')}/metrics`)).text();
    expect(metrics).toMatch(/^edb_rules_denied_state_writes_total 1$/m);
    expect(metrics).toMatch(/^edb_rules_state_writes_total 1$/m);
  }, 120_000); // the first non-empty document compiles with asc
});

describe("state() reads act for the document's uploader", () => {
  let dir: string;
  let server: EdbServer;
  let rulesApi: string;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edb-rules-state-read-'));
    // the uploader may read the limits of lines 1 to 5, nothing else
    server = await startWithKeyRules(dir, [{ username: 'otto', access: 'read', patterns: ['limits/[1-5]'] }]);
    rulesApi = `http://127.0.0.1:${server.port('rules')}`;
  }, 120_000);
  afterAll(async () => {
    await closeAll(...clients);
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('at upload: a key the uploader may never read gets 403 naming the JSON path and key; the old document stays', async () => {
    const before = await call(rulesApi, 'GET');
    const inCondition = await call(rulesApi, 'POST', {
      filters: [{ topic: 'plant/+/temp', subtopic: 'alert', statements: [{ condition: "$c > state('secret/master')" }] }],
    });
    expect(inCondition.status).toBe(403);
    expect(inCondition.json.error).toMatchObject({ code: 'EDB_RULES_FORBIDDEN', path: 'filters/0/statements/0/condition' });
    expect(inCondition.json.error.message).toContain('may not read the state key "secret/master"');
    // in a payload template, with a placeholder under "+": no key of secret/* is readable
    const inTemplate = await call(rulesApi, 'POST', {
      filters: [{ topic: 'plant/+/temp', subtopic: 'alert', statements: [{ condition: '$c > 30', new_payload: { limit: "{{ state('secret/{2}') }}" } }] }],
    });
    expect(inTemplate.status).toBe(403);
    expect(inTemplate.json.error.path).toBe('filters/0/statements/0/new_payload');
    expect(inTemplate.json.error.message).toContain('secret/{2}');
    // a rule statement's condition, made concrete by the statement's own topic
    const inRule = await call(rulesApi, 'POST', {
      rules: [{ statements: [{ id: 1, topic: 'plant/9/temp', payload_type: 'float', condition: "$c > state('limits/{2}')" }], logic: [{ operations: '$1', new_topic: 'hot', new_payload: '' }] }],
    });
    expect(inRule.status).toBe(403);
    expect(inRule.json.error.path).toBe('rules/0/statements/0/condition');
    expect(inRule.json.error.message).toContain('"limits/9"');
    expect((await call(rulesApi, 'GET')).etag).toBe(before.etag);
  });

  it('at run time and in /test: a concrete key outside the grants reads as absent, and is counted', async () => {
    const store = await StateStoreClient.create(await connectClient(server.port('mqtt'), { clientId: 'admin-store' }).then((c) => (clients.push(c), c)));
    await store.set('limits/3', '30');
    await store.set('limits/7', '30');
    const doc = { filters: [{ topic: 'plant/+/temp', subtopic: 'alert', statements: [{ condition: "$c > state('limits/{2}')" }] }] };
    const up = await call(rulesApi, 'POST', doc);
    expect(up.status, JSON.stringify(up.json)).toBe(200);
    const sub = await connectClient(server.port('mqtt'), { clientId: 'admin-sub' });
    clients.push(sub);
    const got: string[] = [];
    sub.on('message', (topic, payload) => got.push(`${topic} ${payload.toString()}`));
    await sub.subscribeAsync('plant/+/temp/alert', { qos: 1 });
    const pub = await connectClient(server.port('mqtt'), { clientId: 'admin-plant' });
    clients.push(pub);
    // line 7 first: outputs keep the order of their messages, so once line 3's is here line 7's would be too
    await pub.publishAsync('plant/7/temp', '{"c": 41}', { qos: 1 });
    await pub.publishAsync('plant/3/temp', '{"c": 33}', { qos: 1 });
    await waitFor(() => got.length > 0, "line 3's alert");
    expect(got).toEqual(['plant/3/temp/alert {"c": 33}']);
    const metrics = await (await fetch(`http://127.0.0.1:${server.port('http')}/metrics`)).text();
    expect(metrics).toMatch(/^edb_rules_denied_state_reads_total 1$/m);
    // a trial by the same user sees the live store through the same rights
    const trial = await call(`${rulesApi}/test`, 'POST', {
      document: doc,
      messages: [
        { topic: 'plant/7/temp', payload: '{"c": 41}', t: 0 },
        { topic: 'plant/3/temp', payload: '{"c": 33}', t: 1 },
      ],
    });
    expect(trial.status, JSON.stringify(trial.json)).toBe(200);
    expect(trial.json.outputs.map((o: { topic: string }) => o.topic)).toEqual(['plant/3/temp/alert']);
  }, 120_000);
});
