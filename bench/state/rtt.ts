// State-store GET/SET round trips over MQTT 5 against redis-server GET/SET, in one run,
// with the same number of concurrent clients. Each client runs a closed loop (one request
// in flight): SET its key (16 bytes) to a 100-byte value, GET it back, repeat.
//   npm run build && node dist/bench/state/rtt.js            (CLIENTS=50 SECONDS=10 ROUNDS=3)
// Both sides use minimal clients over node:net (pre-encoded requests, answers framed by
// hand), so the client costs are alike and the servers are what is compared. The broker
// and redis-server each run as a process of their own.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import mqttPacket from 'mqtt-packet';
import { encodeRequest } from '../../src/state/resp.js';
import { INVOKE_TOPIC } from '../../src/state/protocol.js';
import { freePort } from '../net.js';

const CLIENTS = Number(process.env['CLIENTS'] ?? 50);
const SECONDS = Number(process.env['SECONDS'] ?? 10);
const ROUNDS = Number(process.env['ROUNDS'] ?? 3);
const VALUE = Buffer.alloc(100, 0x76);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

async function startBroker(): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [CLI, 'start'], {
    env: { ...process.env, EDB_MQTT_PORT: '0', EDB_MQTTS_PORT: '-1', EDB_WS_PORT: '-1', EDB_WSS_PORT: '-1', EDB_HTTP_PORT: '-1', EDB_RULES_PORT: '-1', EDB_LOG_FORMAT: 'json', EDB_LOG_LEVEL: 'info', EDB_BACKUP: 'false', EDB_SYS_INTERVAL: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"listener":"mqtt"[^\n]*"port":(\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`broker exited ${code}`)));
  });
  child.stdout!.resume();
  return { child, port };
}

/** FLOOR=1: a bare Node server (floor-server.ts) in place of Redis. */
async function startFloor(): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./floor-server.js', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  return { child, port };
}

async function startRedis(): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return { child, port };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('redis-server did not start');
}

interface Loop {
  count: number;
  latencies: number[];
}

/** A closed-loop Redis client: SET, GET, SET, ... counting answers. */
function redisClient(port: number, id: number, stop: { at: number }, loop: Loop): Promise<void> {
  return new Promise((resolve, reject) => {
    const key = Buffer.from(`bench:${String(id).padStart(10, '0')}`);
    const setCmd = encodeRequest(['SET', key, VALUE]);
    const getCmd = encodeRequest(['GET', key]);
    const s: Socket = connect(port, '127.0.0.1');
    s.setNoDelay(true);
    let pending: Buffer = Buffer.alloc(0);
    let isSet = true;
    let sent = 0;
    const send = () => {
      sent = performance.now();
      s.write(isSet ? setCmd : getCmd);
    };
    s.on('connect', send);
    s.on('data', (d: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, d]) : d;
      // a whole answer: "+OK\r\n" or "$100\r\n<100 bytes>\r\n"
      const need = isSet ? 5 : 6 + VALUE.length + 2;
      if (pending.length < need) return;
      pending = pending.subarray(need);
      loop.count++;
      loop.latencies.push(performance.now() - sent);
      isSet = !isSet;
      if (performance.now() >= stop.at) {
        s.end();
        resolve();
      } else send();
    });
    s.on('error', reject);
  });
}

/**
 * A closed-loop MQTT 5 state-store client. CONNECT and SUBSCRIBE go through mqtt-packet;
 * the request PUBLISHes are encoded once and patched (packet id, correlation data), and
 * answers are framed by hand, so the client costs about what the Redis one does.
 */
function mqttClient(port: number, id: number, stop: { at: number }, loop: Loop): Promise<void> {
  return new Promise((resolve, reject) => {
    const clientId = `bench-${id}`;
    const key = Buffer.from(`bench:${String(id).padStart(10, '0')}`);
    const responseTopic = `clients/${clientId}/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response`;
    const opts = { protocolVersion: 5 as const };
    const MARK = Buffer.from([0xc0, 0xff, 0xee, 0x00, 0x00, 0x00, 0x00, 0x00]);
    // Each template is the PUBACK of the previous answer (4 bytes) followed by the request, so
    // the acknowledgement and the next request leave in one write, as the Redis client's one
    // command does; the first request of a loop skips the PUBACK.
    const template = (payload: Buffer) => {
      const request = mqttPacket.generate(
        { cmd: 'publish', topic: INVOKE_TOPIC, payload, qos: 1, messageId: 0x7e7e, retain: false, dup: false, properties: { responseTopic, correlationData: MARK, userProperties: { __ts: `${String(Date.now()).padStart(15, '0')}:00000:${clientId}` } } },
        opts,
      );
      const bytes = Buffer.concat([Buffer.from([0x40, 0x02, 0, 0]), request]);
      return { bytes, request: bytes.subarray(4), idAt: 4 + request.indexOf(Buffer.from([0x7e, 0x7e])), corrAt: 4 + request.indexOf(MARK) };
    };
    const setT = template(encodeRequest(['SET', key, VALUE]));
    const getT = template(encodeRequest(['GET', key]));
    const s = connect(port, '127.0.0.1');
    s.setNoDelay(true);
    let messageId = 0;
    let isSet = true;
    let sent = 0;
    let seq = 0;
    const expect = Buffer.from(MARK);
    /** Sends the next request, after the PUBACK of answer `ackId` (0: none). */
    const send = (ackId: number) => {
      sent = performance.now();
      const t = isSet ? setT : getT;
      messageId = (messageId % 65000) + 1;
      t.bytes.writeUInt16BE(messageId, t.idAt);
      seq++;
      t.bytes.writeUInt32BE(seq, t.corrAt + 4);
      expect.writeUInt32BE(seq, 4);
      if (ackId === 0) s.write(t.request);
      else {
        t.bytes.writeUInt16BE(ackId, 2);
        s.write(t.bytes);
      }
    };
    let buf: Buffer = Buffer.alloc(0);
    let ready = false;
    const parser = mqttPacket.parser(opts);
    parser.on('packet', (p) => {
      if (p.cmd === 'connack') s.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: responseTopic, qos: 1 }] }, opts));
      else if (p.cmd === 'suback') {
        ready = true;
        send(0);
      }
    });
    parser.on('error', reject);
    s.on('data', (d: Buffer) => {
      if (!ready) return void parser.parse(d);
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        if (buf.length < 2) return;
        // fixed header: type, remaining length (variable byte integer)
        let len = 0;
        let mult = 1;
        let i = 1;
        for (;;) {
          if (i >= buf.length) return;
          const b = buf[i++]!;
          len += (b & 0x7f) * mult;
          mult *= 128;
          if (!(b & 0x80)) break;
        }
        if (buf.length < i + len) return;
        const packet = buf.subarray(0, i + len);
        buf = buf.subarray(i + len);
        if (packet[0]! >> 4 !== 3) continue; // only PUBLISH matters (PUBACKs are ignored)
        const topicLen = packet.readUInt16BE(i);
        const pid = packet.readUInt16BE(i + 2 + topicLen);
        if (packet.indexOf(expect, i + 4 + topicLen) < 0) {
          s.write(Buffer.from([0x40, 0x02, pid >> 8, pid & 0xff]));
          continue;
        }
        loop.count++;
        loop.latencies.push(performance.now() - sent);
        isSet = !isSet;
        if (performance.now() >= stop.at) {
          s.write(Buffer.from([0x40, 0x02, pid >> 8, pid & 0xff]));
          s.end(mqttPacket.generate({ cmd: 'disconnect' }, opts));
          resolve();
          return;
        }
        send(pid);
      }
    });
    s.on('connect', () => s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId, keepalive: 60 }, opts)));
    s.on('error', reject);
  });
}

/** CPU seconds a process has used (user + system), from /proc; NaN where unavailable. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

async function measure(name: string, port: number, client: typeof redisClient, pid?: number): Promise<{ rate: number; p50: number; p99: number }> {
  const loop: Loop = { count: 0, latencies: [] };
  // warm-up second, not counted
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(port, i, { at: performance.now() + 1000 }, { count: 0, latencies: [] })));
  const cpu0 = cpuSeconds(pid);
  const client0 = process.cpuUsage();
  const start = performance.now();
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(port, i, { at: start + SECONDS * 1000 }, loop)));
  const elapsed = (performance.now() - start) / 1000;
  const cpuPerRequest = ((cpuSeconds(pid) - cpu0) / loop.count) * 1e6;
  const c = process.cpuUsage(client0);
  const clientCpu = (c.user + c.system) / loop.count;
  const sorted = loop.latencies.sort((a, b) => a - b);
  const r = { rate: loop.count / elapsed, p50: sorted[Math.floor(sorted.length * 0.5)]!, p99: sorted[Math.floor(sorted.length * 0.99)]! };
  const cpu = `${Number.isNaN(cpuPerRequest) ? '' : `   server CPU ${cpuPerRequest.toFixed(1)} µs/req`}   client CPU ${clientCpu.toFixed(1)} µs/req`;
  console.log(`  ${name.padEnd(12)} ${Math.round(r.rate).toLocaleString('en').padStart(9)} req/s   p50 ${r.p50.toFixed(2)} ms   p99 ${r.p99.toFixed(2)} ms${cpu}`);
  return r;
}

// EDB_PORT / REDIS_PORT: measure servers that are already running instead
const broker = process.env['EDB_PORT'] ? { child: undefined, port: Number(process.env['EDB_PORT']) } : await startBroker();
const redis = process.env['REDIS_PORT'] ? { child: undefined, port: Number(process.env['REDIS_PORT']) } : process.env['FLOOR'] ? await startFloor() : await startRedis();
const peer = process.env['FLOOR'] ? 'node floor' : 'redis';
try {
  console.log(`GET/SET round trips, ${CLIENTS} concurrent clients, ${SECONDS} s per round, ${ROUNDS} rounds (alternating)`);
  const ratios: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const e = await measure('edb (MQTT)', broker.port, mqttClient, broker.child?.pid);
    const r = await measure(peer, redis.port, redisClient, redis.child?.pid);
    ratios.push(e.rate / r.rate);
  }
  ratios.sort((a, b) => a - b);
  console.log(`edb / ${peer}: median ${ratios[Math.floor(ratios.length / 2)]!.toFixed(2)} (rounds: ${ratios.map((x) => x.toFixed(2)).join(', ')})   [target >= 0.50]`);
} finally {
  broker.child?.kill('SIGTERM');
  redis.child?.kill('SIGTERM');
}
