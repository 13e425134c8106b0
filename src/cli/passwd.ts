import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { EXIT, fail, fileReason } from './exit-codes.js';
import { hashPassword, PasswordFileError, PasswordFile, updatePasswordText, validUsername, writePasswordFile } from '../auth/password-file.js';
import { AdminUsers, isAdminUsersText, isRole, ROLES } from '../auth/admin-users.js';

/**
 * `edb passwd FILE USER [--password P] [--role ROLE] [--delete]`: add, change or delete a
 * user in a password file (in the spirit of mosquitto_passwd / vmq-passwd). With --role the
 * file is an admin users file for the HTTP surfaces (EDB_ADMIN_USERS_FILE, `user:role:hash`). Without --password it
 * prompts twice on the terminal without echo, or reads one line from a pipe.
 * The running broker picks the change up by itself (file watch) or on SIGHUP.
 */

export interface PasswdOptions {
  password?: string;
  delete?: boolean;
  /** viewer, operator or admin: the file is an admin users file. */
  role?: string;
}

export interface PasswdIO {
  stdin: NodeJS.ReadStream;
  stderr: NodeJS.WritableStream;
}

export class PasswdError extends Error {
  /** EXIT.usage for a mistake in the command line (a bad user name, an empty password). */
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
  }
}

/** Read a password from the terminal without echoing it. */
function promptHidden(io: PasswdIO, prompt: string): Promise<string> {
  const stdin = io.stdin;
  return new Promise((resolve, reject) => {
    let value = '';
    const wasRaw = stdin.isRaw;
    // raw (no echo) before the prompt shows, so nothing typed in reply to it is echoed
    stdin.setRawMode(true);
    io.stderr.write(prompt);
    stdin.resume();
    stdin.setEncoding('utf8');
    const done = (err?: Error): void => {
      stdin.off('data', onData);
      stdin.setRawMode(wasRaw);
      stdin.pause();
      io.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done();
        if (ch === '\u0003') return done(new PasswdError('cancelled'));
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch >= ' ') value += ch;
      }
    };
    stdin.on('data', onData);
  });
}

/** Read one line from a pipe (`echo secret | edb passwd FILE USER`). */
async function readLineFromPipe(stdin: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  stdin.setEncoding('utf8');
  for await (const chunk of stdin) {
    text += chunk as string;
    if (text.includes('\n')) break;
  }
  const line = text.split(/\r?\n/)[0] ?? '';
  return line;
}

async function askPassword(io: PasswdIO): Promise<string> {
  if (io.stdin.isTTY) {
    const first = await promptHidden(io, 'Password: ');
    const second = await promptHidden(io, 'Reenter password: ');
    if (first !== second) throw new PasswdError('the passwords do not match');
    return first;
  }
  return readLineFromPipe(io.stdin);
}

async function write(file: string, text: string): Promise<void> {
  try {
    await writePasswordFile(file, text);
  } catch (err) {
    throw new PasswdError(`cannot write ${file}: ${fileReason(err)}; check that its folder exists and can be written`);
  }
}

/** Do the work; returns a one-line summary. Throws PasswdError / PasswordFileError with a message for the user. */
export async function runPasswd(file: string, user: string, options: PasswdOptions, io: PasswdIO): Promise<string> {
  if (!validUsername(user)) throw new PasswdError(`user name "${user}" may not be empty or contain ':' or line breaks`, EXIT.usage);
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new PasswdError(`cannot read ${file}: ${fileReason(err)}`);
    if (options.delete) throw new PasswdError(`${file}: no such file`);
  }
  // Refuse to rewrite a file we could not read back: that would silently drop its bad lines.
  const adminFile = isAdminUsersText(text);
  if (adminFile) AdminUsers.parse(text, file);
  else PasswordFile.parse(text, file);
  if (options.role !== undefined && !isRole(options.role)) throw new PasswdError(`--role ${options.role}: not a role; use one of ${ROLES.join(', ')}`, EXIT.usage);
  if (!options.delete) {
    if (options.role !== undefined && !adminFile && /^\s*[^#\s]/m.test(text)) throw new PasswdError(`${file} is an MQTT password file; admin users (--role) go in their own file (EDB_ADMIN_USERS_FILE)`, EXIT.usage);
    if (options.role === undefined && adminFile) throw new PasswdError(`${file} is an admin users file: give the user's role with --role (${ROLES.join(', ')})`, EXIT.usage);
  }

  if (options.delete) {
    const { text: next, existed } = updatePasswordText(text, user, null);
    if (!existed) throw new PasswdError(`user "${user}" is not in ${file}`);
    await write(file, next);
    return `deleted user "${user}" from ${file}`;
  }

  const password = options.password ?? (await askPassword(io));
  if (password.length === 0) throw new PasswdError('empty passwords are not accepted', EXIT.usage);
  const hash = await hashPassword(password);
  const { text: next, existed } = updatePasswordText(text, user, options.role === undefined ? hash : `${options.role}:${hash}`);
  await write(file, next);
  return `${existed ? 'changed the password of' : 'added'} user "${user}"${options.role === undefined ? '' : ` (${options.role})`} in ${file}`;
}

export function register(program: Command): void {
  program
    .command('passwd')
    .description('add or change a user in a password file (scrypt hashes), or delete one')
    .argument('<file>', 'password file (created if missing; EDB_PASSWORD_FILE)')
    .argument('<user>', 'user name')
    .option('-p, --password <password>', 'the password, for scripts (otherwise prompted without echo, or one line from a pipe)')
    .option('-D, --delete', 'delete the user')
    .option('-r, --role <role>', `admin users file for the console and HTTP API (EDB_ADMIN_USERS_FILE): the user's role, ${ROLES.join(' | ')}`)
    .action(async (file: string, user: string, options: PasswdOptions) => {
      try {
        const summary = await runPasswd(file, user, options, { stdin: process.stdin, stderr: process.stderr });
        process.stderr.write(summary + '\n');
      } catch (err) {
        if (err instanceof PasswdError || err instanceof PasswordFileError) {
          fail('passwd', err.message);
          process.exitCode = err instanceof PasswdError ? err.exitCode : EXIT.failed;
          return;
        }
        throw err;
      }
    });
}
