#!/usr/bin/env node
// Smoke test of a built checkout (`npm ci` done), run on the machine under test, e.g. inside an
// emulated ARM rootfs by scripts/arm-smoke.sh. Real processes, real clients (MQTT.js):
//   1. `edb start` with MQTT/TCP, MQTT/WebSocket, HTTP and the rules API on free ports;
//   2. MQTT over TCP and over WebSocket: a subscriber on one transport gets a message
//      published on the other; a retained message is stored;
//   3. a rule (a filter uploaded to the rules API, compiled to WebAssembly) republishes a message;
//   4. the state store: `edb state set` then `edb state get` (the CLI, MQTT v5);
//   5. SIGTERM (EDB_STORAGE=memory for steps 1-5): the broker writes its backup and exits 0; started again, the retained message,
//      the state-store key and the rules document are back;
//   6. EDB_STORAGE=durable (lmdb, a native addon): SET/GET, restart, GET.
// Prints one line per step and a JSON summary (engine of each listener, Node, arch, times);
// exits 1 at the first failure.   Usage: node scripts/smoke.mjs [--timeout-scale N]
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, arch } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli/main.js');
const scaleAt = process.argv.indexOf('--timeout-scale');
const SCALE = scaleAt > 0 ? Number(process.argv[scaleAt + 1]) : 1; // emulation is ~20x slower
const summary = { node: process.version, arch: arch(), steps: {}, engines: {} };
const t0 = performance.now();
let current;

function step(name) {
  current = { name, at: performance.now() };
  process.stdout.write(`smoke: ${name} ... `);
}
function done(extra = '') {
  const ms = Math.round(performance.now() - current.at);
  summary.steps[current.name] = ms;
  process.stdout.write(`ok (${ms} ms)${extra ? ` ${extra}` : ''}\n`);
}
function fail(err) {
  process.stdout.write(`FAILED\nsmoke: ${current?.name ?? 'setup'}: ${err?.stack ?? err}\n`);
  summary.failed = current?.name ?? 'setup';
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exit(1);
}
const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms).unref())]);

/** `edb start` with every listener on port 0; resolves once all have logged their port. */
function startBroker(dataDir, extraEnv = {}) {
  const child = spawn(process.execPath, [CLI, 'start'], {
    env: { ...process.env, EDB_DATA_DIR: dataDir, EDB_MQTT_PORT: '0', EDB_WS_PORT: '0', EDB_HTTP_PORT: '0', EDB_RULES_PORT: '0', EDB_MQTTS_PORT: '-1', EDB_WSS_PORT: '-1', EDB_LOG_FORMAT: 'json', EDB_LOG_LEVEL: 'info', ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = [];
  const ports = {};
  const engines = {};
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const ready = new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const rec = JSON.parse(line);
          logs.push(rec);
          if (typeof rec.listener === 'string' && typeof rec.port === 'number' && /^listening: /.test(rec.msg)) {
            ports[rec.listener] = rec.port;
            engines[rec.listener] = rec.engine;
          }
          if (rec.fallbackReason) engines.fallbackReason = rec.fallbackReason;
        } catch {
          /* not JSON */
        }
      }
      if (['mqtt', 'ws', 'http', 'rules'].every((l) => l in ports)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`broker exited with ${code}: ${stderr}`)));
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, logs, ports, engines, ready, exited, stderr: () => stderr };
}

async function stopBroker(b) {
  b.child.kill('SIGTERM');
  const r = await withTimeout(b.exited, 60_000 * SCALE, 'SIGTERM');
  if (r.code !== 0) throw new Error(`broker exited with ${r.code ?? r.signal} on SIGTERM: ${b.stderr()}`);
}

function connect(url, options = {}) {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 30_000 * SCALE, ...options });
  return withTimeout(new Promise((resolve, reject) => { client.once('connect', () => resolve(client)); client.once('error', reject); }), 30_000 * SCALE, `connect ${url}`);
}

function nextMessage(client, topic) {
  return new Promise((resolve) => {
    const on = (t, payload, packet) => {
      if (t !== topic) return;
      client.off('message', on);
      resolve({ payload: payload.toString(), packet });
    };
    client.on('message', on);
  });
}

function edb(args, env) {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 60_000 * SCALE }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const DOC = { filters: [{ topic: 'smoke/#', subtopic: 'alert/', statements: [{ condition: '$temperature >= 45', new_payload: 'hot' }] }] };
const dirs = [];

try {
  const data = mkdtempSync(join(tmpdir(), 'edb-smoke-'));
  dirs.push(data);

  step('start (every listener)');
  let b = startBroker(data, { EDB_STORAGE: 'memory' });
  await withTimeout(b.ready, 120_000 * SCALE, 'start');
  summary.engines = { ...b.engines };
  done(JSON.stringify(b.engines));

  step('MQTT over TCP and WebSocket');
  const tcp = await connect(`mqtt://127.0.0.1:${b.ports.mqtt}`, { clientId: 'smoke-tcp' });
  const ws = await connect(`ws://127.0.0.1:${b.ports.ws}/mqtt`, { clientId: 'smoke-ws', protocolVersion: 5 });
  await tcp.subscribeAsync('smoke/#', { qos: 1 });
  await ws.subscribeAsync('smoke/#', { qos: 1 });
  let toTcp = nextMessage(tcp, 'smoke/from-ws');
  await ws.publishAsync('smoke/from-ws', 'hello over websocket', { qos: 1 });
  if ((await withTimeout(toTcp, 10_000 * SCALE, 'ws -> tcp')).payload !== 'hello over websocket') throw new Error('wrong payload ws -> tcp');
  const toWs = nextMessage(ws, 'smoke/from-tcp');
  await tcp.publishAsync('smoke/from-tcp', 'hello over tcp', { qos: 1 });
  if ((await withTimeout(toWs, 10_000 * SCALE, 'tcp -> ws')).payload !== 'hello over tcp') throw new Error('wrong payload tcp -> ws');
  await tcp.publishAsync('smoke/retained', 'kept', { qos: 1, retain: true });
  done();

  step('a rule (upload, compile, fire)');
  const res = await withTimeout(fetch(`http://127.0.0.1:${b.ports.rules}/`, { method: 'POST', body: JSON.stringify(DOC), headers: { 'content-type': 'application/json' } }), 300_000 * SCALE, 'rules upload');
  const body = await res.text();
  if (res.status !== 200) throw new Error(`rules upload: HTTP ${res.status} ${body}`);
  const alert = nextMessage(ws, 'smoke/room/alert/');
  await tcp.publishAsync('smoke/room', JSON.stringify({ temperature: 50 }), { qos: 1 });
  const fired = await withTimeout(alert, 10_000 * SCALE, 'rule output');
  if (fired.payload !== 'hot') throw new Error(`rule output ${fired.payload}`);
  done(`compileMillis ${JSON.parse(body).compileMillis}`);

  step('state store SET/GET (edb state)');
  const url = { EDB_STATE_URL: `mqtt://127.0.0.1:${b.ports.mqtt}` };
  const urlArg = ['--url', `mqtt://127.0.0.1:${b.ports.mqtt}`];
  let r = await edb(['state', 'set', 'smoke:key', 'smoke-value', ...urlArg], url);
  if (r.code !== 0) throw new Error(`edb state set: ${r.code} ${r.stdout}${r.stderr}`);
  r = await edb(['state', 'get', 'smoke:key', ...urlArg], url);
  if (r.code !== 0 || !r.stdout.includes('smoke-value')) throw new Error(`edb state get: ${r.code} ${r.stdout}${r.stderr}`);
  done();

  step('SIGTERM: backup, exit 0');
  await tcp.endAsync();
  await ws.endAsync();
  await stopBroker(b);
  if (!b.logs.some((l) => /backup written/.test(l.msg ?? ''))) throw new Error('no "backup written" log line');
  done();

  step('restart: retained, state and rules restored');
  b = startBroker(data, { EDB_STORAGE: 'memory' });
  await withTimeout(b.ready, 120_000 * SCALE, 'restart');
  const again = await connect(`mqtt://127.0.0.1:${b.ports.mqtt}`, { clientId: 'smoke-again' });
  const kept = nextMessage(again, 'smoke/retained');
  await again.subscribeAsync('smoke/#', { qos: 1 });
  if ((await withTimeout(kept, 10_000 * SCALE, 'retained after restart')).payload !== 'kept') throw new Error('retained message lost');
  r = await edb(['state', 'get', 'smoke:key', '--url', `mqtt://127.0.0.1:${b.ports.mqtt}`]);
  if (r.code !== 0 || !r.stdout.includes('smoke-value')) throw new Error(`state after restart: ${r.code} ${r.stdout}${r.stderr}`);
  const alert2 = nextMessage(again, 'smoke/room/alert/');
  await again.publishAsync('smoke/room', JSON.stringify({ temperature: 99 }), { qos: 1 });
  if ((await withTimeout(alert2, 10_000 * SCALE, 'rule after restart')).payload !== 'hot') throw new Error('rule lost');
  await again.endAsync();
  await stopBroker(b);
  done();

  step('EDB_STORAGE=durable (lmdb): SET, restart, GET');
  const durable = mkdtempSync(join(tmpdir(), 'edb-smoke-durable-'));
  dirs.push(durable);
  b = startBroker(durable, { EDB_STORAGE: 'durable' });
  await withTimeout(b.ready, 120_000 * SCALE, 'start durable');
  r = await edb(['state', 'set', 'smoke:durable', 'on-disk', '--url', `mqtt://127.0.0.1:${b.ports.mqtt}`]);
  if (r.code !== 0) throw new Error(`durable set: ${r.code} ${r.stdout}${r.stderr}`);
  b.child.kill('SIGKILL'); // no backup: the value must come from the storage itself
  await b.exited;
  b = startBroker(durable, { EDB_STORAGE: 'durable' });
  await withTimeout(b.ready, 120_000 * SCALE, 'restart durable');
  r = await edb(['state', 'get', 'smoke:durable', '--url', `mqtt://127.0.0.1:${b.ports.mqtt}`]);
  if (r.code !== 0 || !r.stdout.includes('on-disk')) throw new Error(`durable get after SIGKILL: ${r.code} ${r.stdout}${r.stderr}`);
  await stopBroker(b);
  done();

  summary.totalMs = Math.round(performance.now() - t0);
  summary.ok = true;
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} catch (err) {
  fail(err);
} finally {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
