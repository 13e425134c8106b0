/**
 * Inbound bridge rate (issue 11): how fast QoS 1 and QoS 2 messages come IN over a bridge
 * from a local mosquitto into an `edb start` process with durable storage, where a persistent
 * local session (offline) subscribes to them, so that each message must be in the durable log
 * before the bridge acknowledges it to the remote (PUBACK, PUBREC).
 *
 *   node dist/bench/bridge-in.js [--messages 3000] [--runs 3] [--version 5|3.1.1] [--qos 1|2]
 *
 * Per trial and QoS: the bridge is pointed at a closed port (PUT /api/bridges/in, its session on
 * mosquitto stays), `messages` numbered messages are published to mosquitto (queued there for
 * the bridge's persistent session), the bridge is pointed back at mosquitto, and the time from
 * its connection to the last message counted in (`messagesIn` of GET /api/bridges) gives the
 * rate. At the end the local session connects and checks it got every message once, in order.
 * Prints a Markdown block for bench/RESULTS.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { freePort, stopChild, waitPort } from './net.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const MESSAGES = Number(opt('messages', '3000'));
const RUNS = Number(opt('runs', '3'));
const VERSION = opt('version', '5');
const QOS = args.includes('--qos') ? [Number(opt('qos', '1')) as 1 | 2] : ([1, 2] as const);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface BridgeRow {
  name: string;
  state: string;
  messagesIn: number;
  inAwaitingAck?: number;
}

async function main(): Promise<void> {
  const load0 = loadavg();
  const remotePort = await freePort();
  const closedPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'edb-bench-in-'));
  const conf = join(dir, 'm.conf');
  writeFileSync(conf, ['per_listener_settings false', 'persistence false', process.env['BENCH_MOSQ_LOG'] ? `log_dest file ${process.env['BENCH_MOSQ_LOG']}\nlog_type all` : 'log_dest none', 'max_queued_messages 2000000', `max_inflight_messages ${process.env['BENCH_MOSQ_INFLIGHT'] ?? '0'}`, 'allow_anonymous true', `listener ${remotePort} 127.0.0.1`, ...(process.getuid?.() === 0 ? ['user root'] : [])].join('\n') + '\n');
  const remote = spawn('mosquitto', ['-c', conf], { stdio: 'ignore' });
  await waitPort(remotePort);

  const port = await freePort();
  const httpPort = await freePort();
  const lines = QOS.map((q) => `bench/q${q}/# in ${q}`);
  const bridgeBody = (url: string) => ({ url, topics: lines, protocolVersion: VERSION, reconnectMin: '100ms', reconnectMax: '300ms' });
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    EDB_MQTT_PORT: String(port),
    EDB_HTTP_PORT: String(httpPort),
    EDB_MQTTS_PORT: '-1',
    EDB_WS_PORT: '-1',
    EDB_WSS_PORT: '-1',
    EDB_RULES_PORT: '-1',
    EDB_LOG_LEVEL: 'warn',
    EDB_STORAGE: 'durable',
    EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-bench-in-data-')),
  };
  const edb = spawn(process.execPath, [CLI, 'start'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  await waitPort(httpPort);
  const api = `http://127.0.0.1:${httpPort}/api/bridges`;
  const put = async (url: string) => {
    const res = await fetch(`${api}/in`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(bridgeBody(url)) });
    if (!res.ok) throw new Error(`PUT ${res.status} ${await res.text()}`);
  };
  const row = async () => ((await (await fetch(`${api}/in`)).json()) as BridgeRow);
  const post = await fetch(api, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'in', ...bridgeBody(`mqtt://127.0.0.1:${remotePort}`) }) });
  if (!post.ok) throw new Error(`POST ${post.status} ${await post.text()}`);

  // the persistent local session that wants them (offline: each must be stored before its ack)
  const sessionOpts = { port, host: '127.0.0.1', clientId: 'bench-local', clean: false, protocolVersion: 5 as const, properties: { sessionExpiryInterval: 3600 }, reconnectPeriod: 0 };
  const local = await mqtt.connectAsync(sessionOpts);
  for (const q of QOS) await local.subscribeAsync(`bench/q${q}/#`, { qos: q });
  await local.endAsync();

  while ((await row()).state !== 'connected') await sleep(50);
  await sleep(500); // its subscriptions on mosquitto
  const publisher = await mqtt.connectAsync({ port: remotePort, host: '127.0.0.1', reconnectPeriod: 0 });
  const results: Record<number, number[]> = {};
  const expected: Record<number, number> = {};
  for (let run = 0; run < RUNS; run++) {
    for (const q of QOS) {
      await put(`mqtt://127.0.0.1:${closedPort}`);
      while ((await row()).state === 'connected') await sleep(20);
      // queued on mosquitto for the bridge's session while it is away
      const base = expected[q] ?? 0;
      const sends: Promise<unknown>[] = [];
      for (let i = 0; i < MESSAGES; i++) sends.push(publisher.publishAsync(`bench/q${q}/t`, String(base + i), { qos: q }));
      await Promise.all(sends);
      if (process.env['BENCH_VERBOSE']) process.stderr.write(`QoS ${q}: ${MESSAGES} published to mosquitto\n`);
      expected[q] = base + MESSAGES;
      const before = (await row()).messagesIn;
      await put(`mqtt://127.0.0.1:${remotePort}`);
      let t0 = 0;
      const deadline = Date.now() + 120_000;
      for (;;) {
        const r = await row();
        if (!t0 && r.state === 'connected') t0 = performance.now();
        // every one counted in and acknowledged to mosquitto (stored here); inAwaitingAck is
        // undefined on builds that acknowledge each before taking the next
        if (r.messagesIn - before >= MESSAGES && !r.inAwaitingAck) break;
        if (Date.now() > deadline) throw new Error(`only ${r.messagesIn - before} of ${MESSAGES} came in`);
        if (process.env['BENCH_VERBOSE'] && Math.random() < 0.01) process.stderr.write(`${r.state} ${r.messagesIn - before}\n`);
        await sleep(10);
      }
      const rate = MESSAGES / ((performance.now() - t0) / 1000);
      (results[q] ??= []).push(rate);
      process.stderr.write(`run ${run + 1} QoS ${q}: ${fmt(rate)} msgs/s in\n`);
    }
  }
  await publisher.endAsync();

  // the local session: every message once, in order
  const got: Record<number, number[]> = {};
  // (the handler before the CONNACK: the stored messages follow it in the same read)
  const check = mqtt.connect({ ...sessionOpts });
  check.on('message', (topic, p) => (got[Number(topic.slice('bench/q'.length, 'bench/q'.length + 1))] ??= []).push(Number(p.toString())));
  await new Promise<void>((resolve, reject) => check.once('connect', () => resolve()).once('error', reject));
  const deadline = Date.now() + 120_000;
  while (QOS.some((q) => (got[q]?.length ?? 0) < expected[q]!) && Date.now() < deadline) await sleep(50);
  await sleep(500);
  await check.endAsync();
  const verdict = QOS.map((q) => {
    const list = got[q] ?? [];
    const inOrder = list.every((n, i) => n === i);
    const distinct = new Set(list);
    const missing = Array.from({ length: expected[q]! }, (_, i) => i).filter((i) => !distinct.has(i));
    const detail = inOrder && list.length === expected[q] ? 'each once, in order' : `NOT each once in order (${distinct.size} distinct, missing ${missing.slice(0, 10).join(',')}${missing.length > 10 ? '...' : ''}; first out of place at ${list.findIndex((n, i) => n !== i)})`;
    return `QoS ${q}: ${fmt(list.length)} of ${fmt(expected[q]!)} delivered to the local session, ${detail}`;
  });
  await stopChild(edb);
  await stopChild(remote);
  const load1 = loadavg();

  const out: string[] = [];
  out.push(`Command: \`node dist/bench/bridge-in.js${args.length ? ' ' + args.join(' ') : ''}\`  `);
  out.push(`Date: ${new Date().toISOString()}  `);
  out.push(`Load average (1 min) at start ${load0[0]!.toFixed(1)}, at end ${load1[0]!.toFixed(1)} on 2 cores  `);
  out.push(`${fmt(MESSAGES)} messages per trial queued on mosquitto, MQTT ${VERSION} on the link, durable storage, a persistent local session (offline) subscribed; median of ${RUNS}.`);
  out.push('');
  out.push('| in | msgs/s (median) | trials |');
  out.push('|---|---:|---|');
  for (const q of QOS) out.push(`| QoS ${q} | ${fmt(median(results[q]!))} | ${results[q]!.map(fmt).join(' / ')} |`);
  out.push('');
  out.push(verdict.join('; ') + '.');
  process.stdout.write(out.join('\n') + '\n');
}

await main();
