/**
 * Cost of the ACL on the delivery path (authorizeDelivery runs for every message and every
 * subscriber). Compares, in one run: no ACL (the hook returns at once), a realistic ACL
 * with the per-client decision cache warm, and the same ACL with the cache defeated
 * (every topic new). Prints ops/s and ratios against "no ACL".
 *
 *   npm run build && node dist/bench/acl.js
 */
import b from 'benny';
import { ClientAcl, parseAcl } from '../src/auth/acl.js';

const lines: string[] = ['topic read public/#', 'topic read $SYS/#'];
for (let u = 0; u < 200; u++) {
  lines.push(`user user-${u}`, `topic readwrite site/${u}/#`, `topic read site/+/status`, `topic deny site/${u}/secret/#`);
}
for (let p = 0; p < 10; p++) lines.push(`pattern readwrite clients/%c/area${p}/#`, `pattern read users/%u/inbox${p}`);
const doc = parseAcl(lines.join('\n'));
const acl = new ClientAcl(doc, 'dev-42', 'user-42');
const noAcl: ClientAcl | null = null;

const hot = Array.from({ length: 64 }, (_, i) => `site/42/sensor/${i}/temp`);
let n = 0;
let sink = 0;

function check(c: ClientAcl | null, topic: string): boolean {
  return c === null ? true : c.canRead(topic);
}

void b
  .suite(
    'ACL check per delivery',
    b.add('no ACL', () => {
      if (check(noAcl, hot[n++ & 63]!)) sink++;
    }),
    b.add('ACL, 200 users, cache warm', () => {
      if (check(acl, hot[n++ & 63]!)) sink++;
    }),
    b.add('ACL, 200 users, every topic new', () => {
      if (check(acl, `site/42/sensor/${n++}/temp`)) sink++;
    }),
    b.cycle(),
    b.complete((summary) => {
      const base = summary.results.find((r) => r.name === 'no ACL')!.ops;
      for (const r of summary.results) console.log(`${r.name}: ${r.ops.toLocaleString('en')} ops/s, ${(base / r.ops).toFixed(1)}x the cost of no ACL`);
      if (sink < 0) console.log(sink);
    }),
  );
