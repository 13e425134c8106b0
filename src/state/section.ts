/**
 * The state store's backup section (and durable storage's snapshot of the table).
 *
 * [layout] u32 version, u32 key count, u16 node id length, node id, f64 clock wall,
 * u32 clock counter, then snapshot records (assembly/state/codes.ts RECORD_HEADER).
 */
import type { Logger } from 'pino';
import type { HybridLogicalClock } from './hlc.js';
import { codes, type StateTable } from './table.js';

const SECTION_VERSION = 1;
/** Section header without the node id: version, count, node id length, clock wall, clock counter. */
const HEADER = 4 + 4 + 2 + 8 + 4;

export function saveStateSection(table: StateTable, clock: HybridLogicalClock, now: number): Buffer {
  const node = Buffer.from(clock.node, 'utf8');
  const records = table.exportRecords(now);
  const head = Buffer.alloc(HEADER + node.length);
  head.writeUInt32LE(SECTION_VERSION, 0);
  head.writeUInt32LE(records.length === 0 ? 0 : table.size, 4);
  head.writeUInt16LE(node.length, 8);
  node.copy(head, 10);
  const last = clock.last;
  head.writeDoubleLE(last.wall, 10 + node.length);
  head.writeUInt32LE(last.counter, 18 + node.length);
  return Buffer.concat([head, ...records]);
}

/** Replaces the table's keys and the clock's last time with the section's; throws on a bad header. */
export function restoreStateSection(data: Buffer, table: StateTable, clock: HybridLogicalClock, now: number, log: Logger): void {
  if (data.length < HEADER || data.readUInt32LE(0) !== SECTION_VERSION) throw new Error('state section: unknown version');
  const keys = data.readUInt32LE(4);
  const nodeLen = data.readUInt16LE(8);
  if (data.length < HEADER + nodeLen) throw new Error('state section: truncated header');
  clock.restore(data.readDoubleLE(10 + nodeLen), data.readUInt32LE(18 + nodeLen));
  // sized for the count up front: the bulk load never resizes
  table.clear(Math.min(keys, Math.floor(data.length / (codes.RECORD_HEADER + 1))));
  const loaded = table.importRecords(data.subarray(HEADER + nodeLen), now);
  log.info({ keys: loaded }, 'state store restored');
}
