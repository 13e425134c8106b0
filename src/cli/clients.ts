/**
 * `edb clients` and `edb subscriptions`: ask a running broker's HTTP API and print a table
 * (in the spirit of `vmq-admin session show`), or the JSON with --json.
 */
import type { Command } from 'commander';
import type { ClientSummary, SubscriptionSummary } from '../broker/api.js';
import { exitCodeOf, fail, networkReason, OperationError, UnreachableError } from './exit-codes.js';

interface Column<T> {
  title: string;
  value: (row: T) => string;
  right?: boolean;
}

/** Plain-text table: a header, a rule, one line per row; numbers right-aligned. */
export function formatTable<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = rows.map((row) => columns.map((c) => c.value(row).replace(/[\r\n\t]/g, ' ')));
  const widths = columns.map((c, i) => Math.max(c.title.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => (columns[i]!.right ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.title)), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n') + '\n';
}

const VERSION_NAMES: Record<number, string> = { 3: '3.1', 4: '3.1.1', 5: '5.0' };

function since(ms: number, now: number): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

export function clientsTable(rows: readonly ClientSummary[], now = Date.now()): string {
  return formatTable(rows, [
    { title: 'CLIENT ID', value: (r) => r.clientId },
    { title: 'USER', value: (r) => r.username ?? '' },
    { title: 'MQTT', value: (r) => VERSION_NAMES[r.protocolVersion] ?? String(r.protocolVersion) },
    { title: 'TRANSPORT', value: (r) => r.transport },
    { title: 'ADDRESS', value: (r) => r.remoteAddress },
    { title: 'CONNECTED', value: (r) => `${new Date(r.connectedAt).toISOString().replace('T', ' ').slice(0, 19)}Z (${since(r.connectedAt, now)})` },
    { title: 'SUBS', value: (r) => String(r.subscriptions), right: true },
    { title: 'QUEUED', value: (r) => String(r.queued), right: true },
    { title: 'INFLIGHT', value: (r) => String(r.inflight), right: true },
  ]);
}

export function subscriptionsTable(rows: readonly SubscriptionSummary[]): string {
  return formatTable(rows, [
    { title: 'CLIENT ID', value: (r) => r.clientId },
    { title: 'FILTER', value: (r) => r.filter },
    { title: 'QOS', value: (r) => String(r.qos), right: true },
    { title: 'SHARE GROUP', value: (r) => r.shareGroup ?? '' },
    { title: 'OPTIONS', value: (r) => [r.noLocal ? 'no-local' : '', r.retainAsPublished ? 'retain-as-published' : ''].filter(Boolean).join(',') },
    { title: 'SUB ID', value: (r) => (r.subscriptionIdentifier === undefined ? '' : String(r.subscriptionIdentifier)), right: true },
    { title: 'ONLINE', value: (r) => (r.online ? 'yes' : 'no') },
  ]);
}

export interface ApiOptions {
  url?: string;
  json?: boolean;
  clientId?: string;
}

/** Base URL of the broker's HTTP API: --url, else EDB_HTTP_PORT on this machine. */
function baseUrl(opts: ApiOptions): string {
  if (opts.url) return opts.url.replace(/\/+$/, '');
  return `http://127.0.0.1:${process.env['EDB_HTTP_PORT'] ?? '8888'}`;
}

export async function fetchJson<T>(opts: ApiOptions, path: string): Promise<T> {
  const query = opts.clientId ? `?clientId=${encodeURIComponent(opts.clientId)}` : '';
  const url = `${baseUrl(opts)}${path}${query}`;
  let res: Response;
  try {
    const token = process.env['EDB_ADMIN_TOKEN']; // from `edb token create`
    res = await fetch(url, { signal: AbortSignal.timeout(10_000), ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}) });
  } catch (err) {
    throw new UnreachableError(`cannot reach the broker's HTTP API at ${url}: ${networkReason(err)}; is it running? set --url or EDB_HTTP_PORT`);
  }
  if (!res.ok) throw new OperationError(`the broker refused the request (HTTP ${res.status}): ${(await res.text()).slice(0, 200).trim()}`);
  return (await res.json()) as T;
}

function command<T>(program: Command, name: string, description: string, path: string, table: (rows: T[]) => string): void {
  program
    .command(name)
    .description(description)
    .option('-u, --url <url>', 'broker HTTP API (default http://127.0.0.1:$EDB_HTTP_PORT, port 8888)')
    .option('-i, --client-id <id>', 'only this client')
    .option('--json', 'print the JSON instead of a table')
    .action(async (opts: ApiOptions) => {
      try {
        const rows = await fetchJson<T[]>(opts, path);
        process.stdout.write(opts.json ? `${JSON.stringify(rows, null, 2)}\n` : table(rows));
      } catch (err) {
        fail(name, (err as Error).message);
        process.exitCode = exitCodeOf(err);
      }
    });
}

export function register(program: Command): void {
  command<ClientSummary>(program, 'clients', 'list the clients connected to a running broker', '/api/clients', (rows) => clientsTable(rows));
  command<SubscriptionSummary>(program, 'subscriptions', 'list the subscriptions of a running broker', '/api/subscriptions', subscriptionsTable);
}
