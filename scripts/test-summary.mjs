// Prints one closing line "Tests: N passed, N failed, N skipped" from vitest's JSON report,
// so CI logs say plainly what ran.
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
