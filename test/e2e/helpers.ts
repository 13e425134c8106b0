/**
 * Shared parts of the third-party client tests: a real broker listening on 127.0.0.1 on a
 * port picked by the OS, and child processes (mosquitto_sub, paho scripts) whose output is
 * read line by line.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import type { Config } from '../../src/config/schema.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { startEdb, type EdbServer } from '../../src/server.js';

export interface RunningBroker {
  server: EdbServer;
  port: number;
  stop(): Promise<void>;
}

export async function startBroker(overrides: Partial<Config> = {}): Promise<RunningBroker> {
  const server = await startEdb(testConfig({ host: '127.0.0.1', ...overrides }), silentLogger());
  return { server, port: server.port('mqtt'), stop: () => server.stop() };
}

/** True when `path` exists and is executable. */
export function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Poll `check` until it returns true; throw naming `what` after `timeoutMs`. */
export async function waitFor(check: () => boolean, what: string | (() => string), timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Wait until the broker holds a subscription with this filter (from a client id prefix, if given). */
export function waitForSubscription(broker: RunningBroker, filter: string, clientId?: string): Promise<void> {
  return waitFor(
    () => broker.server.broker.subscriptions().some((s) => s.filter === filter && s.online && (clientId === undefined || s.clientId === clientId)),
    `a subscription to ${filter}${clientId ? ` by ${clientId}` : ''}`,
  );
}

/** A child process whose stdout is collected as lines. */
export class Child {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly lines: string[] = [];
  stderr = '';
  private partial = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(cmd: string, args: string[], env?: NodeJS.ProcessEnv) {
    this.proc = spawn(cmd, args, { env: env ? { ...process.env, ...env } : process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    // A child that exits before reading its standard input makes writes to it fail with EPIPE; the exit
    // code and output are what a test judges, so that error is not an unhandled one.
    this.proc.stdin.on('error', () => {});
    // A child that cannot be started (ENOENT, EAGAIN under load) emits 'error' and then 'close': keep the
    // reason with its output, where the exit-code checks that print stderr show it.
    this.proc.on('error', (err) => (this.stderr += `spawn ${cmd}: ${err.message}\n`));
    this.proc.stdout.setEncoding('utf8');
    this.proc.stdout.on('data', (chunk: string) => {
      const parts = (this.partial + chunk).split('\n');
      this.partial = parts.pop()!;
      this.lines.push(...parts);
    });
    this.proc.stderr.setEncoding('utf8');
    this.proc.stderr.on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => {
      this.proc.on('close', (code, signal) => {
        if (this.partial) this.lines.push(this.partial);
        this.partial = '';
        resolve({ code, signal });
      });
    });
  }

  /** Resolves when `count` lines have been read; rejects with the output so far on timeout. */
  async waitForLines(count: number, timeoutMs = 10_000): Promise<string[]> {
    try {
      await waitFor(() => this.lines.length >= count, `${count} lines of output`, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}; got ${this.lines.length}: ${JSON.stringify(this.lines.slice(-5))}; stderr: ${this.stderr}`);
    }
    return this.lines;
  }

  /** Wait for the process to end by itself; kill it and fail after `timeoutMs`. */
  async finished(timeoutMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.kill('SIGKILL');
        reject(new Error(`process did not exit within ${timeoutMs} ms; stdout: ${JSON.stringify(this.lines.slice(-5))}; stderr: ${this.stderr}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
  }
}

/** Run a command to completion and return its exit code and output. */
export async function run(cmd: string, args: string[], timeoutMs = 10_000, env?: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = new Child(cmd, args, env);
  child.proc.stdin.end();
  const { code } = await child.finished(timeoutMs);
  return { code, stdout: child.lines.join('\n'), stderr: child.stderr };
}
