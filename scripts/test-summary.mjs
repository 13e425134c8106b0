// Prints one closing line "Tests: N passed, N failed, N skipped" from vitest's JSON report,
// so CI logs say plainly what ran, and what failed before a retry passed.
import { readFileSync } from 'node:fs';

const [file, label = ''] = process.argv.slice(2);
let report;
try {
  report = JSON.parse(readFileSync(file, 'utf8'));
} catch (err) {
  console.log(`no test report at ${file}: ${err.message}`);
  process.exit(0);
}
const passed = report.numPassedTests ?? 0;
const failed = report.numFailedTests ?? 0;
const skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
if (label) console.log(`(${label})`);
console.log(`Tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);

// A test that passed on a retry: say what failed before, so a flaky test can be fixed, not
// just noticed.
for (const suite of report.testResults ?? []) {
  for (const t of suite.assertionResults ?? []) {
    if (t.status !== 'passed' || !t.failureMessages?.length) continue;
    console.log(`passed on a retry: ${t.fullName}`);
    for (const m of t.failureMessages) console.log(`  earlier failure: ${m.split('\n').slice(0, 2).join(' | ')}`);
  }
}
