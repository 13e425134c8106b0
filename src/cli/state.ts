/**
 * `edb state get|set|del|watch`: talk to the state store of any broker that speaks the
 * state-store protocol, over MQTT 5 on TCP, TLS or WebSocket.
 *
 *   edb state set greeting hello --px 60000
 *   edb state get greeting
 *   edb state watch greeting --url wss://broker:9002 --ca ca.pem
 *
 * Exit codes (the table of every command, src/cli/exit-codes.ts): 0 done; 1 key absent,
 * SET not applied, nothing deleted, or the broker answered an error; 2 usage; 3 the broker
 * cannot be reached or did not answer in time.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { IClientOptions, MqttClient } from 'mqtt';
import { formatHlc } from '../state/hlc.js';
import { StateStoreClient, StateStoreError } from '../state/client.js';
import { EXIT, fail, fileReason, networkReason, OperationError, UnreachableError, UsageError } from './exit-codes.js';

interface ConnectionOptions {
  url: string;
  clientId?: string;
  username?: string;
  password?: string;
  ca?: string;
  cert?: string;
  key?: string;
  insecure?: boolean;
  timeout: string;
  hex?: boolean;
}

function connectionOptions(cmd: Command): ConnectionOptions {
  return cmd.optsWithGlobals<ConnectionOptions>();
}

async function withStore<T>(opts: ConnectionOptions, run: (store: StateStoreClient, mqtt: MqttClient) => Promise<T>): Promise<T> {
  const timeout = Number(opts.timeout);
  if (!Number.isInteger(timeout) || timeout < 1) throw new UsageError('--timeout must be a whole number of milliseconds');
  const options: IClientOptions = {
    protocolVersion: 5,
    clientId: opts.clientId ?? `edb-state-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: timeout,
  };
  if (opts.username !== undefined) options.username = opts.username;
  if (opts.password !== undefined) options.password = opts.password;
  if (opts.ca) options.ca = readOptionFile('--ca', opts.ca);
  if (opts.cert) options.cert = readOptionFile('--cert', opts.cert);
  if (opts.key) options.key = readOptionFile('--key', opts.key);
  if (opts.insecure) options.rejectUnauthorized = false;
  if (!/^(mqtts?|wss?|tcp|ssl|tls):\/\/[^/]/i.test(opts.url)) {
    throw new UsageError(`--url ${opts.url}: not a broker URL; write mqtt://HOST:PORT, mqtts://, ws:// or wss://`);
  }
  let mqtt: MqttClient;
  try {
    // MQTT.js is loaded here, not at the top: `edb start` (which imports this module to
    // register the command) never needs it, and it costs ~140 ms of CPU and ~2 MB of heap.
    const { connectAsync } = await import('mqtt');
    mqtt = await connectAsync(opts.url, options, false);
  } catch (err) {
    // a CONNACK refusal carries its reason code (a number): the broker is there and said no
    if (typeof (err as { code?: unknown }).code === 'number') {
      throw new OperationError(`the broker at ${opts.url} refused the connection: ${(err as Error).message.replace(/^Connection refused: /, '')}`);
    }
    throw new UnreachableError(`cannot reach the broker at ${opts.url}: ${connectReason(err)}; is it running? set --url`);
  }
  try {
    const store = await StateStoreClient.create(mqtt, { timeoutMs: timeout });
    try {
      return await run(store, mqtt);
    } finally {
      await store.close();
    }
  } finally {
    await mqtt.endAsync().catch(() => undefined);
  }
}

function readOptionFile(option: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new UsageError(`${option} ${file}: cannot read it: ${fileReason(err)}`);
  }
}

function connectReason(err: unknown): string {
  const message = (err as Error).message;
  if (message === "Couldn't connect to server") return 'no answer to CONNECT in time';
  return networkReason(err);
}

function bytes(text: string, hex: boolean | undefined): Buffer {
  if (!hex) return Buffer.from(text, 'utf8');
  if (!/^([0-9a-fA-F]{2})*$/.test(text)) throw new UsageError(`not hex: ${text}`);
  return Buffer.from(text, 'hex');
}

function show(value: Buffer, hex: boolean | undefined): string {
  return hex ? value.toString('hex') : value.toString('utf8');
}

/** Run an action, turning failures into a message on stderr and an exit code. */
function action<A extends unknown[]>(run: (...args: A) => Promise<number>) {
  return async (...args: A) => {
    try {
      process.exitCode = await run(...args);
    } catch (err) {
      if (err instanceof UsageError) {
        fail('state', err.message);
        process.exitCode = EXIT.usage;
      } else if (err instanceof UnreachableError) {
        fail('state', err.message);
        process.exitCode = EXIT.unreachable;
      } else if (err instanceof StateStoreError && (err.kind === 'timeout' || err.kind === 'closed')) {
        fail('state', `${err.message}; is the state store running on this broker?`);
        process.exitCode = EXIT.unreachable;
      } else if (err instanceof StateStoreError && err.kind === 'server') {
        fail('state', `the state store answered: ERR ${err.message}`);
        process.exitCode = EXIT.failed;
      } else {
        fail('state', (err as Error).message);
        process.exitCode = EXIT.failed;
      }
    }
  };
}

export function register(program: Command): void {
  const state = program
    .command('state')
    .description('get, set, delete and watch keys in the state store (MQTT 5; this broker or any that speaks the protocol)')
    .option('--url <url>', 'broker URL: mqtt://, mqtts://, ws://, wss://', 'mqtt://localhost:1883')
    .option('--client-id <id>', 'MQTT client id (default: edb-state-<pid>-<random>)')
    .option('-u, --username <name>', 'user name')
    .option('-P, --password <password>', 'password')
    .option('--ca <file>', 'PEM CA to verify the broker (mqtts://, wss://)')
    .option('--cert <file>', 'PEM client certificate')
    .option('--key <file>', 'PEM client private key')
    .option('--insecure', 'do not verify the broker certificate')
    .option('--timeout <ms>', 'connect and answer timeout', '10000')
    .option('--hex', 'keys and values are given and shown as hex');

  state
    .command('get <key>')
    .description('print the value of KEY (exit 1 when absent)')
    .option('--show-version', 'also print the key version to stderr')
    .action(
      action(async (key: string, local: { showVersion?: boolean }, cmd: Command) => {
        const opts = connectionOptions(cmd);
        return withStore(opts, async (store) => {
          const r = await store.get(bytes(key, opts.hex));
          if (!r.value) {
            process.stderr.write('(nil)\n');
            return 1;
          }
          process.stdout.write(show(r.value, opts.hex));
          if (process.stdout.isTTY || opts.hex) process.stdout.write('\n');
          if (local.showVersion && r.version) process.stderr.write(`version ${formatHlc(r.version)}\n`);
          return 0;
        });
      }),
    );

  state
    .command('set <key> <value>')
    .description('store VALUE under KEY (exit 1 when --nx/--nex did not hold); prints OK and the version')
    .option('--nx', 'only if KEY is absent')
    .option('--nex', 'only if KEY is absent or already holds VALUE')
    .option('--px <ms>', 'expire KEY after this many milliseconds')
    .option('--fencing-token <hlc>', 'fencing token (__ft) for a protected key')
    .action(
      action(async (key: string, value: string, local: { nx?: boolean; nex?: boolean; px?: string; fencingToken?: string }, cmd: Command) => {
        const opts = connectionOptions(cmd);
        if (local.nx && local.nex) throw new UsageError('--nx and --nex exclude each other');
        let expiresInMs: number | undefined;
        if (local.px !== undefined) {
          expiresInMs = Number(local.px);
          if (!/^\d+$/.test(local.px) || expiresInMs < 1) throw new UsageError('--px must be a whole number of milliseconds, at least 1');
        }
        const k = bytes(key, opts.hex);
        const v = bytes(value, opts.hex);
        return withStore(opts, async (store) => {
          const r = await store.set(k, v, {
            condition: local.nx ? 'nx' : local.nex ? 'nex' : undefined,
            expiresInMs,
            fencingToken: local.fencingToken,
          });
          if (!r.applied) {
            process.stdout.write('not applied\n');
            return 1;
          }
          process.stdout.write(`OK${r.version ? ` ${formatHlc(r.version)}` : ''}\n`);
          return 0;
        });
      }),
    );

  state
    .command('del <key>')
    .description('delete KEY; prints the number of keys deleted (exit 1 when none)')
    .option('--value <value>', 'only if KEY holds this value (VDEL)')
    .option('--fencing-token <hlc>', 'fencing token (__ft) for a protected key')
    .action(
      action(async (key: string, local: { value?: string; fencingToken?: string }, cmd: Command) => {
        const opts = connectionOptions(cmd);
        const k = bytes(key, opts.hex);
        return withStore(opts, async (store) => {
          const r =
            local.value !== undefined
              ? await store.vdel(k, bytes(local.value, opts.hex), { fencingToken: local.fencingToken })
              : await store.del(k, { fencingToken: local.fencingToken });
          process.stdout.write(`${r.deleted}\n`);
          return r.deleted === 1 ? 0 : 1;
        });
      }),
    );

  state
    .command('watch <key>')
    .description('print every change of KEY until interrupted: "SET <value>" or "DELETE", with the version')
    .action(
      action(async (key: string, _local: unknown, cmd: Command) => {
        const opts = connectionOptions(cmd);
        const k = bytes(key, opts.hex);
        return withStore(opts, async (store, mqtt) => {
          store.on('notification', (n) => {
            const version = n.version ? ` ${formatHlc(n.version)}` : '';
            if (n.operation === 'SET') process.stdout.write(`SET ${show(n.value ?? Buffer.alloc(0), opts.hex)}${version}\n`);
            else process.stdout.write(`DELETE${version}\n`);
          });
          await store.observe(k);
          process.stderr.write(`watching ${key} (Ctrl-C to stop)\n`);
          await new Promise<void>((resolve) => {
            const stop = () => resolve();
            process.once('SIGINT', stop);
            process.once('SIGTERM', stop);
            mqtt.once('close', stop);
          });
          await store.unobserve(k).catch(() => undefined);
          return 0;
        });
      }),
    );
}
