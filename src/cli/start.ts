import type { Command } from 'commander';
import { ConfigError, EnvironmentError, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { EdbServer } from '../server.js';
import { EXIT } from './exit-codes.js';
import { releaseYoungGeneration } from './young-generation.js';
import { releaseTiering } from './start-tiering.js';

/**
 * A start-up failure as one line on stderr, and its exit code: 2 for a setting or a file
 * named by one, 1 for the environment (a port in use, a folder the broker may not write)
 * and for anything unexpected. The stack only with EDB_LOG_LEVEL=debug (or trace).
 */
function startFailure(err: unknown, debug: boolean): never {
  const message = (err as Error).message ?? String(err);
  // a storage folder the broker cannot open (src/storage): named, and exit code 2 like a setting
  const storage = (err as { code?: unknown }).code === 'EDB_STORAGE_OPEN';
  if (storage) {
    process.stderr.write(`edb start: ${message}; check EDB_DATA_DIR (durable storage lives in its storage folder), or move the folder away to start empty\n`);
  } else if (err instanceof ConfigError) {
    process.stderr.write(`edb start: ${message}\n`);
  } else if (err instanceof EnvironmentError) {
    process.stderr.write(`edb start: ${message}\n`);
  } else {
    process.stderr.write(`edb start: cannot start: ${message}${debug ? '' : ' (EDB_LOG_LEVEL=debug shows the details)'}\n`);
  }
  if (debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(err instanceof ConfigError || storage ? EXIT.usage : EXIT.failed);
}

function wantsDebug(config: Config | undefined): boolean {
  const level = config?.logLevel ?? process.env['EDB_LOG_LEVEL']?.trim();
  return level === 'debug' || level === 'trace';
}

/** `edb start`: every setting comes from EDB_* variables over the EDB_CONFIG file. */
export function registerStart(program: Command): void {
  program
    .command('start')
    .description('start the broker (settings from EDB_* environment variables and EDB_CONFIG)')
    .option('-c, --config <file>', 'config file (YAML or JSON); same as EDB_CONFIG')
    .option('--check', 'check the settings, files and folders, print what was checked, and exit (0: fine, 1: environment, 2: configuration); opens no port')
    .action(async (opts: { config?: string; check?: boolean }) => {
      const env = opts.config ? { ...process.env, EDB_CONFIG: opts.config } : process.env;
      let config: Config;
      try {
        config = loadConfig(env);
      } catch (err) {
        startFailure(err, wantsDebug(undefined));
      }
      // loaded here: the other commands (and --help) need not load the broker
      const [{ startEdb }, { checkStartup, checkAddress }, { createLogger }] = await Promise.all([import('../server.js'), import('../startup-check.js'), import('../log.js')]);
      if (opts.check) {
        try {
          checkStartup(config);
          await checkAddress(config);
        } catch (err) {
          startFailure(err, wantsDebug(config));
        }
        process.stdout.write(`${checkSummary(config, env)}\n`);
        process.exit(EXIT.ok);
      }
      const log = createLogger(config.logLevel, config.logFormat);
      // Signals are caught from the first moment: start-up restores the backup and deletes
      // its file, so a SIGTERM that killed the process before the handlers existed would
      // lose what was restored. A signal during start-up stops the broker once it is up.
      let server: EdbServer | undefined;
      let requested: string | undefined;
      let stopping = false;
      const stop = (signal: string): void => {
        if (!server) {
          requested ??= signal;
          log.info({ signal }, 'stop requested while starting; stopping once started');
          return;
        }
        if (stopping) return;
        stopping = true;
        log.info({ signal }, 'stopping');
        // a bounded stop: never hang past the shutdown timeout plus a margin
        const force = setTimeout(() => {
          log.error('graceful stop took too long; exiting');
          process.exit(EXIT.failed);
        }, config.shutdownTimeoutMs + 10_000);
        force.unref();
        server.stop().then(
          () => {
            log.info('stopped');
            log.flush?.();
            process.exit(EXIT.ok);
          },
          (err: unknown) => {
            log.error({ err }, 'error while stopping');
            process.exit(EXIT.failed);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      try {
        server = await startEdb(config, log);
      } catch (err) {
        log.flush?.();
        startFailure(err, wantsDebug(config));
      }
      releaseYoungGeneration(); // started: traffic may grow V8's young generation again
      releaseTiering(); // and V8 may optimise the hot path
      if (requested) stop(requested);
    });
}

/** What `edb start --check` looked at, on one line. */
function checkSummary(config: Config, env: NodeJS.ProcessEnv): string {
  const checked = [env['EDB_CONFIG'] ? `config file ${env['EDB_CONFIG']}` : 'settings (no config file)'];
  if (config.tlsCert) checked.push(`TLS certificate and key${config.tlsCa ? ' and CA' : ''}`);
  if (config.passwordFile) checked.push(`password file ${config.passwordFile}`);
  if (config.aclFile) checked.push(`ACL file ${config.aclFile}`);
  if (config.rulesFile) checked.push(`rules document ${config.rulesFile}`);
  checked.push(`data folder ${config.dataDir}${config.backupEnabled ? ' and backup folder' : ''} writable`);
  return `edb start: configuration OK: ${checked.join(', ')} (ports are not tried)`;
}
