import { vi } from 'vitest';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { createLogger, silentLogger } from '../../src/log.js';
import type { Config } from '../../src/config/schema.js';

export interface TestBroker {
  server: EdbServer;
  port: number;
  url: string;
  stop(): Promise<void>;
}

// startEdb does not compile the empty rules document (no AssemblyScript at start), but on a
// loaded 2-core machine starting brokers and driving real sockets still takes seconds per
// test: files that start brokers get room for that.
vi.setConfig({ testTimeout: 90_000, hookTimeout: 120_000 });

/** A real broker in-process on a free port, with silent logs. */
export async function startBroker(overrides: Partial<Config> = {}): Promise<TestBroker> {
  const server = await startEdb(testConfig({ host: '127.0.0.1', shutdownTimeoutMs: 500, ...overrides }), process.env['EDB_TEST_LOG'] ? createLogger(process.env['EDB_TEST_LOG'], 'json') : silentLogger());
  const port = server.port('mqtt');
  return { server, port, url: `mqtt://127.0.0.1:${port}`, stop: () => server.stop() };
}

/** Resolve when `predicate` holds, polling (for broker-side state with no event to await). */
export async function until(predicate: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
