/**
 * Real nats-server processes (Debian package nats-server, 2.9+) with JetStream, for the
 * cluster tests: one server, or three joined by cluster routes, every port free at start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface NatsServer {
  readonly name: string;
  readonly port: number;
  readonly clusterPort: number;
  readonly url: string;
  process: ChildProcess | undefined;
  output: string;
}

export interface NatsCluster {
  readonly servers: NatsServer[];
  /** Comma list of every server's client URL (EDB_CLUSTER_NATS). */
  readonly urls: string;
  /** kill -9 one server. */
  kill(i: number): Promise<void>;
  /** Start a killed server again, same ports and folder. */
  restart(i: number): Promise<void>;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (bound and released: another process could take it meanwhile, rarely). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** `count` servers (1 or 3) with JetStream; with 3, a JetStream cluster over routes. */
/**
 * `noAdvertise`: the servers do not tell clients of the others (--no_advertise), so a client
 * given one server stays cut off while that server is down (no failover to the others).
 */
export async function startNats(count: 1 | 3 = 3, opts: { clusterName?: string; ports?: number[]; noAdvertise?: boolean } = {}): Promise<NatsCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'edb-nats-'));
  const name = opts.clusterName ?? 'edbtest';
  const servers: NatsServer[] = [];
  for (let i = 0; i < count; i++) {
    const port = opts.ports?.[i] ?? (await freePort());
    servers.push({ name: `nats${i + 1}`, port, clusterPort: await freePort(), url: `nats://127.0.0.1:${port}`, process: undefined, output: '' });
  }
  const routes = servers.map((s) => `nats://127.0.0.1:${s.clusterPort}`).join(',');
  const launch = (s: NatsServer): void => {
    const args = ['-js', '-sd', join(dir, s.name), '-a', '127.0.0.1', '-p', String(s.port), '--server_name', s.name];
    if (count > 1) args.push('--cluster_name', name, '--cluster', `nats://127.0.0.1:${s.clusterPort}`, '--routes', routes);
    if (opts.noAdvertise) args.push('--no_advertise');
    const p = spawn('nats-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    s.process = p;
    s.output = '';
    const keep = (b: Buffer): void => {
      s.output = (s.output + b.toString()).slice(-20_000);
    };
    p.stdout!.on('data', keep);
    p.stderr!.on('data', keep);
  };
  for (const s of servers) launch(s);
  await Promise.all(servers.map((s) => waitForJetStream(s)));
  return {
    servers,
    urls: servers.map((s) => s.url).join(','),
    async kill(i) {
      const s = servers[i]!;
      const p = s.process;
      if (!p || p.exitCode !== null) return;
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await gone;
      s.process = undefined;
    },
    async restart(i) {
      const s = servers[i]!;
      launch(s);
      await waitForJetStream(s);
    },
    async stop() {
      await Promise.all(
        servers.map(async (s) => {
          const p = s.process;
          if (!p || p.exitCode !== null) return;
          const gone = new Promise((r) => p.once('exit', r));
          p.kill('SIGTERM');
          await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
          if (p.exitCode === null) p.kill('SIGKILL');
        }),
      );
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Until the server answers JetStream account info (its cluster has a metadata leader). */
async function waitForJetStream(s: NatsServer, timeoutMs = 30_000): Promise<void> {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (s.process?.exitCode !== null && s.process?.exitCode !== undefined) throw new Error(`nats-server ${s.name} exited: ${s.output}`);
    try {
      const nc = await connect({ servers: s.url, timeout: 1000, reconnect: false });
      try {
        const jsm = await jetstreamManager(nc, { timeout: 1000 });
        await jsm.getAccountInfo();
        return;
      } finally {
        await nc.close();
      }
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error(`nats-server ${s.name} has no JetStream after ${timeoutMs} ms: ${String(last)}\n${s.output}`);
}
