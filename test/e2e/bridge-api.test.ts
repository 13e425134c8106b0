/**
 * Bridges at run time: the admin API (GET/POST/PUT/DELETE /api/bridges[/NAME] and its OpenAPI
 * document), metrics, the status section, `edb bridge show`, and SIGHUP re-reading the
 * config file's bridges in a real `edb start` process.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { CLI, startBrokerProcess } from '../helpers/process.js';

const run = promisify(execFile);

describe('bridges through the admin API', () => {
  let remote: TestBroker;
  let edge: TestBroker;
  let base: string;
  beforeAll(async () => {
    remote = await startBroker();
    edge = await startBroker({ httpPort: 0, storage: 'durable' });
    base = `http://127.0.0.1:${edge.server.port('http')}`;
  });
  afterAll(async () => {
    await edge.stop();
    await remote.stop();
  });
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${base}${path}`, { method, ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}) });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown> & Record<string, unknown>[]) : undefined };
  };

  it('adds, shows, changes (keeping the backlog) and removes a bridge without touching another', async () => {
    expect((await api('GET', '/api/bridges')).body).toEqual([]);
    const added = await api('POST', '/api/bridges', { name: 'cloud', url: remote.url, topics: ['up/# out 1'], reconnectMin: '100ms', reconnectMax: '1s', username: 'u', password: 'secret' });
    expect(added.status).toBe(201);
    expect(added.body).toMatchObject({ name: 'cloud', endpoint: remote.url, source: 'api', topics: ['up/# out 1'] });
    expect(JSON.stringify(added.body)).not.toContain('secret');
    expect((await api('POST', '/api/bridges', { name: 'other', url: `mqtt://127.0.0.1:1`, topics: ['x/# out 1'], reconnectMin: '1s' })).status).toBe(201);
    await until(() => edge.server.bridges.get('cloud')?.state === 'connected', 15_000, 'cloud connected');
    expect((await api('POST', '/api/bridges', { name: 'cloud', url: remote.url })).status).toBe(409);
    const bad = await api('POST', '/api/bridges', { name: 'bad', url: remote.url, topics: ['a in 7'] });
    expect(bad.status).toBe(400);
    expect(bad.body!['message']).toMatch(/^bridge bad: topics\[0\]: "a in 7": qos "7"/);

    // a backlog on "other" (its remote does not exist), then an edit: the backlog stays
    const pub = await mqtt.connectAsync(edge.url, { reconnectPeriod: 0 });
    for (let i = 0; i < 5; i++) await pub.publishAsync(`x/${i}`, String(i), { qos: 1 });
    expect(edge.server.bridges.get('other')!.backlog.size).toBe(5);
    const otherConnects = edge.server.bridges.get('cloud')!.counters.connects;
    const changed = await api('PUT', '/api/bridges/other', { url: `mqtt://127.0.0.1:2`, topics: ['x/# out 1', 'y/# out 1'], reconnectMin: '1s' });
    expect(changed.status).toBe(200);
    expect(changed.body).toMatchObject({ name: 'other', endpoint: 'mqtt://127.0.0.1:2', backlogMessages: 5, topics: ['x/# out 1', 'y/# out 1'] });
    expect(edge.server.bridges.get('cloud')!.counters.connects).toBe(otherConnects); // the other bridge was not touched

    const one = await api('GET', '/api/bridges/other');
    expect(one.body).toMatchObject({ name: 'other', state: expect.stringMatching(/connecting|disconnected/), bufferSize: 5, bufferMax: 1_000_000, bufferDropped: 0 });
    expect((await api('DELETE', '/api/bridges/other')).status).toBe(204);
    expect((await api('GET', '/api/bridges/other')).status).toBe(404);
    expect((await api('DELETE', '/api/bridges/other')).status).toBe(404);
    pub.end(true);

    // the password is kept when an edit leaves it out
    const kept = await api('PUT', '/api/bridges/cloud', { url: remote.url, topics: ['up/# out 1'], reconnectMin: '100ms', reconnectMax: '1s', username: 'u' });
    expect(kept.status).toBe(200);
    expect(edge.server.bridges.get('cloud')!.config.password).toBe('secret');
  });

  it('has an OpenAPI document, metrics, a status section and `edb bridge show`', async () => {
    const doc = (await api('GET', '/api/openapi.json')).body as unknown as { openapi: string; paths: Record<string, Record<string, unknown>> };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths['/api/bridges']!)).toEqual(['get', 'post']);
    expect(Object.keys(doc.paths['/api/bridges/{name}']!).filter((k) => k !== 'parameters')).toEqual(['get', 'put', 'delete']);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/edb_bridge_up\{bridge="cloud"\} 1/);
    expect(metrics).toMatch(/edb_bridge_dropped_total\{bridge="cloud",reason="buffer_full"\} 0/);
    expect(metrics).toMatch(/edb_bridge_backlog_messages\{bridge="cloud"\} 0/);

    const status = (await api('GET', '/api/status')).body as unknown as { sections: Record<string, { summary: string; rows: { name: string }[] }> };
    expect(status.sections['bridges']!.summary).toBe('1 of 1 connected, 0 messages held for remotes');
    expect(status.sections['bridges']!.rows.map((r) => r.name)).toEqual(['cloud']);

    const { stdout } = await run(process.execPath, [CLI, 'bridge', 'show', '--url', base]);
    const lines = stdout.trimEnd().split('\n');
    expect(lines[1]).toMatch(/^\| name +\| endpoint +\| state +\| buffer size \| buffer max \| buffer dropped msgs \| backlog bytes \| oldest \| sent\/s \| received\/s \|$/);
    expect(lines[0]).toMatch(/^\+-+(\+-+){9}\+$/);
    expect(lines[3]).toMatch(/^\| cloud +\| 127\.0\.0\.1:\d+ +\| connected +\| +0 \| +1000000 \| +0 \| +0 \| +- \| +\d+ \| +\d+ \|$/);
    expect(lines).toHaveLength(5);
  });

  it('`edb bridge show` exits 3 when no broker answers', async () => {
    const r = await run(process.execPath, [CLI, 'bridge', 'show', '--url', 'http://127.0.0.1:1']).catch((e: { code: number; stderr: string }) => e);
    expect((r as { code: number }).code).toBe(3);
  });
});

describe('SIGHUP re-reads the bridges of the config file', () => {
  it('adds, changes and removes bridges from the file; the others are not touched', async () => {
    const remote = await startBroker();
    const dir = mkdtempSync(join(tmpdir(), 'edb-bridge-hup-'));
    const file = join(dir, 'edb.yaml');
    const write = (bridges: string[]) => writeFileSync(file, ['bridges:', ...bridges].join('\n') + '\n');
    write(['  keep:', `    url: ${remote.url}`, '    topics: ["k/# out 1"]', '    reconnectMin: 100ms', '  gone:', `    url: ${remote.url}`, '    topics: ["g/# out 1"]', '    clientId: gone-1']);
    const edb = await startBrokerProcess({ EDB_CONFIG: file, EDB_HTTP_PORT: '0' }, ['mqtt', 'http']);
    const base = `http://127.0.0.1:${edb.ports['http']}`;
    const names = async () => ((await (await fetch(`${base}/api/bridges`)).json()) as { name: string; topics: string[]; state: string }[]).map((b) => `${b.name}:${b.topics.join(',')}`);
    try {
      expect(await names()).toEqual(['keep:k/# out 1', 'gone:g/# out 1']);
      write(['  keep:', `    url: ${remote.url}`, '    topics: ["k/# out 1", "k2/# out 1"]', '    reconnectMin: 100ms', '  new:', `    url: ${remote.url}`, '    topics: ["n/# in 1"]', '    clientId: new-1']);
      edb.child.kill('SIGHUP');
      const deadline = Date.now() + 15_000;
      let got: string[] = [];
      while (Date.now() < deadline) {
        got = await names();
        if (got.join() === ['keep:k/# out 1,k2/# out 1', 'new:n/# in 1'].join()) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(got).toEqual(['keep:k/# out 1,k2/# out 1', 'new:n/# in 1']);
      await until(() => edb.logs.some((l) => /SIGHUP: bridges reloaded: 1 added, 1 changed, 1 removed/.test(String(l['msg']))), 10_000, 'the reload log line');
      // a bad file leaves the bridges as they are, with a log line naming the problem
      write(['  keep:', `    url: ${remote.url}`, '    keepAlive: 0']);
      edb.child.kill('SIGHUP');
      await until(() => edb.logs.some((l) => /SIGHUP: bridges not reloaded: bridge keep: keepAlive: 0: at least 1/.test(String(l['msg']))), 10_000, 'the refusal');
      expect(await names()).toEqual(['keep:k/# out 1,k2/# out 1', 'new:n/# in 1']);
    } finally {
      await edb.stop();
      await remote.stop();
    }
  });
});
