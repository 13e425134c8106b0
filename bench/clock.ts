/**
 * Microseconds on process.hrtime(): CLOCK_MONOTONIC on Linux, one clock shared by every
 * process on the machine, so a send time written by one process can be subtracted from an
 * arrival time read in another.
 */
export function nowMicros(): number {
  const t = process.hrtime();
  return t[0] * 1e6 + t[1] / 1e3;
}
