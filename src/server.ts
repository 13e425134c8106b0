import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import type { Listener } from './transport/connection.js';
import { Broker } from './broker/broker.js';
import { startSysTopics } from './broker/sys.js';
import { startTcpListener } from './transport/tcp.js';

/** The package version, from the package.json above this module (src/ or dist/src/). */
function packageVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version: string };
      if (pkg.name === 'edge-data-broker') return pkg.version;
    } catch {
      /* try the next */
    }
  }
  return '0.0.0';
}

export const VERSION: string = packageVersion();

/** A running broker with its listeners and services. */
export interface EdbServer {
  readonly broker: Broker;
  readonly listeners: Listener[];
  readonly config: Config;
  /** Port of the named listener ("mqtt", "mqtts", "ws", "wss", "http", "rules"). */
  port(name: string): number;
  /** Graceful stop: listeners closed, clients told (v5 0x8B), services saved and closed. */
  stop(): Promise<void>;
}

/** A service started with the broker; closed in reverse order on stop. */
interface Service {
  close(): Promise<void> | void;
}

/**
 * Start the broker, its services and its listeners. Services register their hooks
 * before any listener opens, so the first client already sees them.
 */
export async function startEdb(config: Config, log: Logger): Promise<EdbServer> {
  const broker = new Broker(config, log);
  const services: Service[] = [];
  const listeners: Listener[] = [];

  const stopSys = startSysTopics(broker, VERSION, config.sysInterval);
  services.push({ close: stopSys });

  try {
    if (config.mqttPort >= 0) listeners.push(await startTcpListener(broker, config.host, config.mqttPort));
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    throw err;
  }
  for (const l of listeners) log.info({ listener: l.name, engine: l.engine, host: config.host, port: l.port }, `listening: ${l.name} on port ${l.port} (${l.engine})`);

  let stopping: Promise<void> | undefined;
  return {
    broker,
    listeners,
    config,
    port(name: string): number {
      const l = listeners.find((x) => x.name === name);
      if (!l) throw new Error(`no listener named ${name}`);
      return l.port;
    },
    stop(): Promise<void> {
      stopping ??= (async () => {
        const closing = listeners.map((l) => l.close());
        await broker.close();
        for (const s of [...services].reverse()) {
          try {
            await s.close();
          } catch (err) {
            log.error({ err }, 'service failed to close');
          }
        }
        await Promise.all(closing);
      })();
      return stopping;
    },
  };
}
