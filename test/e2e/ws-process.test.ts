/**
 * `edb start` as a real process: the log says which engine runs the WebSocket and HTTP
 * listeners (and why `ws` when it is the fallback), and `edb clients` as a real process
 * lists a WebSocket client.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it, vi } from 'vitest';
import mqtt from 'mqtt';
import { CLI, startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { loadUws } from '../../src/transport/uws.js';

vi.setConfig({ testTimeout: 60_000 });
const run = promisify(execFile);

describe('edb start with WebSocket and HTTP listeners', () => {
  let broker: BrokerProcess | undefined;

  afterEach(async () => {
    await broker?.stop();
    broker = undefined;
  });

  it('logs the engine of each listener; EDB_WS_ENGINE=ws logs why', async () => {
    broker = await startBrokerProcess({ EDB_WS_PORT: '0', EDB_HTTP_PORT: '0', EDB_WS_ENGINE: 'ws' }, ['mqtt', 'ws', 'http']);
    const wsLine = broker.logs.find((l) => l['listener'] === 'ws' && /WebSocket on port/.test(String(l['msg'])));
    expect(wsLine).toMatchObject({ engine: 'ws', fallbackReason: 'EDB_WS_ENGINE=ws', port: broker.ports['ws'] });
    const httpLine = broker.logs.find((l) => l['listener'] === 'http' && /HTTP/.test(String(l['msg'])));
    expect(httpLine).toMatchObject({ engine: 'node:http', fallbackReason: 'EDB_WS_ENGINE=ws' });
  });

  it('auto picks uWebSockets.js where it loads, and edb clients lists a WebSocket client', async () => {
    broker = await startBrokerProcess({ EDB_WS_PORT: '0', EDB_HTTP_PORT: '0' }, ['mqtt', 'ws', 'http']);
    const wsLine = broker.logs.find((l) => l['listener'] === 'ws' && /WebSocket on port/.test(String(l['msg'])))!;
    if (loadUws().ok) {
      expect(wsLine['engine']).toBe('uWebSockets.js');
      expect(wsLine['fallbackReason']).toBeUndefined();
    } else {
      expect(wsLine['engine']).toBe('ws');
      expect(String(wsLine['fallbackReason'])).toMatch(/^uWebSockets\.js cannot load: /);
    }
    const client = await mqtt.connectAsync(`ws://127.0.0.1:${broker.ports['ws']}/mqtt`, { clientId: 'process-ws-client', reconnectPeriod: 0 });
    try {
      const { stdout } = await run(process.execPath, [CLI, 'clients'], { env: { ...process.env, EDB_HTTP_PORT: String(broker.ports['http']) } });
      expect(stdout).toMatch(/^CLIENT ID/);
      expect(stdout).toMatch(/\nprocess-ws-client\s+3\.1\.1\s+ws\s+127\.0\.0\.1/);
    } finally {
      client.end(true);
    }
  });
});
