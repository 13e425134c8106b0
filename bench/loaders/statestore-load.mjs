// Copied from the shared lean loaders (statestore-load2.mjs) so the project stands alone; see bench/RESULTS.md, "State store round trips: two loaders".
// Lean state-store load generator: requests are built
// once as raw MQTT 5 PUBLISH bytes and patched in place (packet id, correlation data, HLC
// timestamp digits); answers are read with a minimal frame reader. So the loader costs little
// CPU next to the broker, as redis-benchmark does next to Redis.
// Usage: node statestore-load2.mjs MQTT_PORT [--clients 50] [--seconds 5] [--value-size 100] [--split 1]
// --split 1 writes the PUBACK of an answer and the next request separately (as a naive client);
// the default writes them together in one write (as a client that batches its turn).
import net from 'node:net';
const argv = process.argv.slice(2);
const opt = (n, d) => { const i = argv.indexOf(`--${n}`); return i >= 0 ? Number(argv[i + 1]) : d; };
const port = Number(argv[0]); const clients = opt('clients', 50); const seconds = opt('seconds', 5);
const vsize = opt('value-size', 100); const split = opt('split', 0) === 1;
const SVC = 'statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke';

const varint = (n) => { const o = []; do { let b = n % 128; n = Math.floor(n / 128); if (n) b |= 128; o.push(b); } while (n); return Buffer.from(o); };
const str = (s) => { const b = Buffer.from(s); const l = Buffer.alloc(2); l.writeUInt16BE(b.length); return Buffer.concat([l, b]); };
const bin = (b) => { const l = Buffer.alloc(2); l.writeUInt16BE(b.length); return Buffer.concat([l, b]); };
const packet = (h, body) => Buffer.concat([Buffer.from([h]), varint(body.length), body]);
const bulk = (s) => { const b = Buffer.isBuffer(s) ? s : Buffer.from(s); return Buffer.concat([Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n')]); };
const resp = (...a) => Buffer.concat([Buffer.from(`*${a.length}\r\n`), ...a.map(bulk)]);

function request(id, rt, payload) {
  const ts = `${String(Date.now()).padStart(15, '0')}:00000:${id}`;
  const props = Buffer.concat([
    Buffer.from([0x08]), str(rt),
    Buffer.from([0x09]), bin(Buffer.alloc(4)),
    Buffer.from([0x26]), str('__ts'), str(ts),
    Buffer.from([0x26]), str('__srcId'), str(id),
    Buffer.from([0x26]), str('__protVer'), str('1.0'),
  ]);
  const body = Buffer.concat([str(SVC), Buffer.from([0, 1]), varint(props.length), props, payload]);
  const buf = packet(0x32, body);
  const idOff = buf.indexOf(str(SVC)) + 2 + SVC.length;
  const cdOff = buf.indexOf(Buffer.concat([Buffer.from([0x09, 0, 4])])) + 3;
  const tsOff = buf.indexOf(Buffer.from(ts));
  return { buf, idOff, cdOff, tsOff };
}

function reader(onPkt) {
  let pending = null;
  return (chunk) => {
    const b = pending ? Buffer.concat([pending, chunk]) : chunk; pending = null;
    let i = 0;
    while (b.length - i >= 2) {
      let mul = 1, len = 0, j = i + 1, ok = false;
      while (j < b.length && j < i + 5) { const c = b[j++]; len += (c & 127) * mul; mul *= 128; if (!(c & 128)) { ok = true; break; } }
      if (!ok || j + len > b.length) break;
      onPkt(b[i], b, j, j + len); i = j + len;
    }
    if (i < b.length) pending = Buffer.from(b.subarray(i));
  };
}

let ops = 0, errors = 0, running = true; const lat = [];
function runClient(i) {
  return new Promise((resolve, reject) => {
    const id = `ss2-${process.pid}-${i}`; const rt = `clients/${id}/statestore/response`;
    const sock = net.connect({ host: '127.0.0.1', port }); sock.setNoDelay(true);
    const value = Buffer.alloc(vsize, 97); const key = `load-key-${i}`;
    const setR = request(id, rt, resp('SET', key, value)), getR = request(id, rt, resp('GET', key));
    const getOk = Buffer.concat([Buffer.from(`$${vsize}\r\n`), value, Buffer.from('\r\n')]);
    const setOk = Buffer.from('+OK\r\n');
    let mid = 1, step = 0, t0 = 0, cd = 0, state = 0;
    const next = () => {
      step ^= 1; const r = step ? setR : getR;
      mid = (mid % 65535) + 1; cd++;
      const b = Buffer.from(r.buf);
      b.writeUInt16BE(mid, r.idOff); b.writeUInt32BE(cd >>> 0, r.cdOff);
      b.write(String(Date.now()).padStart(15, '0'), r.tsOff, 'latin1');
      t0 = performance.now();
      return b;
    };
    sock.on('data', reader((h, b, s, e) => {
      const type = h >> 4;
      if (type === 2 && state === 0) { state = 1; sock.write(packet(0x82, Buffer.concat([Buffer.from([0, 1, 0]), str(rt), Buffer.from([1])]))); return; }
      if (type === 9 && state === 1) { state = 2; sock.write(next()); return; }
      if (type !== 3) return; // PUBACKs of our requests need nothing
      const q = (h >> 1) & 3;
      const tl = b.readUInt16BE(s); let p = s + 2 + tl; let pid = -1;
      if (q) { pid = b.readUInt16BE(p); p += 2; }
      let mul = 1, plen = 0; for (;;) { const c = b[p++]; plen += (c & 127) * mul; mul *= 128; if (!(c & 128)) break; }
      p += plen;
      const payload = b.subarray(p, e);
      if (!payload.equals(step ? setOk : getOk)) errors++;
      ops++; if ((ops & 15) === 0) lat.push(performance.now() - t0);
      const ack = q ? Buffer.from([0x40, 2, pid >> 8, pid & 255]) : null;
      if (!running) { if (ack) sock.write(ack); sock.end(); return resolve(); }
      const req = next();
      if (!ack) sock.write(req);
      else if (split) { sock.write(ack); sock.write(req); }
      else sock.write(Buffer.concat([ack, req]));
    }));
    sock.on('error', reject);
    const props = Buffer.alloc(0);
    const connBody = Buffer.concat([str('MQTT'), Buffer.from([5, 0x02, 0, 60]), varint(props.length), props, str(id)]);
    sock.write(packet(0x10, connBody));
  });
}
const start = performance.now();
setTimeout(() => { running = false; }, seconds * 1000);
await Promise.all(Array.from({ length: clients }, (_, i) => runClient(i)));
const secs = (performance.now() - start) / 1000;
lat.sort((a, b) => a - b); const qq = (x) => lat.length ? +lat[Math.floor(lat.length * x)].toFixed(2) : null;
console.log(JSON.stringify({ clients, split, seconds: +secs.toFixed(2), ops, opsPerSec: Math.round(ops / secs), errors, p50ms: qq(0.5), p99ms: qq(0.99), loaderCpuS: +(process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6).toFixed(2) }));
process.exit(errors ? 1 : 0);
