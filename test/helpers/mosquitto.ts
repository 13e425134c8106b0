/**
 * A real mosquitto (the Debian package) started by a test: a generated config file in a
 * temporary folder, a free port (found by binding port 0 and letting it go: mosquitto
 * cannot listen on port 0 itself), optional password file and TLS listener.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Mosquitto {
  port: number;
  tlsPort: number | undefined;
  dir: string;
  /** What mosquitto wrote to stderr/stdout (for failure messages). */
  output(): string;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
  /** Start again on the same ports and config (after stop). */
  restart(): Promise<void>;
}

export interface MosquittoOptions {
  users?: Record<string, string>;
  tls?: { cert: string; key: string; ca?: string };
  /** Extra lines for mosquitto.conf (a bridge section, say). */
  extra?: string[];
  port?: number;
  /** Keep sessions and queued messages across a stop (written on SIGTERM). */
  persistence?: boolean;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startMosquitto(opts: MosquittoOptions = {}): Promise<Mosquitto> {
  const dir = mkdtempSync(join(tmpdir(), 'edb-mosquitto-'));
  const port = opts.port ?? (await freePort());
  const tlsPort = opts.tls ? await freePort() : undefined;
  const lines = ['per_listener_settings false', opts.persistence ? `persistence true\npersistence_location ${dir}/` : 'persistence false', 'log_dest stderr', 'log_type error', 'log_type warning', 'max_queued_messages 2000000', 'max_inflight_messages 0'];
  // as root mosquitto drops to the user "mosquitto", which may not read our temporary folder
  if (process.getuid?.() === 0) lines.push('user root');
  lines.push(`listener ${port} 127.0.0.1`);
  if (opts.tls && tlsPort) {
    lines.push(`listener ${tlsPort} 127.0.0.1`, `certfile ${opts.tls.cert}`, `keyfile ${opts.tls.key}`);
    if (opts.tls.ca) lines.push(`cafile ${opts.tls.ca}`);
  }
  if (opts.users) {
    const file = join(dir, 'passwd');
    writeFileSync(file, '');
    for (const [u, p] of Object.entries(opts.users)) execFileSync('mosquitto_passwd', ['-b', file, u, p]);
    lines.push('allow_anonymous false', `password_file ${file}`);
  } else lines.push('allow_anonymous true');
  lines.push(...(opts.extra ?? []));
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(conf, lines.join('\n') + '\n');
  let child: ChildProcess | undefined;
  let out = '';
  const launch = async (): Promise<void> => {
    child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await waitForPort(port).catch((err: Error) => {
      throw new Error(`${err.message}; mosquitto said: ${out}`);
    });
  };
  await launch();
  return {
    port,
    tlsPort,
    dir,
    output: () => out,
    async stop() {
      const c = child;
      if (!c || c.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve());
        c.kill('SIGTERM');
      });
    },
    restart: launch,
  };
}
