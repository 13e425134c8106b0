/**
 * The operators' HTTP service on a real broker: /metrics scraped and parsed (values move
 * with traffic), /healthz and /readyz, /api/clients, /api/subscriptions, /api/status, the
 * status page and the MQTT.js bundle it serves.
 */
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { startHttpService } from '../../src/http/service.js';
import type { ListenerState } from '../../src/http/metrics.js';

/** /readyz (src/http/health.ts). */
interface ReadyBody {
  status: 'ready' | 'not_ready';
  reason?: string;
  down?: string[];
  listeners: ListenerState[];
}

/** The parts of /api/status (src/http/api.ts) these tests read. */
interface StatusBody {
  version: string;
  uptimeSeconds: number;
  listeners: ListenerState[];
  clients: { count: number; rows: unknown[] };
  rates: { intervalMs: number };
  sections: { rules: { filters: number }; state: { summary: string }; storage: { summary: string } };
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (what a scraper reads). */
function parseMetrics(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types.set(name!, type!);
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { samples, types };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

describe('HTTP service on a running broker', () => {
  let server: EdbServer;
  let base: string;
  const clients: MqttClient[] = [];

  async function scrape() {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return parseMetrics(await res.text());
  }

  beforeAll(async () => {
    server = await startEdb(testConfig({ httpPort: 0, wsPort: 0 }), silentLogger());
    base = `http://127.0.0.1:${server.port('http')}`;
  });

  afterAll(async () => {
    for (const c of clients) c.end(true);
    await server.stop();
  });

  it('/healthz says ok and /readyz says ready with every listener up', async () => {
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    const body = (await ready.json()) as ReadyBody;
    expect(body.status).toBe('ready');
    expect(body.listeners.map((l) => l.name).sort()).toEqual(['http', 'mqtt', 'ws']);
    expect(body.listeners.every((l) => l.up)).toBe(true);
  });

  it('/metrics moves when traffic flows', async () => {
    const before = await scrape();
    expect(before.types.get('edb_messages_received_total')).toBe('counter');
    expect(before.types.get('edb_clients_connected')).toBe('gauge');
    // Process series a scraper expects: event-loop lag and memory.
    expect(value(before.samples, 'nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0);
    expect(value(before.samples, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    // Known drop reasons are exported before anything is dropped.
    expect(value(before.samples, 'edb_messages_dropped_total', { reason: 'queue_full' })).toBe(0);
    const received0 = value(before.samples, 'edb_messages_received_total')!;
    const bytesIn0 = value(before.samples, 'edb_bytes_received_total')!;

    const sub = await mqtt.connectAsync(`ws://127.0.0.1:${server.port('ws')}/mqtt`, { clientId: 'metrics-sub', reconnectPeriod: 0 });
    const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${server.port('mqtt')}`, { clientId: 'metrics-pub', reconnectPeriod: 0 });
    clients.push(sub, pub);
    await sub.subscribeAsync('m/#', { qos: 1 });
    let got = 0;
    sub.on('message', () => got++);
    for (let i = 0; i < 10; i++) await pub.publishAsync('m/x', Buffer.alloc(100), { qos: 1 });
    await pub.publishAsync('m/retained', 'r', { qos: 0, retain: true });
    while (got < 11) await new Promise((r) => setTimeout(r, 10));

    const after = await scrape();
    expect(value(after.samples, 'edb_messages_received_total')).toBe(received0 + 11);
    expect(value(after.samples, 'edb_bytes_received_total')).toBeGreaterThan(bytesIn0 + 1000);
    expect(value(after.samples, 'edb_clients_connected')).toBe(2);
    expect(value(after.samples, 'edb_clients_by_transport', { transport: 'ws' })).toBe(1);
    expect(value(after.samples, 'edb_clients_by_transport', { transport: 'tcp' })).toBe(1);
    expect(value(after.samples, 'edb_packets_received_total', { type: 'publish' })).toBeGreaterThanOrEqual(11);
    expect(value(after.samples, 'edb_packets_sent_total', { type: 'puback' })).toBeGreaterThanOrEqual(10);
    expect(value(after.samples, 'edb_subscriptions', { online: 'true' })).toBe(1);
    expect(value(after.samples, 'edb_retained_messages')).toBe(1);
    expect(value(after.samples, 'edb_listener_up', { name: 'ws' })).toBe(1);
  });

  it('/api/clients and /api/subscriptions list what is connected', async () => {
    const c = await mqtt.connectAsync(`ws://127.0.0.1:${server.port('ws')}/mqtt`, { clientId: 'api-client', protocolVersion: 5, reconnectPeriod: 0 });
    clients.push(c);
    await c.subscribeAsync({ 'api/a': { qos: 1 }, 'api/b/#': { qos: 0 } });
    const rows = (await (await fetch(`${base}/api/clients`)).json()) as { clientId: string; transport: string; protocolVersion: number; subscriptions: number }[];
    const row = rows.find((r) => r.clientId === 'api-client');
    expect(row).toMatchObject({ transport: 'ws', protocolVersion: 5, subscriptions: 2 });
    const one = await (await fetch(`${base}/api/clients?clientId=api-client`)).json();
    expect(one).toHaveLength(1);
    const subs = (await (await fetch(`${base}/api/subscriptions?clientId=api-client`)).json()) as { filter: string; qos: number; online: boolean }[];
    expect(subs.map((s) => [s.filter, s.qos, s.online]).sort()).toEqual([
      ['api/a', 1, true],
      ['api/b/#', 0, true],
    ]);
  });

  it('/api/status has what the status page shows', async () => {
    const s = (await (await fetch(`${base}/api/status`)).json()) as StatusBody;
    expect(s.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(s.uptimeSeconds).toBeGreaterThanOrEqual(0);
    expect(s.clients.count).toBe(s.clients.rows.length);
    expect(s.listeners.find((l) => l.name === 'ws')!.engine).toMatch(/uWebSockets\.js|ws/);
    expect(s.rates.intervalMs).toBeGreaterThan(0);
    // the rules engine, the state store and storage add their summaries
    expect(Object.keys(s.sections).sort()).toEqual(['bridges', 'rules', 'state', 'storage']);
    expect(s.sections.storage.summary).toMatch(/^Storage: durable/); // the default
    expect(s.sections.rules.filters).toBe(0);
    expect(s.sections.state.summary).toMatch(/key/);
  });

  it('serves the status page, its script, the console and MQTT.js (gzip when asked)', async () => {
    const page = await fetch(`${base}/status`);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    const html = await page.text();
    expect(html).toContain('<script src="/status/app.js">');
    expect((await fetch(`${base}/status/app.js`)).status).toBe(200);
    expect(await (await fetch(`${base}/status/try`)).text()).toContain('/status/mqtt.min.js');
    // / is the console (web/console, bundled into build/console at npm run build)
    const root = await fetch(`${base}/`, { redirect: 'manual' });
    expect(root.status).toBe(200);
    expect(await root.text()).toContain('<script type="module" src="/console/app.js">');
    const app = await fetch(`${base}/console/app.js`);
    expect(app.status).toBe(200);
    expect(app.headers.get('content-type')).toMatch(/javascript/);
    expect((await app.text()).length).toBeGreaterThan(1000);

    // fetch() would decompress by itself: read raw with node:http semantics via a manual header.
    const raw = await fetch(`${base}/status/mqtt.min.js`, { headers: { 'accept-encoding': 'identity' } });
    const plain = Buffer.from(await raw.arrayBuffer());
    expect(raw.headers.get('content-encoding')).toBeNull();
    expect(plain.toString('utf8', 0, 2000)).toMatch(/mqtt/i);
    const { request } = await import('node:http');
    // asserted after the request: an expect() throwing inside the response callback would be an
    // uncaught exception (and leave this promise pending), not a failed assertion
    let encoding: string | undefined;
    const gz = await new Promise<Buffer>((resolve, reject) => {
      request(`${base}/status/mqtt.min.js`, { headers: { 'accept-encoding': 'gzip' } }, (res) => {
        encoding = res.headers['content-encoding'];
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject); // a response cut short ('aborted')
        res.on('end', () => resolve(Buffer.concat(chunks)));
      })
        .on('error', reject)
        .end();
    });
    expect(encoding).toBe('gzip');
    expect(gz.length).toBeLessThan(plain.length / 2);
    expect(gunzipSync(gz).equals(plain)).toBe(true);
  });
});

describe('readiness', () => {
  it('/readyz is 503 until start-up is done and when a listener is down', async () => {
    const server = await startEdb(testConfig({ wsPort: 0 }), silentLogger());
    const http = await startHttpService(server.broker, testConfig({ httpPort: 0 }), silentLogger());
    try {
      const url = `http://127.0.0.1:${http.listener!.port}/readyz`;
      const starting = await fetch(url);
      expect(starting.status).toBe(503);
      expect(((await starting.json()) as ReadyBody).reason).toBe('starting or stopping');
      for (const l of server.listeners) http.trackListener(l);
      http.setReady(true);
      expect((await fetch(url)).status).toBe(200);
      await server.listeners.find((l) => l.name === 'ws')!.close();
      const down = await fetch(url);
      expect(down.status).toBe(503);
      expect(((await down.json()) as ReadyBody).down).toEqual(['ws']);
    } finally {
      await http.close();
      await server.stop();
    }
  });
});
