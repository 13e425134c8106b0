// Preloaded into `edb start` by bench/idle-heap.ts (`node --expose-gc --import`): on SIGUSR2 it
// forces a GC and appends RSS, the JS heap and each V8 heap space (bytes) to $EDB_TEST_PROBE_OUT.
import { appendFileSync, readFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';

process.on('SIGUSR2', () => {
  globalThis.gc?.();
  globalThis.gc?.();
  const m = process.memoryUsage();
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
  const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, [s.space_size, s.space_used_size]]));
  appendFileSync(process.env.EDB_TEST_PROBE_OUT, JSON.stringify({ rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, spaces }) + '\n');
});
