/**
 * The console's JSON API (src/http/console-api.ts) on a real broker with real MQTT.js
 * clients: the topic tree by branch, search, last message; publish (and its ACL bound);
 * state keys paged by prefix, read, set (notified to an MQTT watcher), delete; disconnect.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { StateStoreClient } from '../../src/state/client.js';
import { formatHlc } from '../../src/state/hlc.js';
import { collect, connectClient, closeAll } from '../helpers/mqttjs.js';
import { newToken, writeTokenFile } from '../../src/auth/admin-users.js';

let dir: string;
let server: EdbServer;
let base: string;
let operatorToken: string;

async function api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}${path}`, { method, headers: { 'content-type': 'application/json', ...headers }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  return { status: res.status, json: await res.json() };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edb-console-api-'));
  const acl = join(dir, 'acl');
  writeFileSync(acl, 'topic readwrite #\n\nuser line-op\ntopic write line1/#\n');
  const { token, record } = newToken('operator', 'line-op');
  operatorToken = token;
  await writeTokenFile(join(dir, 'admin-tokens.json'), [record]);
  server = await startEdb(testConfig({ host: '127.0.0.1', httpPort: 0, dataDir: dir, aclFile: acl }), silentLogger());
  base = `http://127.0.0.1:${server.port('http')}`;
});
afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('topics', () => {
  it('aggregates branches, searches by filter and text, and keeps the last message', async () => {
    const pub = await connectClient(server.port('mqtt'));
    try {
      for (let i = 0; i < 30; i++) await pub.publishAsync(`site/line${i % 3}/m${i}`, `{"n":${i}}`, { qos: 1 });
      await pub.publishAsync('site/line0/m0', Buffer.from([0xde, 0xad]), { qos: 1, retain: true });
    } finally {
      await closeAll(pub);
    }
    const top = await api('GET', '/api/topics');
    const site = top.json.rows.find((r: { name: string }) => r.name === 'site');
    expect(site).toMatchObject({ path: 'site', topics: 30, messages: 31, hasChildren: true, isTopic: false });
    const lines = await api('GET', '/api/topics?prefix=site');
    expect(lines.json.rows.map((r: { name: string; topics: number }) => [r.name, r.topics])).toEqual([
      ['line0', 10],
      ['line1', 10],
      ['line2', 10],
    ]);
    const leaf = await api('GET', '/api/topics?prefix=site/line0');
    expect(leaf.json.rows.find((r: { name: string }) => r.name === 'm0')).toMatchObject({ isTopic: true, messages: 2, retained: true });
    const found = await api('GET', `/api/topics/search?q=${encodeURIComponent('site/+/m1')}`);
    expect(found.json.topics.map((t: { topic: string }) => t.topic)).toEqual(['site/line1/m1']);
    const text = await api('GET', '/api/topics/search?q=m2');
    expect(text.json.topics.map((t: { topic: string }) => t.topic)).toEqual(['site/line2/m2', 'site/line2/m20', 'site/line0/m21', 'site/line1/m22', 'site/line2/m23', 'site/line0/m24', 'site/line1/m25', 'site/line2/m26', 'site/line0/m27', 'site/line1/m28', 'site/line2/m29'].sort());
    const m = await api('GET', '/api/topics/message?topic=site/line0/m0');
    expect(m.json).toMatchObject({ qos: 1, retain: true, bytes: 2, payload: Buffer.from([0xde, 0xad]).toString('base64'), messages: 2 });
    expect((await api('GET', '/api/topics/message?topic=nope')).status).toBe(404);
  });

  it('publishes for an operator, within the token user\'s ACL, and refuses bad input', async () => {
    const sub = await connectClient(server.port('mqtt'));
    try {
      const got = collect(sub);
      await sub.subscribeAsync('line1/#', { qos: 1 });
      const auth = { authorization: `Bearer ${operatorToken}` };
      const ok = await api('POST', '/api/publish', { topic: 'line1/cmd', payload: 'c3RhcnQ=', encoding: 'base64', qos: 1 }, auth);
      expect(ok.status).toBe(200);
      const [msg] = await got.wait(1);
      expect(msg!.payload.toString()).toBe('start');
      const outside = await api('POST', '/api/publish', { topic: 'line2/cmd', payload: 'x' }, auth);
      expect(outside.status).toBe(403);
      expect(outside.json.message).toMatch(/line-op may not publish/);
      expect((await api('POST', '/api/publish', { topic: 'a/+', payload: 'x' })).status).toBe(400);
      expect((await api('POST', '/api/publish', { topic: 'a', payload: 'x', qos: 3 })).status).toBe(400);
      expect((await api('POST', '/api/publish', { topic: 'a', payload: '%%', encoding: 'base64' })).status).toBe(400);
    } finally {
      await closeAll(sub);
    }
  });
});

describe('state store', () => {
  it('sets, pages by prefix, reads, notifies an MQTT watcher, and deletes', async () => {
    const mq = await connectClient(server.port('mqtt'), { protocolVersion: 5, clientId: 'console-api-watcher' });
    try {
      const state = await StateStoreClient.create(mq);
      await state.set('cfg/watched', 'v0');
      await state.observe('cfg/watched');
      const notified = new Promise<string>((resolve) => state.once('notification', (n) => resolve(n.value?.toString() ?? 'deleted')));
      for (let i = 0; i < 7; i++) expect((await api('PUT', `/api/state/key?key=cfg/k${i}`, { value: `v${i}`, ttlMs: i === 3 ? 60_000 : 0 })).status).toBe(200);
      expect((await api('PUT', '/api/state/key?key=cfg/watched', { value: 'from the console' })).status).toBe(200);
      expect(await notified).toBe('from the console');
      expect((await api('PUT', '/api/state/key?key=other', { value: 'x' })).status).toBe(200);
      const page1 = await api('GET', '/api/state/keys?prefix=cfg/&limit=3');
      expect(page1.json.keys.map((k: { key: { text: string } }) => k.key.text)).toEqual(['cfg/k0', 'cfg/k1', 'cfg/k2']);
      expect(page1.json).toMatchObject({ more: true, next: 'cfg/k2' });
      const page2 = await api('GET', `/api/state/keys?prefix=cfg/&limit=3&after=${page1.json.next}`);
      expect(page2.json.keys.map((k: { key: { text: string } }) => k.key.text)).toEqual(['cfg/k3', 'cfg/k4', 'cfg/k5']);
      expect(page2.json.keys[0].expiresAt).toBeGreaterThan(Date.now());
      const page3 = await api('GET', `/api/state/keys?prefix=cfg/&limit=3&after=${page2.json.next}`);
      expect(page3.json.keys.map((k: { key: { text: string } }) => k.key.text)).toEqual(['cfg/k6', 'cfg/watched']);
      expect(page3.json.more).toBe(false);
      const one = await api('GET', '/api/state/key?key=cfg/k1');
      expect(one.json).toMatchObject({ key: 'cfg/k1', value: { text: 'v1' }, bytes: 2, expiresAt: null });
      expect((await state.get('cfg/k1')).value?.toString()).toBe('v1');
      expect((await api('DELETE', '/api/state/key?key=cfg/k1')).status).toBe(200);
      expect((await api('DELETE', '/api/state/key?key=cfg/k1')).status).toBe(404);
      expect((await state.get('cfg/k1')).value).toBeUndefined();
      expect((await api('GET', '/api/state/keys?limit=0')).status).toBe(400);
      expect((await api('PUT', '/api/state/key?key=x', { value: 'v', ttlMs: -1 })).status).toBe(400);
    } finally {
      await closeAll(mq);
    }
  });
});

/** Reads server-sent events from a fetch response: `next()` resolves with the next event's data. */
function sseReader(res: Response): { next(): Promise<any>; close(): Promise<void> } {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  return {
    async next() {
      for (;;) {
        const end = buffered.indexOf('\n\n');
        if (end >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const data = block.split('\n').find((l) => l.startsWith('data: '));
          if (data === undefined) continue; // a comment (": open", ": ping")
          expect(block).toContain('event: value');
          return JSON.parse(data.slice(6));
        }
        const { value, done } = await reader.read();
        if (done) throw new Error('the stream ended');
        buffered += decoder.decode(value, { stream: true });
      }
    },
    close: () => reader.cancel(),
  };
}

async function watchOverSse(http: number, mqtt: number): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${http}/api/state/watch?key=line/7`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const events = sseReader(res);
  const mq = await connectClient(mqtt, { protocolVersion: 5, clientId: `sse-writer-${http}` });
  try {
    // first the key as it is now: absent
    expect(await events.next()).toEqual({ key: 'line/7', absent: true });
    const state = await StateStoreClient.create(mq);
    const set = await state.set('line/7', '{"speed": 3}', { expiresInMs: 60_000 });
    const first = await events.next();
    expect(first).toMatchObject({ key: 'line/7', value: { text: '{"speed": 3}' }, bytes: 12 });
    expect(first.version).toBe(formatHlc(set.version!));
    expect(first.expiresAt, JSON.stringify(first)).toBeGreaterThan(Date.now());
    await state.set('line/7', 'stopped');
    expect(await events.next()).toMatchObject({ value: { text: 'stopped' }, expiresAt: null });
    await state.del('line/7');
    expect(await events.next()).toEqual({ key: 'line/7', absent: true });
  } finally {
    await events.close();
    await closeAll(mq);
  }
}

describe('watch a key (server-sent events)', () => {
  it('pushes the key now, then each change made by an MQTT client', async () => {
    await watchOverSse(server.port('http'), server.port('mqtt'));
    expect((await api('GET', '/api/state/watch')).status).toBe(400);
  });
  it('the same on the node:http engine', async () => {
    const other = await startEdb(testConfig({ host: '127.0.0.1', httpPort: 0, wsEngine: 'ws', dataDir: mkdtempSync(join(tmpdir(), 'edb-console-sse-')) }), silentLogger());
    try {
      await watchOverSse(other.port('http'), other.port('mqtt'));
    } finally {
      await other.stop();
    }
  });
});

describe('clients', () => {
  it('disconnects a client for an admin (v5: 0x98)', async () => {
    const c = await connectClient(server.port('mqtt'), { protocolVersion: 5, clientId: 'to-kick', reconnectPeriod: 0 });
    const reason = new Promise<number | undefined>((resolve) => c.once('disconnect', (p) => resolve(p.reasonCode)));
    expect((await api('DELETE', '/api/clients?clientId=to-kick')).status).toBe(200);
    expect(await reason).toBe(0x98);
    expect((await api('DELETE', '/api/clients?clientId=to-kick')).status).toBe(404);
    await closeAll(c);
  });
});
