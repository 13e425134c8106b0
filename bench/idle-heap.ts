// What one idle connection holds, split by V8 heap space (issue 15, memory per idle connection):
// `edb start` with `--expose-gc` and a probe preloaded (bench/idle-heap-probe.mjs), then N raw
// MQTT 3.1.1 CONNECTs from this process; the probe forces a GC and reports RSS, the JS heap and
// each heap space before and after. Unlike `load.js --scenarios idle-memory` (RSS only, no GC)
// it says where the bytes are: young generation, old space, code, native.
//   npm run build && node dist/bench/idle-heap.js [--connections 10000]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const at = args.indexOf('--connections');
const N = at >= 0 ? Number(args[at + 1]) : 10_000;
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const PROBE = fileURLToPath(new URL('../../bench/idle-heap-probe.mjs', import.meta.url));

interface Report {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  spaces: Record<string, [number, number]>;
}

function connectPacket(id: string): Buffer {
  const cid = Buffer.from(id);
  const body = Buffer.concat([Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 0, cid.length >> 8, cid.length & 255]), cid]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

const dir = mkdtempSync(join(tmpdir(), 'edb-idle-heap-'));
const out = join(dir, 'probe.jsonl');
const child = spawn(process.execPath, ['--expose-gc', '--import', PROBE, CLI, 'start'], {
  env: { ...process.env, EDB_DATA_DIR: join(dir, 'data'), EDB_HOST: '127.0.0.1', EDB_MQTT_PORT: '0', EDB_HTTP_PORT: '-1', EDB_WS_PORT: '-1', EDB_RULES_PORT: '-1', EDB_LOG_FORMAT: 'json', EDB_LOG_LEVEL: 'info', EDB_TEST_PROBE_OUT: out },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const port = await new Promise<number>((resolve, reject) => {
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const m = /"port":(\d+)[^\n]*"msg":"listening: mqtt /.exec(buf);
    if (m) resolve(Number(m[1]));
  });
  child.once('exit', (code) => reject(new Error(`broker exited with ${code}:\n${buf}`)));
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function probe(): Promise<Report> {
  const before = readLines();
  child.kill('SIGUSR2');
  for (let i = 0; i < 200 && readLines() === before; i++) await sleep(50);
  const lines = readFileSync(out, 'utf8').trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as Report;
}
function readLines(): number {
  try {
    return readFileSync(out, 'utf8').split('\n').length;
  } catch {
    return 0;
  }
}

await sleep(3000);
const a = await probe();
const sockets: net.Socket[] = [];
let next = 0;
await Promise.all(
  Array.from({ length: 200 }, async () => {
    while (next < N) {
      const id = `idle-${next++}`;
      await new Promise<void>((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => s.write(connectPacket(id)));
        s.once('data', () => {
          sockets.push(s);
          resolve();
        });
        s.once('error', reject);
      });
    }
  }),
);
await sleep(3000);
const b = await probe();
for (const s of sockets) s.destroy();
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));
rmSync(dir, { recursive: true, force: true });

const per = (x: number, y: number) => `${Math.round((y - x) / sockets.length).toLocaleString('en')} B`;
const mib = (x: number) => `${(x / 1048576).toFixed(1)} MiB`;
console.log(`${sockets.length} idle connections (Node ${process.version}), after a forced GC; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
console.log('| | before | after | per connection |\n| --- | ---: | ---: | ---: |');
console.log(`| RSS | ${mib(a.rss)} | ${mib(b.rss)} | ${per(a.rss, b.rss)} |`);
console.log(`| JS heap used | ${mib(a.heapUsed)} | ${mib(b.heapUsed)} | ${per(a.heapUsed, b.heapUsed)} |`);
console.log(`| JS heap committed | ${mib(a.heapTotal)} | ${mib(b.heapTotal)} | ${per(a.heapTotal, b.heapTotal)} |`);
for (const name of Object.keys(b.spaces)) {
  const [sa, ua] = a.spaces[name] ?? [0, 0];
  const [sb, ub] = b.spaces[name]!;
  if (sa === 0 && sb === 0) continue;
  console.log(`| ${name}: committed / used | ${mib(sa)} / ${mib(ua)} | ${mib(sb)} / ${mib(ub)} | ${per(sa, sb)} / ${per(ua, ub)} |`);
}
