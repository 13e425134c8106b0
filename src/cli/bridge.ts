/**
 * `edb bridge show`: the bridges of a running broker as one table, in the shape
 * `vmq-admin bridge show` printed, with more columns:
 *
 *   +------+----------+-------+-------------+------------+---------------------+---------------+--------+--------+------------+
 *   | name | endpoint | state | buffer size | buffer max | buffer dropped msgs | backlog bytes | oldest | sent/s | received/s |
 *
 * Exit code 0, 3 when the broker cannot be reached, 4 when it refuses (exit-codes.ts).
 */
import type { Command } from 'commander';
import type { BridgeSummary } from '../bridge/service.js';
import { exitCodeOf, fail, networkReason, OperationError, UnreachableError } from './exit-codes.js';

const COLUMNS: { title: string; value: (b: BridgeSummary) => string; right?: boolean }[] = [
  { title: 'name', value: (b) => b.name },
  { title: 'endpoint', value: (b) => b.endpoint.replace(/^mqtt:\/\//, '') },
  { title: 'state', value: (b) => b.state },
  { title: 'buffer size', value: (b) => String(b.bufferSize), right: true },
  { title: 'buffer max', value: (b) => String(b.bufferMax), right: true },
  { title: 'buffer dropped msgs', value: (b) => String(b.bufferDropped), right: true },
  { title: 'backlog bytes', value: (b) => String(b.backlogBytes), right: true },
  { title: 'oldest', value: (b) => age(b.oldestMs), right: true },
  { title: 'sent/s', value: (b) => String(b.sentPerSecond), right: true },
  { title: 'received/s', value: (b) => String(b.receivedPerSecond), right: true },
];

function age(ms: number): string {
  if (!ms) return '-';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

/** The vmq-admin style table: +---+ rules, | separated cells, numbers right-aligned. */
export function bridgeTable(rows: readonly BridgeSummary[]): string {
  const cells = rows.map((r) => COLUMNS.map((c) => c.value(r)));
  const widths = COLUMNS.map((c, i) => Math.max(c.title.length, ...cells.map((r) => r[i]!.length)));
  const rule = `+${widths.map((w) => '-'.repeat(w + 2)).join('+')}+`;
  const line = (values: string[], align: boolean) => `|${values.map((v, i) => ` ${align && COLUMNS[i]!.right ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)} `).join('|')}|`;
  return [rule, line(COLUMNS.map((c) => c.title), false), rule, ...cells.map((r) => line(r, true)), rule].join('\n') + '\n';
}

export function register(program: Command): void {
  const bridge = program.command('bridge').description('bridges to other brokers of a running broker');
  bridge
    .command('show')
    .description('print the bridges: name, endpoint, state, buffer size/max/dropped, backlog bytes, oldest message, rates')
    .option('-u, --url <url>', 'broker HTTP API (default http://127.0.0.1:$EDB_HTTP_PORT, port 8888)')
    .option('--json', 'print the JSON instead of a table')
    .action(async (opts: { url?: string; json?: boolean }) => {
      const base = opts.url ? opts.url.replace(/\/+$/, '') : `http://127.0.0.1:${process.env['EDB_HTTP_PORT'] ?? '8888'}`;
      const url = `${base}/api/bridges`;
      try {
        let res: Response;
        try {
          const token = process.env['EDB_ADMIN_TOKEN'];
          res = await fetch(url, { signal: AbortSignal.timeout(10_000), ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}) });
        } catch (err) {
          throw new UnreachableError(`cannot reach the broker's HTTP API at ${url}: ${networkReason(err)}; is it running? set --url or EDB_HTTP_PORT`);
        }
        if (!res.ok) throw new OperationError(`the broker refused the request (HTTP ${res.status}): ${(await res.text()).slice(0, 200).trim()}`);
        const rows = (await res.json()) as BridgeSummary[];
        process.stdout.write(opts.json ? `${JSON.stringify(rows, null, 2)}\n` : bridgeTable(rows));
      } catch (err) {
        fail('bridge show', (err as Error).message);
        process.exitCode = exitCodeOf(err);
      }
    });
}
