// What an idle broker loads (issue 15, section 3): with every listener on, `edb start` must not
// load what only some uses need (MQTT.js for `edb state`, yaml for YAML config files, `ws` when
// uWebSockets.js runs, prom-client before /metrics is scraped, lmdb with memory storage). With
// the default durable storage lmdb is loaded at start (it holds the data), and nothing else more.
// A real process, a real scrape; the modules loaded are read from the process itself.
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const PROBE = fileURLToPath(new URL('../fixtures/loaded-modules.mjs', import.meta.url));

let broker: BrokerProcess | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await broker?.stop();
  broker = undefined;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function loadedPackages(b: BrokerProcess, out: string): Promise<string[]> {
  rmSync(out, { force: true });
  b.child.kill('SIGUSR2');
  for (let i = 0; i < 200 && !existsSync(out); i++) await new Promise((r) => setTimeout(r, 25));
  await new Promise((r) => setTimeout(r, 25)); // written in one call; let it finish
  return readFileSync(out, 'utf8').split('\n').filter(Boolean);
}

describe('idle footprint', () => {
  it('default (durable) storage: lmdb is loaded at start, and nothing else an idle broker does not need', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'edb-footprint-'));
    dirs.push(dir);
    const out = join(dir, 'modules.txt');
    broker = await startBrokerProcess(
      { EDB_WS_PORT: '0', EDB_HTTP_PORT: '0', EDB_RULES_PORT: '0', EDB_MQTTS_PORT: '-1', NODE_OPTIONS: `--import=${PROBE}`, EDB_TEST_MODULES_OUT: out },
      ['mqtt', 'ws', 'http', 'rules'],
    );
    const idle = await loadedPackages(broker, out);
    expect(idle).toContain('lmdb');
    for (const name of ['mqtt', 'yaml', 'prom-client']) expect(idle, name).not.toContain(name);
    for (const name of idle) expect(name).not.toMatch(/^@nats-io[\\/]/);
    expect(broker.logs.some((l) => typeof l['msg'] === 'string' && /^storage: loaded from/.test(l['msg']))).toBe(true);
  });

  it('EDB_STORAGE=memory: loads prom-client on the first scrape, and never MQTT.js, yaml, lmdb, the NATS client or an unused WebSocket engine at idle', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'edb-footprint-'));
    dirs.push(dir);
    const out = join(dir, 'modules.txt');
    broker = await startBrokerProcess(
      { EDB_STORAGE: 'memory', EDB_WS_PORT: '0', EDB_HTTP_PORT: '0', EDB_RULES_PORT: '0', EDB_MQTTS_PORT: '-1', NODE_OPTIONS: `--import=${PROBE}`, EDB_TEST_MODULES_OUT: out },
      ['mqtt', 'ws', 'http', 'rules'],
    );
    const idle = await loadedPackages(broker, out);
    expect(idle).toContain('pino'); // the probe sees what the broker loaded
    for (const name of ['mqtt', 'yaml', 'prom-client', 'lmdb']) expect(idle, name).not.toContain(name);
    // the NATS client is for cluster mode (EDB_CLUSTER_NATS) only
    for (const name of idle) expect(name).not.toMatch(/^@nats-io[\\/]/);
    const wsLine = broker.logs.find((l) => l['listener'] === 'ws' && typeof l['engine'] === 'string');
    if (wsLine?.['engine'] === 'uWebSockets.js') expect(idle).not.toContain('ws');

    const res = await fetch(`http://127.0.0.1:${broker.ports['http']}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    // the broker's, the rules engine's, the state store's and Node's series, all there on the first scrape
    for (const series of ['edb_clients_connected', 'edb_rules_messages_total', 'edb_state_keys', 'nodejs_eventloop_lag_seconds', 'process_resident_memory_bytes']) {
      expect(text, series).toMatch(new RegExp(`^${series}`, 'm'));
    }
    expect(await loadedPackages(broker, out)).toContain('prom-client');
    // a second scrape answers from the same registry
    expect((await fetch(`http://127.0.0.1:${broker.ports['http']}/metrics`)).status).toBe(200);
  });
});
