import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../config/load.js';
import { createLogger } from '../log.js';
import type { EdbServer } from '../server.js';
import { releaseYoungGeneration } from './young-generation.js';

/** `edb start`: every setting comes from EDB_* variables over the EDB_CONFIG file. */
export function registerStart(program: Command): void {
  program
    .command('start')
    .description('start the broker (settings from EDB_* environment variables and EDB_CONFIG)')
    .option('-c, --config <file>', 'config file (YAML or JSON); same as EDB_CONFIG')
    .action(async (opts: { config?: string }) => {
      const env = opts.config ? { ...process.env, EDB_CONFIG: opts.config } : process.env;
      let config;
      try {
        config = loadConfig(env);
      } catch (err) {
        if (err instanceof ConfigError) {
          process.stderr.write(`edb: invalid configuration: ${err.message}\n`);
          process.exit(2);
        }
        throw err;
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
          process.exit(1);
        }, config.shutdownTimeoutMs + 10_000);
        force.unref();
        server.stop().then(
          () => {
            log.info('stopped');
            log.flush?.();
            process.exit(0);
          },
          (err: unknown) => {
            log.error({ err }, 'error while stopping');
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      try {
        // the broker is loaded here, so the other subcommands (which share this entry point) start fast
        const { startEdb } = await import('../server.js');
        server = await startEdb(config, log);
      } catch (err) {
        // a setting or a storage folder the user must fix: a clear line and exit code 2, no stack
        const code = (err as { code?: unknown }).code;
        if (err instanceof ConfigError || code === 'EDB_STORAGE_OPEN') {
          log.fatal(`cannot start: ${(err as Error).message}`);
          log.flush?.();
          process.stderr.write(`edb: ${(err as Error).message}\n`);
          process.exit(2);
        }
        log.fatal({ err }, `cannot start: ${(err as Error).message}`);
        log.flush?.();
        process.exit(1);
      }
      releaseYoungGeneration(); // started: traffic may grow V8's young generation again
      if (requested) stop(requested);
    });
}
