/**
 * What the bridge fault tests share: a verifier that subscribes on the remote with a
 * persistent session and records every numbered arrival per topic, a numbered QoS 1 load
 * against our broker that counts what was acknowledged, a TCP proxy that can black-hole the
 * link (stop forwarding without closing), and a second Edge Data Broker as a real process
 * with durable storage that can be stopped and started again on the same port.
 */
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { expect } from 'vitest';
import { freePort } from './mosquitto.js';
import { startBrokerProcess, type BrokerProcess } from './process.js';

export const TOPICS = 4;
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Subscribes on the remote with a persistent session and records every arrival per topic. */
export class Verifier {
  readonly seen: number[][] = Array.from({ length: TOPICS }, () => []);
  private constructor(readonly client: MqttClient) {}
  static async start(port: number, prefix: string, id: string, protocolVersion: 4 | 5 = 4): Promise<Verifier> {
    const c = await mqtt.connectAsync({
      port,
      host: '127.0.0.1',
      clientId: id,
      clean: false,
      reconnectPeriod: 200,
      protocolVersion,
      ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {}),
    });
    const v = new Verifier(c);
    c.on('message', (topic, payload) => {
      const t = Number(topic.slice(topic.lastIndexOf('/') + 1));
      v.seen[t]!.push(Number(payload.toString()));
    });
    c.on('error', () => undefined);
    await c.subscribeAsync(`${prefix}/#`, { qos: 1 });
    return v;
  }
  distinct(t: number): Set<number> {
    return new Set(this.seen[t]);
  }
  /** Nothing acknowledged is missing, and per topic first arrivals increase. */
  check(acked: number[]): void {
    for (let t = 0; t < TOPICS; t++) {
      const got = this.distinct(t);
      const missing: number[] = [];
      for (let i = 0; i < acked[t]!; i++) if (!got.has(i)) missing.push(i);
      expect(missing, `topic ${t}: acknowledged locally, missing on the remote`).toEqual([]);
      const firsts: number[] = [];
      const known = new Set<number>();
      for (const n of this.seen[t]!) if (!known.has(n)) known.add(n), firsts.push(n);
      expect(firsts, `topic ${t}: order of first arrivals`).toEqual([...firsts].sort((a, b) => a - b));
    }
  }
  allArrived(acked: number[]): boolean {
    return acked.every((n, t) => this.distinct(t).size >= n);
  }
}

/** Publishes numbered QoS 1 messages round robin over the topics, counting acknowledgements. */
export class Load {
  readonly acked: number[] = Array(TOPICS).fill(0);
  private next: number[] = Array(TOPICS).fill(0);
  private running = true;
  private done: Promise<void>;
  constructor(client: MqttClient, prefix: string, pauseMs = 2) {
    this.done = (async () => {
      let t = 0;
      while (this.running) {
        const n = this.next[t]!++;
        try {
          await client.publishAsync(`${prefix}/${t}`, String(n), { qos: 1 });
          this.acked[t] = n + 1;
        } catch {
          return; // the broker went away (SIGKILL): what was acknowledged is counted
        }
        t = (t + 1) % TOPICS;
        if (pauseMs) await sleep(pauseMs);
      }
    })();
  }
  get total(): number {
    return this.acked.reduce((a, b) => a + b, 0);
  }
  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

/** A TCP proxy that can black-hole: keep every connection open but forward nothing. */
export async function blackHoleProxy(upstreamPort: number): Promise<{ port: number; holes: boolean; set(on: boolean): void; close(): Promise<void> }> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const state = { holes: false };
  const server = net.createServer((down) => {
    const up = net.connect(upstreamPort, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [down, up];
    pairs.add(pair);
    down.on('data', (d) => void (state.holes || up.write(d)));
    up.on('data', (d) => void (state.holes || down.write(d)));
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on('close', end).on('error', end);
    up.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    get holes() {
      return state.holes;
    },
    set(on: boolean) {
      state.holes = on;
    },
    async close() {
      for (const [a, b] of pairs) a.destroy(), b.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A second Edge Data Broker as the remote: `edb start`, durable storage, one port, stoppable and started again. */
export interface EdbRemote {
  port: number;
  process(): BrokerProcess;
  stop(signal?: NodeJS.Signals): Promise<void>;
  restart(): Promise<void>;
}

export async function startEdbRemote(env: Record<string, string> = {}): Promise<EdbRemote> {
  const port = await freePort();
  const full = { EDB_STORAGE: 'durable', EDB_DATA_DIR: mkdtempSync(join(tmpdir(), 'edb-remote-')), EDB_MQTT_PORT: String(port), EDB_MQTTS_PORT: '-1', ...env };
  let proc = await startBrokerProcess(full);
  return {
    port,
    process: () => proc,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      await proc.stop(signal);
    },
    async restart() {
      proc = await startBrokerProcess(full);
    },
  };
}
