import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs (pino). `pretty` (or `auto` on a terminal) renders readable lines
 * through pino-pretty in a worker thread, so the broker's hot path never formats text.
 */
export function createLogger(level: string, format: 'auto' | 'json' | 'pretty' = 'auto'): Logger {
  const pretty = format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true);
  if (pretty) {
    return pino({ level, base: { name: 'edb' }, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino({ level, base: { name: 'edb' } });
}

/** A logger that writes nothing, for tests and embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
