/**
 * The one table of exit codes, shared by every `edb` command (and printed by `edb --help`):
 * a script can tell a typo from a missing key from a broker that is down.
 */
export const EXIT = {
  /** Done. */
  ok: 0,
  /**
   * The operation failed: the key is absent, a conditional write did not apply, the
   * broker refused the request; for `edb start`, the environment (a port in use, a folder
   * that cannot be written).
   */
  failed: 1,
  /** Usage or configuration error: a bad option, argument, setting or file. Nothing was done. */
  usage: 2,
  /** The broker (or its HTTP API) cannot be reached or did not answer in time. */
  unreachable: 3,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** For `edb --help` and the docs (docs/operations.md shows the same table; a test compares them). */
export const EXIT_CODES_HELP = `Exit codes (every command):
  0  done
  1  the operation failed: key absent, write not applied, request refused;
     edb start: the environment (port in use, folder not writable)
  2  usage or configuration error (bad option, argument, setting or file)
  3  cannot reach the broker, or no answer in time`;

/** A mistake in how the command was called; exits with EXIT.usage. */
export class UsageError extends Error {}

/** The broker could not be reached; exits with EXIT.unreachable. */
export class UnreachableError extends Error {}

/** The broker answered, but the operation failed; exits with EXIT.failed. */
export class OperationError extends Error {}

/**
 * The one style of every message: `edb <command>: <what is wrong>[; <what to do>]`, on one
 * line, lower case after the prefix, no full stop.
 */
export function fail(command: string, message: string): void {
  process.stderr.write(`edb ${command}: ${message.replace(/\s*\n\s*/g, ' ').replace(/\.$/, '')}\n`);
}

/** Exit code for an error thrown by a command's action. */
export function exitCodeOf(err: unknown): ExitCode {
  if (err instanceof UsageError) return EXIT.usage;
  if (err instanceof UnreachableError) return EXIT.unreachable;
  return EXIT.failed;
}

/** The cause of a failed fetch/connect in words: "connection refused (ECONNREFUSED)". */
export function networkReason(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string; errors?: { code?: string }[] } };
  const code = e.cause?.code ?? e.code ?? e.cause?.errors?.[0]?.code;
  const words: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ENOTFOUND: 'no such host',
    EAI_AGAIN: 'the host name cannot be resolved now',
    ETIMEDOUT: 'timed out',
    ECONNRESET: 'the connection was reset',
    EHOSTUNREACH: 'no route to the host',
    ENETUNREACH: 'the network is unreachable',
    UND_ERR_CONNECT_TIMEOUT: 'timed out',
  };
  if (code && words[code]) return `${words[code]} (${code})`;
  if ((e as Error).name === 'TimeoutError' || (e as Error).name === 'AbortError') return 'no answer in time';
  const message = e.cause?.message ?? e.message ?? String(err);
  return code && !message.includes(code) ? `${message} (${code})` : message;
}

/** Node's words for a file error, without the syscall noise: "no such file (ENOENT)". */
export function fileReason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const words: Record<string, string> = {
    ENOENT: 'no such file',
    EACCES: 'permission denied',
    EPERM: 'permission denied',
    EISDIR: 'it is a folder, not a file',
    ENOTDIR: 'a part of the path is not a folder',
    EROFS: 'the file system is read-only',
    ENOSPC: 'no space left on the device',
  };
  if (code && words[code]) return `${words[code]} (${code})`;
  return (err as Error).message;
}
