// State-store round trips, a cluster node vs a single node, with the lean loader
// (bench/loaders/statestore-load.mjs: hand-framed MQTT 5, as redis-benchmark is to Redis), in
// one run: three nats-server processes with JetStream (routes), three `edb start` cluster
// nodes, one single `edb start`. Each round runs the loader against cluster node 1 (SET is a
// compare-and-set in the R3 bucket, GET reads the node's mirror), then the single node.
//   npm run build && node dist/bench/cluster/state-lean.js     (SECONDS=5 ROUNDS=3 CLIENTS=50,200 PROF_DIR= BASE_DIST= SINGLE=0)
// BASE_DIST=<another build's dist folder> runs a second three-node cluster from that build on the same
// NATS servers, rounds interleaved (A/B in one run); SINGLE=0 leaves the single node out.
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

interface Target {
  name: string;
  port: number;
  /** pids whose CPU is counted: the node under load, the other nodes of its cluster */
  node: Node;
  others: Node[];
}

async function main(): Promise<void> {
  const nats = await startNats(3);
  const nodes: Node[] = [];
  const natsCpu = (): number => nats.servers.reduce((t: number, x) => t + cpuSeconds(x.process?.pid), 0);
  try {
    const cluster = async (name: string, cli: string | undefined, prof: boolean): Promise<Node[]> => {
      const mine: Node[] = [];
      for (let i = 0; i < 3; i++) {
        const urls = [i, ...[0, 1, 2].filter((j) => j !== i)].map((j) => nats.servers[j]!.url).join(',');
        // PROF_DIR: CPU profiles of the three nodes (node --cpu-prof, file names carry the pid), written when they stop
        const execArgv = prof && process.env['PROF_DIR'] ? ['--cpu-prof', '--cpu-prof-dir', process.env['PROF_DIR']] : [];
        const n = await startNode({ EDB_CLUSTER_NATS: urls, EDB_NODE_NAME: `n${i + 1}`, EDB_CLUSTER_NAME: name }, { execArgv, prefix: 'edb-bench-state-', ...(cli ? { cli } : {}) });
        if (execArgv.length) console.log(`profiling node n${i + 1} of ${name}: pid ${n.child.pid}`);
        mine.push(n);
        nodes.push(n);
      }
      return mine;
    };
    const targets: Target[] = [];
    const mine = await cluster('benchstate', undefined, true);
    targets.push({ name: 'cluster node', port: mine[0]!.port, node: mine[0]!, others: mine.slice(1) });
    // BASE_DIST: the dist folder of another build (e.g. main's); its own three nodes on the same
    // NATS servers (another cluster name, other buckets), rounds interleaved with this build's
    const base = process.env['BASE_DIST'];
    if (base) {
      const theirs = await cluster('benchbase', `${base}/src/cli/main.js`, false);
      targets.push({ name: 'base build cluster node', port: theirs[0]!.port, node: theirs[0]!, others: theirs.slice(1) });
    }
    if (process.env['SINGLE'] !== '0') {
      const single = await startNode({}, { prefix: 'edb-bench-state-' });
      nodes.push(single);
      targets.push({ name: 'single node', port: single.port, node: single, others: [] });
    }
    console.log(`load average at start ${loadavg().map((x) => x.toFixed(1)).join(' ')}${base ? `; base build ${base}` : ''}`);
    for (const clients of CLIENTS) {
      const results = targets.map(() => [] as LoadResult[]);
      const cpu = targets.map(() => [] as number[]);
      for (let round = 0; round < ROUNDS; round++) {
        // the order alternates between rounds, so that a drift of the machine's load does not favour one
        const order = targets.map((_, i) => i);
        if (round % 2 === 1) order.reverse();
        const line: string[] = [];
        for (const i of order) {
          const t = targets[i]!;
          const before = { a: cpuSeconds(t.node.child.pid), b: t.others.reduce((x, o) => x + cpuSeconds(o.child.pid), 0), n: natsCpu() };
          const r = load(t.port, clients);
          const after = { a: cpuSeconds(t.node.child.pid), b: t.others.reduce((x, o) => x + cpuSeconds(o.child.pid), 0), n: natsCpu() };
          const ops = r.opsPerSec * SECONDS;
          const us = (x: number): number => Math.round((x * 1e6) / ops);
          const total = us(after.a - before.a) + (t.others.length ? us(after.b - before.b) + us(after.n - before.n) : 0) + us(r.loaderCpuS);
          results[i]!.push(r);
          cpu[i]!.push(total);
          line.push(
            `${t.name} ${r.opsPerSec}/s (p50 ${r.p50ms} ms, p99 ${r.p99ms} ms, errors ${r.errors}; CPU per round trip: node ${us(after.a - before.a)} µs` +
              (t.others.length ? `, other two nodes ${us(after.b - before.b)} µs, three nats-servers ${us(after.n - before.n)} µs` : '') +
              `, loader ${us(r.loaderCpuS)} µs, all ${total} µs)`,
          );
        }
        console.log(`  round ${round + 1}, ${clients} clients, load ${loadavg()[0]!.toFixed(1)}: ${line.join('; ')}`);
      }
      const med = targets.map((_, i) => median(results[i]!.map((r) => r.opsPerSec)));
      const parts = targets.map(
        (t, i) =>
          `${t.name} ${med[i]} round trips/s (p50 ${median(results[i]!.map((r) => r.p50ms))} ms, p99 ${median(results[i]!.map((r) => r.p99ms))} ms, CPU per round trip ${median(cpu[i]!)} µs)`,
      );
      const ratios = targets.slice(1).map((t, i) => `cluster node / ${t.name} ${(med[0]! / med[i + 1]!).toFixed(2)}`);
      console.log(`state store, lean loader, ${clients} clients SET/GET alternating: ${parts.join('; ')}; ${ratios.join(', ')} (medians of ${ROUNDS} rounds of ${SECONDS} s)`);
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
