/**
 * `edb rules get | set FILE | patch FILE | delete`: the fr_script document over the rules
 * HTTP API (EDB_RULES_PORT, default 8000). `-` reads the document from standard input.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { EXIT, fail, fileReason, networkReason } from './exit-codes.js';

interface Options {
  url?: string;
  ifMatch?: string;
}

function baseUrl(options: Options): string {
  if (options.url) return options.url.replace(/\/+$/, '');
  const port = process.env['EDB_RULES_PORT'] ?? '8000';
  return `http://127.0.0.1:${port}`;
}

async function readDocument(file: string): Promise<string | undefined> {
  if (file !== '-') {
    try {
      return await readFile(file, 'utf8');
    } catch (err) {
      fail('rules', `cannot read ${file}: ${fileReason(err)}; give the path of a JSON rules document, or - for standard input`);
      process.exitCode = EXIT.usage;
      return undefined;
    }
  }
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** EDB_ADMIN_TOKEN (from `edb token create`) as a bearer token, when set. */
function authHeader(): Record<string, string> {
  const token = process.env['EDB_ADMIN_TOKEN'];
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** `edb rules test DOC.json MESSAGES.jsonl`: one line per message ({"topic", "payload", "t"}); prints the outputs, one JSON line each. */
async function test(options: Options, docFile: string, messagesFile: string): Promise<void> {
  let body: string;
  try {
    const docText = docFile === '@active' ? undefined : await readDocument(docFile);
    if (docFile !== '@active' && docText === undefined) return; // said why, exit code set
    const messagesText = await readDocument(messagesFile);
    if (messagesText === undefined) return;
    const lines = messagesText.split('\n');
    const messages: unknown[] = [];
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === '') continue;
      try {
        messages.push(JSON.parse(line));
      } catch (err) {
        throw new Error(`${messagesFile}:${i + 1}: not JSON: ${(err as Error).message}`);
      }
    }
    let document: unknown;
    if (docText !== undefined) {
      try {
        document = JSON.parse(docText);
      } catch (err) {
        throw new Error(`${docFile}: not JSON: ${(err as Error).message}`);
      }
    }
    body = JSON.stringify({ ...(document === undefined ? {} : { document }), messages });
  } catch (err) {
    fail('rules', `${(err as Error).message}; fix the file`);
    process.exitCode = EXIT.usage;
    return;
  }
  await request('POST', options, body, '/test', (text) => {
    const result = JSON.parse(text) as { outputs: unknown[] };
    return result.outputs.map((o) => JSON.stringify(o)).join('\n') + (result.outputs.length > 0 ? '\n' : '');
  });
}

async function request(method: string, options: Options, body?: string, path = '/', format?: (text: string) => string): Promise<void> {
  const url = `${baseUrl(options)}${path}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      ...(body === undefined ? {} : { body }),
      headers: { 'content-type': 'application/json', ...(options.ifMatch ? { 'if-match': options.ifMatch } : {}), ...authHeader() },
    });
  } catch (err) {
    fail('rules', `cannot reach the rules API at ${url}: ${networkReason(err)}; is the broker running? set --url or EDB_RULES_PORT`);
    process.exitCode = EXIT.unreachable;
    return;
  }
  const text = await res.text();
  if (res.ok) {
    if (format) {
      process.stdout.write(format(text));
      return;
    }
    process.stdout.write(text.endsWith('\n') ? text : text + '\n');
    const etag = res.headers.get('etag');
    if (etag && method !== 'GET') process.stderr.write(`ETag: ${etag}\n`);
    return;
  }
  let message = text;
  try {
    const parsed = JSON.parse(text) as { error?: { message?: string } };
    if (parsed.error?.message) message = parsed.error.message;
  } catch {
    // not JSON: print as is
  }
  fail('rules', `the broker refused the request (HTTP ${res.status}): ${message.trim()}`);
  process.exitCode = EXIT.failed;
}

export function register(program: Command): void {
  const rules = program
    .command('rules')
    .description('Show or change the fr_script filters and rules (over the rules HTTP API)')
    .option('--url <url>', 'rules API base URL (default http://127.0.0.1:$EDB_RULES_PORT, port 8000)')
    .option('--if-match <etag>', 'only write if this is the active document (from `edb rules get`)');
  const opts = (): Options => rules.opts<Options>();
  rules
    .command('get')
    .description('Print the active document')
    .action(() => request('GET', opts()));
  rules
    .command('set <file>')
    .description('Replace the whole document with FILE (- for standard input)')
    .action(async (file: string) => {
      const text = await readDocument(file);
      if (text !== undefined) await request('POST', opts(), text);
    });
  rules
    .command('patch <file>')
    .description('Add the filters and rules of FILE; a rule sharing a statement id replaces the old one')
    .action(async (file: string) => {
      const text = await readDocument(file);
      if (text !== undefined) await request('PATCH', opts(), text);
    });
  rules
    .command('test <document> <messages>')
    .description('Print what DOCUMENT (a file, - for standard input, @active for the active one) would publish and write for MESSAGES (JSON lines {"topic","payload","t"}); nothing is activated')
    .action((doc: string, messages: string) => test(opts(), doc, messages));
  rules
    .command('delete')
    .description('Remove every filter and rule')
    .action(() => request('DELETE', opts()));
}
