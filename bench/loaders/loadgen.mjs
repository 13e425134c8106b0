// Copied from the shared lean loaders (loadgen2.mjs) so the project stands alone.
// Lean broker-agnostic MQTT 3.1.1 load generator.
// Unlike a loader that builds every packet with mqtt-packet, it builds each PUBLISH once and patches a timestamp in place, and it
// reads replies with a minimal frame counter instead of a full parser, so the loader costs
// little CPU next to the broker on a 2-core machine. Same code for every broker.
// Usage: node loadgen2.mjs --port P [--scenario fanin|fanout] [--pubs 4] [--subs 1]
//        [--msgs 200000] [--size 64] [--qos 0|1] [--window 500] [--batch 32]
// window: most messages a publisher keeps not yet received by (all) subscribers (closed loop).
// Prints one JSON line: msgsPerSec (deliveries per second), p50ms/p99ms, loss.
import net from 'node:net';
import { EventEmitter } from 'node:events';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, arr) => {
  if (v.startsWith('--')) a.push([v.slice(2), arr[i + 1]]);
  return a;
}, []));
const host = args.host ?? '127.0.0.1';
const port = Number(args.port ?? 1883);
const scenario = args.scenario ?? 'fanin';
const pubs = Number(args.pubs ?? (scenario === 'fanout' ? 1 : 4));
const subs = Number(args.subs ?? (scenario === 'fanout' ? 50 : 1));
const msgs = Number(args.msgs ?? 200000);
const size = Math.max(16, Number(args.size ?? 64));
const qos = Number(args.qos ?? 0);
const window = Number(args.window ?? 500);
const batch = Number(args.batch ?? 32);
const timeoutMs = Number(args.timeout ?? 60000);
const prefix = args.topic ?? 'lg2';

function remLen(n) { const o = []; do { let b = n % 128; n = Math.floor(n / 128); if (n) b |= 128; o.push(b); } while (n); return Buffer.from(o); }
function str(s) { const b = Buffer.from(s); const l = Buffer.alloc(2); l.writeUInt16BE(b.length); return Buffer.concat([l, b]); }
function packet(type, body) { return Buffer.concat([Buffer.from([type]), remLen(body.length), body]); }
function connectPkt(id) {
  const vh = Buffer.concat([str('MQTT'), Buffer.from([4, 0x02, 0, 120])]);
  return packet(0x10, Buffer.concat([vh, str(id)]));
}
function subscribePkt(filter, q) { return packet(0x82, Buffer.concat([Buffer.from([0, 1]), str(filter), Buffer.from([q])])); }
function publishPkt(topic, q) {
  const body = Buffer.concat([str(topic), q ? Buffer.from([0, 1]) : Buffer.alloc(0), Buffer.alloc(size, 120)]);
  const p = packet(0x30 | (q << 1), body);
  return { buf: p, tsOff: p.length - size, idOff: q ? p.length - size - 2 : -1 };
}

// Minimal frame reader: calls onPkt(type, buf, start, end) for each complete packet.
function reader(onPkt) {
  let pending = null;
  return (chunk) => {
    let b = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = null;
    let i = 0;
    while (i < b.length) {
      if (b.length - i < 2) break;
      let mul = 1, len = 0, j = i + 1, ok = false;
      while (j < b.length && j < i + 5) { const c = b[j++]; len += (c & 127) * mul; mul *= 128; if (!(c & 128)) { ok = true; break; } }
      if (!ok || j + len > b.length) break;
      onPkt(b[i] >> 4, b, j, j + len, b[i]);
      i = j + len;
    }
    if (i < b.length) pending = Buffer.from(b.subarray(i));
  };
}

// --ws URL: MQTT over WebSocket (binary frames, sub-protocol mqtt) with the same socket surface as net.Socket
let WS = null;
if (args.ws) WS = (await import('ws')).default;
function wsSocket(url) {
  const w = new WS(url, 'mqtt', { perMessageDeflate: false });
  const ee = new EventEmitter(); const queued = [];
  w.binaryType = 'nodebuffer';
  w.on('message', (d) => ee.emit('data', d));
  w.on('error', (e) => ee.emit('error', e));
  w.on('open', () => { for (const b of queued) w.send(b); queued.length = 0; });
  ee.write = (buf) => {
    if (w.readyState !== 1) { queued.push(buf); return true; }
    w.send(buf);
    if (w.bufferedAmount > (1 << 20)) { const t = setInterval(() => { if (w.bufferedAmount < (1 << 19)) { clearInterval(t); ee.emit('drain'); } }, 1); return false; }
    return true;
  };
  ee.destroy = () => w.terminate(); ee.setNoDelay = () => {};
  return ee;
}

function connect(id, onPkt) {
  return new Promise((resolve, reject) => {
    const sock = args.ws ? wsSocket(args.ws) : net.connect({ host, port });
    sock.setNoDelay(true);
    let ready = false;
    const c = { sock, onPkt };
    sock.on('data', reader((t, b, s, e, h) => {
      if (!ready) { if (t === 2) { if (b[s + 1] !== 0) reject(new Error('connack ' + b[s + 1])); ready = true; resolve(c); } return; }
      c.onPkt(t, b, s, e, h);
    }));
    sock.on('error', reject);
    sock.write(connectPkt(id));
  });
}

const now = () => performance.now();
const hr = () => Number(process.hrtime.bigint() / 1000n) / 1000; // ms, monotonic, same clock across processes

async function main() {
  const expectedPer = scenario === 'fanout' ? subs : 1;
  const expected = msgs * expectedPer;
  let received = 0, first = 0, last = 0;
  const lat = [];
  let done; const finished = new Promise((r) => { done = r; });
  const perPubRecv = new Array(pubs).fill(0);
  const wake = [];
  // wake a publisher at most once per event-loop turn, so it writes one batch per turn, not one message per receipt
  const scheduled = new Array(pubs).fill(false);
  const wakeSoon = (i) => { if (scheduled[i] || !wake[i]) return; scheduled[i] = true; setImmediate(() => { scheduled[i] = false; const w = wake[i]; if (w) { wake[i] = null; w(); } }); };
  const subConns = [];
  for (let i = 0; i < subs; i++) {
    const c = await connect(`lg2-sub-${process.pid}-${i}`, () => {});
    await new Promise((r) => { c.onPkt = (t) => { if (t === 9) r(); }; c.sock.write(subscribePkt(scenario === 'fanin' ? `${prefix}/#` : `${prefix}/t0`, qos)); });
    const puback = Buffer.from([0x40, 2, 0, 0]);
    c.onPkt = (t, b, s, e, h) => {
      if (t !== 3) return;
      const tl = b.readUInt16BE(s);
      let p = s + 2 + tl;
      const q = (h >> 1) & 3;
      if (q) { puback[2] = b[p]; puback[3] = b[p + 1]; c.sock.write(Buffer.from(puback)); p += 2; }
      const tt = now(); if (!first) first = tt; last = tt;
      const pubIdx = b[s + 2 + tl - 1] - 48; // topic ends in a digit: the publisher's index
      if ((received & 63) === 0 && e - p >= 8) lat.push(hr() - b.readDoubleLE(p));
      received++;
      if (pubIdx >= 0 && pubIdx < pubs) { perPubRecv[pubIdx]++; wakeSoon(pubIdx); }
      if (received >= expected) done();
    };
    subConns.push(c);
  }
  const pubConns = [];
  for (let i = 0; i < pubs; i++) pubConns.push(await connect(`lg2-pub-${process.pid}-${i}`, () => {}));
  await new Promise((r) => setTimeout(r, 200));

  const perPub = Math.ceil(msgs / pubs);
  const start = now();
  const timer = setTimeout(() => done(), timeoutMs);
  const pumping = Promise.all(pubConns.map((c, idx) => new Promise((resolve) => {
    const tpl = publishPkt(scenario === 'fanin' ? `${prefix}/in/${idx}` : `${prefix}/t0`, qos);
    let sent = 0, acked = 0, mid = 0;
    c.onPkt = (ty) => { if (ty === 4) { acked++; wakeSoon(idx); } };
    const recvOf = () => scenario === 'fanin' ? perPubRecv[idx] : Math.floor(perPubRecv[0] / expectedPer);
    const pump = () => {
      let ok = true;
      while (ok && sent < perPub) {
        const outstanding = sent - recvOf();
        if (outstanding >= window || (qos && sent - acked >= Math.min(window, 64))) break;
        const n = Math.min(batch, perPub - sent, window - outstanding);
        const bufs = [];
        for (let k = 0; k < n; k++) {
          const b = Buffer.from(tpl.buf);
          if (qos) { mid = (mid % 65535) + 1; b.writeUInt16BE(mid, tpl.idOff); }
          b.writeDoubleLE(hr(), tpl.tsOff);
          bufs.push(b);
        }
        ok = c.sock.write(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
        sent += n;
      }
      if (sent >= perPub && (qos === 0 || acked >= perPub)) return resolve();
      if (!ok) c.sock.once('drain', pump);
      else wake[idx] = pump;
    };
    pump();
  })));
  await Promise.race([pumping.then(() => finished), finished]);
  clearTimeout(timer);
  lat.sort((a, b) => a - b);
  const q = (x) => lat.length ? +lat[Math.min(lat.length - 1, Math.floor(lat.length * x))].toFixed(2) : null;
  const secs = (last - start) / 1000;
  console.log(JSON.stringify({
    scenario, qos, pubs, subs, size, window, sent: perPub * pubs, expected, received,
    seconds: +secs.toFixed(3), msgsPerSec: Math.round(received / secs), p50ms: q(0.5), p99ms: q(0.99),
    loss: +(1 - received / expected).toFixed(4),
  }));
  for (const c of [...subConns, ...pubConns]) c.sock.destroy();
  process.exit(0);
}
main().catch((e) => { console.error(String(e)); process.exit(1); });
