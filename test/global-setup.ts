// One temporary folder per test run: every os.tmpdir() in the test workers and the processes
// they start (brokers, mosquitto, Chromium) points into it, and it is removed when the run
// ends, so test data folders, certificates and backups do not pile up on the machine.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'edb-tests-'));
  process.env['TMPDIR'] = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
