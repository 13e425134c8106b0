import type { Command } from 'commander';
import { join } from 'node:path';
import { EXIT, fail, fileReason } from './exit-codes.js';
import { isRole, newToken, readTokenFile, ROLES, TokenFileError, writeTokenFile } from '../auth/admin-users.js';

/**
 * `edb token create --role ROLE [--name NAME]`, `edb token list`, `edb token revoke ID`:
 * API tokens for the HTTP API and the rules API (`Authorization: Bearer <token>`, or
 * EDB_ADMIN_TOKEN for `edb clients` / `edb rules`). The file keeps only a hash of each token;
 * the token itself is printed once. The running broker sees a change at the next request.
 * Exit status (the table of every command, src/cli/exit-codes.ts): 0 done; 1 no such
 * token, a name taken, the file cannot be read or written; 2 usage (a bad --role or --name).
 */

interface FileOption {
  file?: string;
}

/** --file, else EDB_ADMIN_TOKENS_FILE, else <EDB_DATA_DIR or ./data>/admin-tokens.json (as the broker). */
export function tokenFilePath(options: FileOption): string {
  return options.file ?? process.env['EDB_ADMIN_TOKENS_FILE'] ?? join(process.env['EDB_DATA_DIR'] ?? './data', 'admin-tokens.json');
}

class TokenCliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
  }
}

export async function createToken(path: string, role: string, name: string | undefined): Promise<{ id: string; token: string }> {
  if (!isRole(role)) throw new TokenCliError(`--role ${role}: not a role; use one of ${ROLES.join(', ')}`, EXIT.usage);
  if (name !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new TokenCliError(`--name ${name}: not a token name; use 1 to 64 letters, digits, ".", "_" or "-"`, EXIT.usage);
  const tokens = await readTokenFile(path);
  if (name !== undefined && tokens.some((t) => t.name === name)) throw new TokenCliError(`a token named "${name}" exists: revoke it first (edb token revoke ${tokens.find((t) => t.name === name)!.id})`);
  const { token, record } = newToken(role, name ?? '');
  await writeTokenFile(path, [...tokens, record]);
  return { id: record.id, token };
}

export async function revokeToken(path: string, idOrName: string): Promise<string> {
  const tokens = await readTokenFile(path);
  const gone = tokens.find((t) => t.id === idOrName || (t.name !== '' && t.name === idOrName));
  if (!gone) throw new TokenCliError(`no token "${idOrName}" in ${path} (see edb token list)`);
  await writeTokenFile(path, tokens.filter((t) => t !== gone));
  return gone.id;
}

async function run(action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (err instanceof TokenCliError || err instanceof TokenFileError || (err as NodeJS.ErrnoException).code !== undefined) {
      const code = (err as NodeJS.ErrnoException).code;
      fail('token', err instanceof TokenCliError || err instanceof TokenFileError || code === undefined ? (err as Error).message : `${(err as NodeJS.ErrnoException).path ?? 'the token file'}: ${fileReason(err)}`);
      process.exitCode = err instanceof TokenCliError ? err.exitCode : EXIT.failed;
      return;
    }
    throw err;
  }
}

export function register(program: Command): void {
  const cmd = program.command('token').description('API tokens for the HTTP and rules APIs (stored hashed, revocable)');
  cmd
    .command('create')
    .description('make a token and print it (once)')
    .requiredOption('-r, --role <role>', ROLES.join(' | '))
    .option('-n, --name <name>', 'a name for the token (the user name its rules uploads are checked as against the ACL)')
    .option('-f, --file <file>', 'token file (default EDB_ADMIN_TOKENS_FILE, or <EDB_DATA_DIR>/admin-tokens.json)')
    .action((opts: FileOption & { role: string; name?: string }) =>
      run(async () => {
        const path = tokenFilePath(opts);
        const { id, token } = await createToken(path, opts.role, opts.name);
        process.stdout.write(`${token}\n`);
        process.stderr.write(`token ${id} (${opts.role}) added to ${path}; it is shown only now\n`);
      }),
    );
  cmd
    .command('list')
    .description('list tokens (id, name, role, created)')
    .option('-f, --file <file>', 'token file')
    .option('--json', 'JSON')
    .action((opts: FileOption & { json?: boolean }) =>
      run(async () => {
        const tokens = (await readTokenFile(tokenFilePath(opts))).map(({ id, name, role, createdAt }) => ({ id, name, role, createdAt }));
        if (opts.json) process.stdout.write(JSON.stringify(tokens, null, 2) + '\n');
        else for (const t of tokens) process.stdout.write(`${t.id}\t${t.role}\t${t.name || '-'}\t${t.createdAt}\n`);
      }),
    );
  cmd
    .command('revoke')
    .description('revoke a token by id or name (refused from the next request on)')
    .argument('<id>', 'token id (the part after edb_) or name')
    .option('-f, --file <file>', 'token file')
    .action((id: string, opts: FileOption) =>
      run(async () => {
        const path = tokenFilePath(opts);
        const revoked = await revokeToken(path, id);
        process.stderr.write(`token ${revoked} revoked in ${path}\n`);
      }),
    );
}
