/**
 * Long fuzz run against the broker (the bounded version is test/e2e/fuzz.test.ts).
 *
 *   npm run build && node dist/bench/fuzz-long.js [--seconds 300] [--packets N] [--concurrency 64] [--seed N]
 *                                                 [--host H --port P [--metrics URL]]
 *
 * Without --port it starts a broker in this process (TCP listener on port 0, with the auth
 * service, a password file and an ACL, so the hooks see garbage too). With --port it fuzzes
 * a broker that is already running (e.g. `edb start` in another shell, or mosquitto/aedes
 * for comparison). Meanwhile a well-behaved MQTT.js pair exchanges QoS 1 messages.
 * Every 10 s it prints connections, protocol errors, the pair's counts and memory; at the
 * end it exits 1 if the pair lost a message or a connection, if the broker counted an
 * internal error (in-process, or from --metrics: an edb /metrics URL), or (in-process) if
 * connections were left behind or memory kept growing. --packets stops after that many
 * packets (the long run: `--packets 1000000`). The summary line holds the figures
 * for bench/RESULTS.md: connections, packets, internal errors, watchdog misses, RSS.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Broker } from '../src/broker/broker.js';
import { testConfig } from '../src/config/load.js';
import { silentLogger } from '../src/log.js';
import { createAuthService } from '../src/auth/service.js';
import { hashPassword } from '../src/auth/password-file.js';
import { startTcpListener } from '../src/transport/tcp.js';
import { newFuzzStats, runFuzz, startWellBehavedPair } from './fuzz-packets.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '300' },
    concurrency: { type: 'string', default: '64' },
    seed: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    packets: { type: 'string' },
    metrics: { type: 'string' },
  },
});

/** The series of an edb /metrics page this run reads: internal errors, RSS, packets received. */
async function scrape(url: string): Promise<{ internalErrors: number; rss: number; packetsReceived: number }> {
  const text = await (await fetch(url)).text();
  const sum = (name: string): number =>
    text
      .split('\n')
      .filter((l) => l.startsWith(name + '{') || l.startsWith(name + ' '))
      .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return { internalErrors: sum('edb_internal_errors_total'), rss: sum('process_resident_memory_bytes'), packetsReceived: sum('edb_packets_received_total') };
}

const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 0xffffffff);
const host = values.host!;

async function main(): Promise<number> {
  let port: number;
  let broker: Broker | undefined;
  let stopLocal: (() => Promise<void>) | undefined;

  if (values.port !== undefined) {
    port = Number(values.port);
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'edb-fuzz-long-'));
    writeFileSync(join(dir, 'passwd'), `fuzz:${await hashPassword('fuzz')}\n`);
    writeFileSync(join(dir, 'acl'), 'topic readwrite #\ntopic deny fuzz/secret\nuser fuzz\ntopic readwrite fuzz/#\npattern readwrite clients/%c/#\n');
    const config = testConfig({
      host: '127.0.0.1',
      passwordFile: join(dir, 'passwd'),
      aclFile: join(dir, 'acl'),
      loginFailureLimit: 1_000_000,
      connectTimeoutMs: 2000,
      maxPacketSize: 65536,
      // Fuzzed CONNECTs open persistent sessions that subscribe to wildcards and then keep every
      // later message (up to maxOfflineMessages each) for as long as their expiry says: that is
      // retention the protocol asks for, and it grows with the connection rate. Expiring them
      // after 5 s keeps it bounded, so the memory check below finds leaks, not retention.
      maxSessionExpiry: 5,
    });
    const log = silentLogger();
    broker = new Broker(config, log);
    const auth = createAuthService(broker, config, log, { handleSighup: false, watchFiles: false });
    const listener = await startTcpListener(broker, '127.0.0.1', 0);
    port = listener.port;
    const b = broker;
    stopLocal = async () => {
      await listener.close();
      await b.close(1000);
      await auth.close();
    };
  }

  console.log(`fuzzing ${host}:${port} for ${seconds} s, ${concurrency} connections at once, seed ${seed}`);
  const pair = await startWellBehavedPair(`mqtt://${host}:${port}`, `long${seed}`);
  const started = Date.now();
  const rssSamples: number[] = [];
  const fuzzStats = newFuzzStats();
  const progress = setInterval(() => {
    const mem = process.memoryUsage();
    rssSamples.push(mem.rss);
    const s = broker?.stats;
    const errors = s ? Object.values(s.protocolErrors).reduce((a, b) => a + b, 0) : undefined;
    console.log(
      JSON.stringify({
        t: Math.round((Date.now() - started) / 1000),
        fuzzConnections: fuzzStats.connections,
        ...(s ? { brokerConnections: broker!.connections.size, connectionsTotal: s.connectionsTotal, protocolErrors: errors, publishReceived: s.publishReceived } : {}),
        rssMiB: Math.round(mem.rss / 1048576),
        heapMiB: Math.round(mem.heapUsed / 1048576),
      }),
    );
  }, 10_000);

  const rssBefore = broker ? process.memoryUsage().rss : values.metrics ? (await scrape(values.metrics)).rss : undefined;
  await runFuzz({ host, port, seed, connections: Infinity, concurrency, until: started + seconds * 1000, lingerMs: 50, ...(values.packets ? { packets: Number(values.packets) } : {}) }, fuzzStats);
  clearInterval(progress);
  const fuzzSeconds = (Date.now() - started) / 1000;

  let failed = false;
  if (broker) {
    const deadline = Date.now() + 30_000;
    while (broker.connections.size > 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (broker.connections.size > 2) {
      console.log(`FAIL: ${broker.connections.size - 2} fuzz connections left open`);
      failed = true;
    }
  }
  const report = await pair.stop();
  console.log(JSON.stringify({ seed, fuzz: fuzzStats, pair: report, broker: broker?.stats }, null, 1));
  let internalErrors: number | undefined;
  let rssAfter: number | undefined;
  let packetsReceived: number | undefined;
  if (broker) {
    internalErrors = Object.values(broker.stats.internalErrors).reduce((a, b) => a + b, 0);
    packetsReceived = Object.values(broker.stats.packetsReceived).reduce((a, b) => a + b, 0);
    rssAfter = process.memoryUsage().rss;
  } else if (values.metrics) {
    await new Promise((r) => setTimeout(r, 10_000)); // let the fuzzed sessions expire (start the broker with a short EDB_MAX_SESSION_EXPIRY)
    const m = await scrape(values.metrics);
    internalErrors = m.internalErrors;
    rssAfter = m.rss;
    packetsReceived = m.packetsReceived;
  }
  const mib = (n: number | undefined): number | undefined => (n === undefined ? undefined : Math.round(n / 1048576));
  console.log(
    'summary ' +
      JSON.stringify({ seed, seconds: Math.round(fuzzSeconds), connections: fuzzStats.connections, packetsSent: fuzzStats.packets, packetsReceivedByBroker: packetsReceived, internalErrors, watchdogMisses: report.missing, watchdogDisconnects: report.disconnects, rssBeforeMiB: mib(rssBefore), rssAfterMiB: mib(rssAfter) }),
  );
  if (internalErrors !== undefined && internalErrors > 0) {
    console.log(`FAIL: ${internalErrors} internal errors`);
    failed = true;
  }
  if (report.missing > 0 || report.disconnects > 0 || report.errors.length > 0) {
    console.log('FAIL: the well-behaved pair was disturbed');
    failed = true;
  }
  // memory: the last third of the samples should not sit far above the first third
  if (rssSamples.length >= 6) {
    const third = Math.floor(rssSamples.length / 3);
    const avg = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const early = avg(rssSamples.slice(0, third));
    const late = avg(rssSamples.slice(-third));
    console.log(`rss: early ${Math.round(early / 1048576)} MiB, late ${Math.round(late / 1048576)} MiB`);
    if (late > early * 1.5 + 64 * 1048576) {
      console.log('FAIL: memory kept growing');
      failed = true;
    }
  }
  await stopLocal?.();
  console.log(failed ? `FAILED (seed ${seed})` : `OK (seed ${seed})`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
