// State-store round trips, a cluster node vs a single node, with the lean loader
// (bench/loaders/statestore-load.mjs: hand-framed MQTT 5, as redis-benchmark is to Redis), in
// one run: three nats-server processes with JetStream (routes), three `edb start` cluster
// nodes, one single `edb start`. Each round runs the loader against cluster node 1 (SET is a
// compare-and-set in the R3 bucket, GET reads the node's mirror), then the single node.
//   npm run build && node dist/bench/cluster/state-lean.js     (SECONDS=5 ROUNDS=3 CLIENTS=50,200 PROF_DIR=)
// Prints one line per round (with the CPU each process spent per round trip, from /proc) and
// the medians; figures go to bench/RESULTS.md.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { startNats } from '../../test/helpers/nats.js';
import { startNode, type BenchNode as Node } from './node.js';

const SECONDS = Number(process.env['SECONDS'] ?? 5);
const ROUNDS = Number(process.env['ROUNDS'] ?? 3);
const CLIENTS = (process.env['CLIENTS'] ?? '50,200').split(',').map(Number);
const LOADER = fileURLToPath(new URL('../../../bench/loaders/statestore-load.mjs', import.meta.url));


interface LoadResult {
  opsPerSec: number;
  p50ms: number;
  p99ms: number;
  errors: number;
  loaderCpuS: number;
}

function load(port: number, clients: number): LoadResult {
  const r = spawnSync(process.execPath, [LOADER, String(port), '--clients', String(clients), '--seconds', String(SECONDS)], { encoding: 'utf8' });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as LoadResult;
  } catch {
    throw new Error(`loader failed: ${r.stdout} ${r.stderr}`);
  }
}

/** CPU seconds (user + system) a process has used, from /proc (Linux; 0 elsewhere). */
function cpuSeconds(pid: number | undefined): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const nats = await startNats(3);
  const nodes: Node[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const urls = [i, ...[0, 1, 2].filter((j) => j !== i)].map((j) => nats.servers[j]!.url).join(',');
      // PROF_DIR: a CPU profile of cluster node 1 (node --cpu-prof), written when it stops
      const prof = i === 0 && process.env['PROF_DIR'] ? ['--cpu-prof', '--cpu-prof-dir', process.env['PROF_DIR']] : [];
      nodes.push(await startNode({ EDB_CLUSTER_NATS: urls, EDB_NODE_NAME: `n${i + 1}`, EDB_CLUSTER_NAME: 'benchstate' }, { execArgv: prof, prefix: 'edb-bench-state-' }));
    }
    const single = await startNode({}, { prefix: 'edb-bench-state-' });
    nodes.push(single);
    const a = nodes[0]!;
    console.log(`load average at start ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    for (const clients of CLIENTS) {
      const cl: LoadResult[] = [];
      const si: LoadResult[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const natsCpu = (): number => nats.servers.reduce((t: number, x) => t + cpuSeconds(x.process?.pid), 0);
        const before = { a: cpuSeconds(a.child.pid), b: cpuSeconds(nodes[1]!.child.pid) + cpuSeconds(nodes[2]!.child.pid), n: natsCpu() };
        const c = load(a.port, clients);
        const ops = c.opsPerSec * SECONDS;
        const us = (x: number): string => ((x * 1e6) / ops).toFixed(0);
        const after = { a: cpuSeconds(a.child.pid), b: cpuSeconds(nodes[1]!.child.pid) + cpuSeconds(nodes[2]!.child.pid), n: natsCpu() };
        const s0 = cpuSeconds(single.child.pid);
        const s = load(single.port, clients);
        const s1 = cpuSeconds(single.child.pid);
        console.log(
          `  CPU per round trip: cluster node ${us(after.a - before.a)} µs, the other two nodes ${us(after.b - before.b)} µs, the three nats-servers ${us(after.n - before.n)} µs, loader ${((c.loaderCpuS * 1e6) / ops).toFixed(0)} µs; single node ${(((s1 - s0) * 1e6) / (s.opsPerSec * SECONDS)).toFixed(0)} µs, loader ${((s.loaderCpuS * 1e6) / (s.opsPerSec * SECONDS)).toFixed(0)} µs`,
        );
        cl.push(c);
        si.push(s);
        console.log(`  round ${round + 1}, ${clients} clients: cluster node ${c.opsPerSec}/s (p50 ${c.p50ms} ms, p99 ${c.p99ms} ms, errors ${c.errors}), single node ${s.opsPerSec}/s (p50 ${s.p50ms} ms, p99 ${s.p99ms} ms, errors ${s.errors})`);
      }
      const cr = median(cl.map((r) => r.opsPerSec));
      const sr = median(si.map((r) => r.opsPerSec));
      console.log(
        `state store, lean loader, ${clients} clients SET/GET alternating: cluster node ${cr} round trips/s (p50 ${median(cl.map((r) => r.p50ms))} ms, p99 ${median(cl.map((r) => r.p99ms))} ms); single node ${sr} round trips/s (p50 ${median(si.map((r) => r.p50ms))} ms, p99 ${median(si.map((r) => r.p99ms))} ms); ratio ${(cr / sr).toFixed(2)} (medians of ${ROUNDS} rounds of ${SECONDS} s)`,
      );
    }
    console.log(`load average at end ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  } finally {
    await Promise.all(
      nodes.map(async (n) => {
        const gone = new Promise((r) => n.child.once('exit', r));
        n.child.kill('SIGTERM');
        await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
        rmSync(n.dir, { recursive: true, force: true });
      }),
    );
    await nats.stop();
  }
}

await main();
