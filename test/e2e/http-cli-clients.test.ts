/**
 * `edb clients` and `edb subscriptions` against a running broker's HTTP API.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Command } from 'commander';
import mqtt, { type MqttClient } from 'mqtt';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { clientsTable, formatTable, register } from '../../src/cli/clients.js';

async function edb(...args: string[]): Promise<{ out: string; err: string; exitCode: number }> {
  const program = new Command().exitOverride();
  register(program);
  let out = '';
  let err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((out += String(chunk)), true));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((err += String(chunk)), true));
  const before = process.exitCode;
  process.exitCode = 0;
  try {
    await program.parseAsync(['node', 'edb', ...args]);
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
  const exitCode = Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { out, err, exitCode };
}

describe('edb clients / edb subscriptions', () => {
  let server: EdbServer;
  let url: string;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    server = await startEdb(testConfig({ httpPort: 0, wsPort: 0 }), silentLogger());
    url = `http://127.0.0.1:${server.port('http')}`;
    const a = await mqtt.connectAsync(`mqtt://127.0.0.1:${server.port('mqtt')}`, { clientId: 'pump-7', username: 'ops', reconnectPeriod: 0 });
    const b = await mqtt.connectAsync(`ws://127.0.0.1:${server.port('ws')}/mqtt`, { clientId: 'dashboard', protocolVersion: 5, reconnectPeriod: 0 });
    await a.subscribeAsync('plant/pumps/+/cmd', { qos: 1 });
    await b.subscribeAsync({ 'plant/#': { qos: 0, nl: true }, '$share/ui/alerts/#': { qos: 1 } });
    clients.push(a, b);
  });

  afterAll(async () => {
    for (const c of clients) c.end(true);
    await server.stop();
  });

  it('prints the connected clients as a table', async () => {
    const { out, exitCode } = await edb('clients', '--url', url);
    expect(exitCode).toBe(0);
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^CLIENT ID\s+USER\s+MQTT\s+TRANSPORT\s+ADDRESS\s+CONNECTED\s+SUBS\s+QUEUED\s+INFLIGHT$/);
    expect(lines[1]).toMatch(/^-+ +-+/);
    expect(lines).toHaveLength(4);
    const pump = lines.find((l) => l.startsWith('pump-7'))!;
    expect(pump).toMatch(/^pump-7\s+ops\s+3\.1\.1\s+tcp\s+127\.0\.0\.1:\d+\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(\d+s\)\s+1\s+0\s+0$/);
    expect(lines.find((l) => l.startsWith('dashboard'))).toMatch(/5\.0\s+ws\s/);
  });

  it('prints subscriptions with QoS, share group and options, filtered by client', async () => {
    const { out } = await edb('subscriptions', '--url', url, '--client-id', 'dashboard');
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^CLIENT ID\s+FILTER\s+QOS\s+SHARE GROUP\s+OPTIONS\s+SUB ID\s+ONLINE$/);
    expect(lines).toHaveLength(4);
    expect(lines.some((l) => /^dashboard\s+plant\/#\s+0\s+no-local\s+yes$/.test(l))).toBe(true);
    expect(lines.some((l) => /^dashboard\s+alerts\/#\s+1\s+ui\s+yes$/.test(l) || /^dashboard\s+\$share\/ui\/alerts\/#\s+1\s+ui\s+yes$/.test(l))).toBe(true);
    expect(out).not.toContain('pump-7');
  });

  it('--json prints what the API returns', async () => {
    const { out } = await edb('clients', '--url', url, '--json');
    const rows = JSON.parse(out) as { clientId: string }[];
    expect(rows.map((r) => r.clientId).sort()).toEqual(['dashboard', 'pump-7']);
  });

  it('says clearly when the broker cannot be reached, exit code 3', async () => {
    // A port that was free a moment ago: nothing listens there.
    const { createServer } = await import('node:net');
    const probe = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => probe.once('listening', r));
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    const { err, exitCode, out } = await edb('clients', '--url', `http://127.0.0.1:${port}`);
    expect(exitCode).toBe(3);
    expect(out).toBe('');
    expect(err).toBe(`edb clients: cannot reach the broker's HTTP API at http://127.0.0.1:${port}/api/clients: connection refused (ECONNREFUSED); is it running? set --url or EDB_HTTP_PORT\n`);
  });
});

describe('table formatting', () => {
  it('aligns columns, right-aligns numbers and keeps control characters out', () => {
    const text = formatTable(
      [
        { a: 'x', n: 5 },
        { a: 'longer\nname', n: 12345 },
      ],
      [
        { title: 'A', value: (r) => r.a },
        { title: 'N', value: (r) => String(r.n), right: true },
      ],
    );
    expect(text).toBe('A                N\n-----------  -----\nx                5\nlonger name  12345\n');
  });

  it('shows an empty broker as just the header', () => {
    expect(clientsTable([]).trimEnd().split('\n')).toHaveLength(2);
  });
});
