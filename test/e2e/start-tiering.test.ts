// TurboFan is held back while the broker starts (src/cli/start-tiering.ts) and allowed again
// once it listens: a real `edb start` with V8's --trace-opt, whose lines say what was optimised
// and when. Before the listening lines: nothing; after traffic: the hot path is.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
let child: ChildProcess | undefined;
let dir: string | undefined;

afterEach(() => {
  child?.kill('SIGKILL');
  child = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function start(nodeFlags: string[]): { lines: string[]; mqttPort: Promise<number> } {
  dir = mkdtempSync(join(tmpdir(), 'edb-tiering-'));
  const env = { ...process.env, EDB_STORAGE: 'memory', EDB_DATA_DIR: dir, EDB_MQTT_PORT: '0', EDB_WS_PORT: '-1', EDB_HTTP_PORT: '-1', EDB_RULES_PORT: '-1', EDB_MQTTS_PORT: '-1', EDB_WSS_PORT: '-1' };
  const c = spawn(process.execPath, [...nodeFlags, CLI, 'start'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  child = c;
  const lines: string[] = [];
  let rest = '';
  const mqttPort = new Promise<number>((resolve, reject) => {
    c.on('exit', (code) => reject(new Error(`edb start exited (${code})`)));
    c.stdout!.on('data', (chunk: Buffer) => {
      const parts = (rest + chunk.toString()).split('\n');
      rest = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        if (!line.startsWith('{')) continue;
        const entry = JSON.parse(line) as { listener?: string; port?: number; msg?: string };
        if (entry.listener === 'mqtt' && typeof entry.port === 'number' && /listening/.test(entry.msg ?? '')) resolve(entry.port);
      }
    });
  });
  return { lines, mqttPort };
}

/** 30,000 QoS 0 PUBLISHes from one raw MQTT 3.1.1 client, then a PINGREQ answered: all were read. */
async function traffic(port: number): Promise<void> {
  const s = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => s.once('connect', () => r()));
  const id = Buffer.from('tiering');
  s.write(Buffer.concat([Buffer.from([0x10, 12 + id.length, 0, 4]), Buffer.from('MQTT'), Buffer.from([4, 2, 0, 60, 0, id.length]), id]));
  const publish = Buffer.concat([Buffer.from([0x30, 2 + 5 + 8, 0, 5]), Buffer.from('a/b/c'), Buffer.alloc(8, 1)]);
  for (let i = 0; i < 30; i++) s.write(Buffer.concat(new Array<Buffer>(1000).fill(publish)));
  await new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => {
      if (d.includes(Buffer.from([0xd0, 0]))) resolve();
    });
    s.write(Buffer.from([0xc0, 0]));
  });
  s.destroy();
}

const optimised = (lines: string[]): string[] => lines.filter((l) => /completed (optimizing|compiling).*TURBOFAN/.test(l));

describe('TurboFan held while starting', () => {
  it('optimises nothing before the broker listens, and the hot path once traffic comes', async () => {
    const { lines, mqttPort } = start(['--trace-opt']);
    const port = await mqttPort;
    expect(optimised(lines)).toEqual([]);
    await traffic(port);
    await new Promise((r) => setTimeout(r, 500)); // concurrent compiles report when done
    expect(optimised(lines).length).toBeGreaterThan(0);
  });

  it('an operator TurboFan flag leaves V8 alone (start-up optimises as without the hold)', async () => {
    const { lines, mqttPort } = start(['--trace-opt', '--turbofan']);
    await mqttPort;
    expect(optimised(lines).length).toBeGreaterThan(0);
  });
});
