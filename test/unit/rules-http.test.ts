// The rules HTTP API over real HTTP (node:http server on port 0), with the service on a
// minimal in-process BrokerApi (hooks captured, publishes recorded) until the broker core
// lands; test/e2e/rules-vectors.test.ts runs the same over real MQTT clients.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';

// compiling runs asc (seconds; much longer on a loaded shared machine)
vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });
import type { BrokerApi } from '../../src/broker/api.js';
import type { BrokerHooks } from '../../src/broker/hooks.js';
import type { Message } from '../../src/mqtt/message.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { RulesCompiler } from '../../src/rules/compiler.js';
import { startRulesHttpServer } from '../../src/rules/http.js';
import { createRulesService, type RulesService } from '../../src/rules/service.js';
import type { Listener } from '../../src/transport/connection.js';
import { Command } from 'commander';
import { register as registerRulesCli } from '../../src/cli/rules.js';

class RecordingBroker {
  hooks: BrokerHooks[] = [];
  published: Message[] = [];
  api(): BrokerApi {
    return {
      addHooks: (h: BrokerHooks) => this.hooks.push(h),
      publish: (m: Message) => {
        this.published.push(m);
        // like the broker: internal publishes go through onPublish too
        for (const h of this.hooks) h.onPublish?.(m, undefined);
      },
    } as unknown as BrokerApi;
  }
  /** A client's PUBLISH: runs the hooks, returns what the rules published (after the microtask that flushes them). */
  async send(topic: string, payload: string, qos: 0 | 1 | 2 = 0, retain = false): Promise<Message[]> {
    const before = this.published.length;
    for (const h of this.hooks) h.onPublish?.({ topic, payload: Buffer.from(payload), qos, retain, senderId: 'c1' }, undefined);
    await null;
    return this.published.slice(before);
  }
}

const house = readFileSync('test/fixtures/house-filters.json', 'utf8');
const mine = readFileSync('test/fixtures/mine-rules.json', 'utf8');
const H1 = '{"h_id":1,"inside":{"temperature":50,"humidity":6},"temperature":8,"wind_speed":34}';
const H2 = '{"h_id":2,"inside":{"temperature":15,"humidity":60},"temperature":8,"wind_speed":34}';

const compiler = new RulesCompiler();
let dataDir: string;
let broker: RecordingBroker;
let service: RulesService;
let listener: Listener;
let base: string;

async function boot(): Promise<void> {
  broker = new RecordingBroker();
  service = createRulesService(broker.api(), testConfig({ dataDir }), silentLogger(), { compiler });
  await service.ready;
  listener = await startRulesHttpServer(service, '127.0.0.1', 0);
  base = `http://127.0.0.1:${listener.port}`;
}
async function shutdown(): Promise<void> {
  await listener.close();
  await service.close();
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'edb-rules-'));
  await boot();
});
afterAll(async () => {
  await shutdown();
  await compiler.close();
  rmSync(dataDir, { recursive: true, force: true });
});

async function call(method: string, body?: string, headers: Record<string, string> = {}, path = '/') {
  const res = await fetch(base + path, { method, body, headers: { 'content-type': 'application/json', ...headers } });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, etag: res.headers.get('etag'), json, text, type: res.headers.get('content-type') };
}

describe('rules HTTP API', () => {
  test('GET on an empty broker: the empty document, both keys present', async () => {
    const r = await call('GET');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ filters: [], rules: [] });
    expect(r.etag).toMatch(/^".+"$/);
  });

  test('POST the house filters; messages produce the spec example', async () => {
    const r = await call('POST', house);
    expect(r.status).toBe(200);
    expect(r.json.filters).toBe(1);
    expect(r.etag).toBe(r.json.etag);
    const out1 = (await broker.send('house/1', H1, 1, true));
    expect(out1.map((m) => [m.topic, m.payload.toString(), m.qos, m.retain, m.origin])).toEqual([['house/1/alert/', 'fire_danger', 1, true, 'rules']]);
    const out2 = (await broker.send('house/2', H2));
    expect(out2.map((m) => [m.topic, m.payload.toString()])).toEqual([['house/2/alert/', H2]]);
    expect((await broker.send('house/3', '{"h_id":3,"inside":{"temperature":22,"humidity":55},"temperature":8}'))).toEqual([]);
    // outputs are not fed back (house/# matches house/1/alert/)
    expect((await broker.send('house/9', '{"temperature":1}')).length).toBe(1);
    const get = await call('GET');
    expect(get.json).toEqual(JSON.parse(house));
    expect(get.etag).toBe(r.etag);
  });

  const bad: [string, string, number, Partial<{ code: string; path: string; position: number }>][] = [
    ['bad JSON', '{"filters": [', 400, { code: 'EDB_RULES_BAD_JSON' }],
    ['unknown key', '{"filter": []}', 422, { code: 'EDB_RULES_SCHEMA', path: 'filter' }],
    ['unknown nested key', '{"filters":[{"topic":"a","subtopic":"b","statements":[{"condition":"$a > 1","new_paylod":""}]}]}', 422, { code: 'EDB_RULES_SCHEMA', path: 'filters/0/statements/0/new_paylod' }],
    ['bad condition with position', '{"filters":[{"topic":"a","subtopic":"b","statements":[{"condition":"$a > 1 and (","new_payload":""}]}]}', 422, { code: 'EDB_RULES_SYNTAX', path: 'filters/0/statements/0/condition', position: 11 }],
    ['unknown name in condition', '{"filters":[{"topic":"a","subtopic":"b","statements":[{"condition":"temp > 1"}]}]}', 422, { code: 'EDB_RULES_SYNTAX', position: 0 }],
    ['unknown statement id', '{"rules":[{"statements":[{"id":1,"topic":"a","payload_type":"int","condition":"$a > 1"}],"logic":[{"operations":"$1 and $7","new_topic":"x","new_payload":""}]}]}', 422, { code: 'EDB_RULES_STATEMENT_ID', path: 'rules/0/logic/0/operations', position: 7 }],
    ['duplicate statement id', '{"rules":[{"statements":[{"id":1,"topic":"a","payload_type":"int","condition":"$a > 1"}],"logic":[]},{"statements":[{"id":1,"topic":"b","payload_type":"int","condition":"$a > 1"}],"logic":[]}]}', 422, { code: 'EDB_RULES_STATEMENT_ID', path: 'rules/1/statements/0/id' }],
    ['invalid topic filter', '{"filters":[{"topic":"a/#/b","subtopic":"x","statements":[]}]}', 422, { code: 'EDB_RULES_TOPIC', path: 'filters/0/topic' }],
    ['wildcard in new_topic', '{"rules":[{"statements":[{"id":1,"topic":"a","payload_type":"int","condition":"$a > 1"}],"logic":[{"operations":"$1","new_topic":"x/+"}]}]}', 422, { code: 'EDB_RULES_TOPIC', path: 'rules/0/logic/0/new_topic' }],
    ['wrong type', '{"rules":[{"statements":[{"id":"1","topic":"a","payload_type":"int","condition":"$a > 1"}],"logic":[]}]}', 422, { code: 'EDB_RULES_SCHEMA', path: 'rules/0/statements/0/id' }],
    ['bad payload_type', '{"rules":[{"statements":[{"id":1,"topic":"a","payload_type":"double","condition":"$a > 1"}],"logic":[]}]}', 422, { code: 'EDB_RULES_SCHEMA', path: 'rules/0/statements/0/payload_type' }],
    ['not an object', '[]', 422, { code: 'EDB_RULES_SCHEMA' }],
  ];
  for (const [name, body, status, error] of bad) {
    test(`refused, old document stays: ${name}`, async () => {
      const before = await call('GET');
      for (const method of ['POST', 'PATCH']) {
        const r = await call(method, body);
        expect(r.status).toBe(status);
        expect(r.json.error).toMatchObject(error);
        expect(r.json.error.message).toContain(r.json.error.problem);
      }
      const after = await call('GET');
      expect(after.etag).toBe(before.etag);
      expect((await broker.send('house/1', H1)).map((m) => m.payload.toString())).toEqual(['fire_danger']);
    });
  }

  test('If-Match: stale is 412 and changes nothing; current succeeds', async () => {
    const { etag } = await call('GET');
    const stale = await call('POST', mine, { 'if-match': '"nope"' });
    expect(stale.status).toBe(412);
    expect(stale.json.error.code).toBe('EDB_RULES_STALE');
    expect((await call('GET')).etag).toBe(etag);
    const ok = await call('PATCH', mine, { 'if-match': etag! });
    expect(ok.status).toBe(200);
    expect(ok.etag).not.toBe(etag);
    const doc = (await call('GET')).json;
    expect(doc.filters.length).toBe(1);
    expect(doc.rules.length).toBe(3);
  });

  test('PATCH keeps buffered messages of statements it does not replace', async () => {
    expect((await broker.send('miner/1', '{"m_id":1,"body-temperature":36.6,"heart-rate":105}'))).toEqual([]);
    // replace rule "dead" ($5): $1's buffered miner/1 message must survive
    const patch = JSON.stringify({ rules: [{ statements: [{ id: 5, topic: 'miner/#', payload_type: 'float', condition: '$heart-rate < 0' }], logic: [{ operations: '$5', new_topic: 'action/dead' }] }] });
    expect((await call('PATCH', patch)).status).toBe(200);
    const out = (await broker.send('mine/environment', '{"temperature":35,"humidity":90}'));
    expect(out.map((m) => m.topic)).toEqual(['!action/rest']); // $3 (body-temperature > 38) is false
    expect(JSON.parse(out[0]!.payload.toString())).toEqual({ 'miner/1': { m_id: 1, 'body-temperature': 36.6, 'heart-rate': 105 }, 'mine/environment': { temperature: 35, humidity: 90 } });
    expect((await call('GET')).json.rules.length).toBe(3);
  });

  test('POST empties the buffer', async () => {
    expect((await broker.send('miner/1', '{"m_id":1,"body-temperature":36.6,"heart-rate":105}'))).toEqual([]);
    expect((await call('POST', mine)).status).toBe(200);
    expect((await broker.send('mine/environment', '{"temperature":35,"humidity":90}'))).toEqual([]);
  });

  test('a restart keeps the document', async () => {
    const { etag, json } = await call('GET');
    await shutdown();
    await boot();
    const after = await call('GET');
    expect(after.etag).toBe(etag);
    expect(after.json).toEqual(json);
    (await broker.send('miner/1', '{"m_id":1,"body-temperature":36.6,"heart-rate":0}'));
    expect(service.metrics().fires).toBe(1);
  });

  test('DELETE: the empty document, nothing fires', async () => {
    const r = await call('DELETE');
    expect(r.status).toBe(200);
    expect((await call('GET')).json).toEqual({ filters: [], rules: [] });
    expect((await broker.send('house/1', H1))).toEqual([]);
  });

  test('OpenAPI and Swagger UI are served locally', async () => {
    const api = await call('GET', undefined, {}, '/openapi.json');
    expect(api.status).toBe(200);
    expect(api.json.openapi).toMatch(/^3\./);
    expect(Object.keys(api.json.paths['/'])).toEqual(['get', 'post', 'patch', 'delete']);
    expect(Object.keys(api.json.paths)).toEqual(['/', '/test', '/source']);
    // POST /test with its request and answer; OpenAPI 3.0 has no type lists (templates are oneOf string/object)
    expect(Object.keys(api.json.paths['/test'])).toEqual(['post']);
    expect(api.json.components.schemas.TestRequest.required).toEqual(['messages']);
    expect(JSON.stringify(api.json.components.schemas.Document)).not.toContain('"type":["string","object"]');
    expect(api.json.components.schemas.Document.properties.filters.items.properties.statements.items.properties.new_payload.oneOf).toEqual([{ type: 'string' }, { type: 'object' }]);
    const docs = await call('GET', undefined, {}, '/docs');
    expect(docs.type).toContain('text/html');
    expect(docs.text).toContain('/docs/swagger-ui-bundle.js');
    expect(docs.text).not.toMatch(/https?:\/\//);
    const css = await call('GET', undefined, {}, '/docs/swagger-ui.css');
    expect(css.status).toBe(200);
    expect(css.type).toContain('text/css');
    expect((await call('GET', undefined, {}, '/docs/../package.json')).status).toBe(404);
    expect((await call('GET', undefined, {}, '/source')).text).toBe(''); // the empty document has no program
    await call('POST', house);
    const source = await call('GET', undefined, {}, '/source');
    expect(source.text.startsWith('// GENERATED')).toBe(true);
    expect(source.text).toContain('filters/0 (2 statements)  house/#');
  });

  test('CLI: edb rules set / get / delete against the server', async () => {
    const run = async (...args: string[]): Promise<{ out: string; err: string; code: number }> => {
      const program = new Command().exitOverride();
      registerRulesCli(program);
      let out = '';
      let err = '';
      const o = vi.spyOn(process.stdout, 'write').mockImplementation((c) => ((out += String(c)), true));
      const e = vi.spyOn(process.stderr, 'write').mockImplementation((c) => ((err += String(c)), true));
      process.exitCode = 0;
      try {
        await program.parseAsync(['node', 'edb', 'rules', '--url', base, ...args]);
      } finally {
        o.mockRestore();
        e.mockRestore();
      }
      const code = Number(process.exitCode ?? 0);
      process.exitCode = 0;
      return { out, err, code };
    };
    const set = await run('set', 'test/fixtures/mine-rules.json');
    expect(set.code).toBe(0);
    expect(JSON.parse(set.out).rules).toBe(3);
    const get = await run('get');
    expect(JSON.parse(get.out)).toEqual(JSON.parse(mine));
    const bad = await run('--if-match', '"stale"', 'delete');
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('412');
    expect((await run('delete')).code).toBe(0);
    expect(JSON.parse((await run('get')).out)).toEqual({ filters: [], rules: [] });
  });

  test('metrics count what happened', async () => {
    const m = service.metrics();
    expect(m.compiles).toBeGreaterThan(0);
    expect(m.wasmBytes).toBeGreaterThan(1000);
    expect(m.rejectedWrites).toBe(1); // per service instance (restarted above): the CLI's stale delete
  });
});
