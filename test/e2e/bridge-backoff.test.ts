/**
 * Reconnect back-off of a bridge, observed from the remote's side: the bridge (a real `edb
 * start` process) points at a listening socket of the test that accepts and closes at once, and
 * the test records when each attempt arrives. The back-off starts at reconnectMin, doubles per
 * failed attempt up to reconnectMax, with +-20 % jitter; the broker's state line says which
 * delay it chose (`retryInMs`), the accept times show it waited at least that long (a lower
 * bound only: a loaded machine can only make it later). After a connection that gets its
 * CONNACK (the socket now forwards to a real broker) the back-off starts again at reconnectMin.
 */
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

/** A socket that closes what it accepts, or forwards it to `upstream`; records accept times. */
async function door(upstream: number) {
  const accepts: number[] = [];
  const open = new Set<net.Socket>();
  const state = { forward: false };
  const server = net.createServer((down) => {
    accepts.push(Date.now());
    if (!state.forward) return void down.destroy();
    const up = net.connect(upstream, '127.0.0.1');
    open.add(down).add(up);
    down.pipe(up).pipe(down);
    const end = () => {
      down.destroy();
      up.destroy();
      open.delete(down);
      open.delete(up);
    };
    down.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    accepts,
    state,
    cut() {
      for (const s of open) s.destroy();
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const MIN = 100;
const MAX = 800;

describe('bridge reconnect back-off', () => {
  let remote: TestBroker;
  let edb: BrokerProcess | undefined;
  let d: Awaited<ReturnType<typeof door>>;
  afterAll(async () => {
    await edb?.stop('SIGKILL');
    d.cut();
    await d.close();
    await remote.stop();
  });

  it(`doubles from reconnectMin (${MIN} ms) to reconnectMax (${MAX} ms) with jitter, and starts again at reconnectMin after a connection`, async () => {
    remote = await startBroker();
    d = await door(remote.port);
    edb = await startBrokerProcess({
      EDB_BRIDGE_BR0: `127.0.0.1:${d.port}`,
      EDB_BRIDGE_BR0_TOPIC_1: 'b/# out 1',
      EDB_BRIDGE_BR0_RECONNECT_MIN: `${MIN}ms`,
      EDB_BRIDGE_BR0_RECONNECT_MAX: `${MAX}ms`,
    });
    const proc = edb;
    const downs = () => proc.logs.filter((l) => l['state'] === 'disconnected' && typeof l['retryInMs'] === 'number').map((l) => l['retryInMs'] as number);
    const ATTEMPTS = 8;
    await until(() => d.accepts.length >= ATTEMPTS + 1, 30_000, `${ATTEMPTS + 1} connection attempts`);
    const delays = downs().slice(0, ATTEMPTS);
    expect(delays).toHaveLength(ATTEMPTS);
    delays.forEach((ms, i) => {
      const base = Math.min(MAX, MIN * 2 ** i);
      expect(ms, `delay after failed attempt ${i + 1} (base ${base} ms)`).toBeGreaterThanOrEqual(Math.floor(base * 0.8));
      expect(ms, `delay after failed attempt ${i + 1} (base ${base} ms)`).toBeLessThanOrEqual(Math.ceil(base * 1.2));
    });
    // jitter: the capped delays are not all the same number
    expect(new Set(delays.slice(3)).size, 'jitter on the capped delays').toBeGreaterThan(1);
    // the attempts came no sooner than the delays said (timers never fire early; 2 ms for clock rounding)
    for (let i = 0; i < ATTEMPTS; i++) expect(d.accepts[i + 1]! - d.accepts[i]!, `interval before attempt ${i + 2}`).toBeGreaterThanOrEqual(delays[i]! - 2);

    // a connection that works, then lost: the next delay is reconnectMin's again
    d.state.forward = true;
    await until(() => proc.logs.some((l) => l['state'] === 'connected'), 15_000, 'the bridge connected');
    const before = downs().length;
    d.state.forward = false;
    d.cut();
    await until(() => downs().length > before, 15_000, 'the bridge down again');
    const again = downs()[before]!;
    expect(again, 'the first delay after a connection').toBeGreaterThanOrEqual(MIN * 0.8);
    expect(again, 'the first delay after a connection').toBeLessThanOrEqual(MIN * 1.2);
  });
});
