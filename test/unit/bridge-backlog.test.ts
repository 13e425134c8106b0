import { describe, expect, it } from 'vitest';
import { Backlog, type BacklogEntry } from '../../src/bridge/backlog.js';

const entry = (n: number, storedAt = 1000, bytes = 10): BacklogEntry => ({
  message: { topic: `t/${n}`, payload: Buffer.from(String(n)), qos: 1, retain: false },
  pos: { gen: 1, offset: n },
  qos: 1,
  remoteTopic: `t/${n}`,
  bytes,
  storedAt,
  state: 0,
});

describe('bridge backlog', () => {
  it('sends in order, releases on acknowledgement, and moves its position past acknowledged entries only', () => {
    const b = new Backlog({ maxMessages: 100, maxBytes: 0, maxAgeMs: 0 });
    const es = [0, 1, 2, 3].map((n) => entry(n));
    for (const e of es) b.push(e);
    expect([b.nextToSend(), b.nextToSend(), b.nextToSend()].map((e) => e!.message.topic)).toEqual(['t/0', 't/1', 't/2']);
    b.done(es[1]!); // out of order: the head stays at 0
    expect(b.headPosition).toEqual({ gen: 1, offset: 0 });
    b.done(es[0]!);
    expect(b.headPosition).toEqual({ gen: 1, offset: 2 });
    expect(b.size).toBe(2);
    // the link drops: what was sent and not acknowledged goes again, first
    b.rewind();
    expect([b.nextToSend(), b.nextToSend(), b.nextToSend()].map((e) => e?.message.topic)).toEqual(['t/2', 't/3', undefined]);
    b.done(es[2]!);
    b.done(es[3]!);
    expect(b.size).toBe(0);
    expect(b.headPosition).toBeUndefined();
  });

  it('drops the oldest past the message, byte and age bounds, counting each by reason', () => {
    const b = new Backlog({ maxMessages: 3, maxBytes: 0, maxAgeMs: 0 });
    for (let n = 0; n < 10; n++) b.push(entry(n));
    expect(b.size).toBe(3);
    expect(b.dropped.buffer_full).toBe(7);
    expect(b.nextToSend()!.message.topic).toBe('t/7');

    const bytes = new Backlog({ maxMessages: 100, maxBytes: 25, maxAgeMs: 0 });
    for (let n = 0; n < 5; n++) bytes.push(entry(n));
    expect(bytes.size).toBe(2);
    expect(bytes.bytes).toBe(20);
    expect(bytes.dropped.buffer_full).toBe(3);

    const age = new Backlog({ maxMessages: 100, maxBytes: 0, maxAgeMs: 1000 });
    age.push(entry(0, 1000));
    age.push(entry(1, 1500));
    age.push(entry(2, 2400)); // the push applies the bound too: the one from 1000 goes
    expect(age.size).toBe(2);
    expect(age.enforce(2600)).toBe(1);
    expect(age.dropped.too_old).toBe(2);
    expect(age.oldestStoredAt).toBe(2400);
  });

  it('an entry sent, then dropped by a bound, is not sent again and its late acknowledgement is harmless', () => {
    const b = new Backlog({ maxMessages: 2, maxBytes: 0, maxAgeMs: 0 });
    const first = entry(0);
    b.push(first);
    expect(b.nextToSend()).toBe(first);
    b.push(entry(1));
    b.push(entry(2)); // drops the in-flight first one
    b.done(first);
    b.rewind();
    expect([b.nextToSend(), b.nextToSend(), b.nextToSend()].map((e) => e?.message.topic)).toEqual(['t/1', 't/2', undefined]);
    expect(b.size).toBe(2);
  });

  it('a generation the log dropped: its waiting entries are counted by reason, in-flight ones stay, sending goes on with the next stored', () => {
    const b = new Backlog({ maxMessages: 100, maxBytes: 0, maxAgeMs: 0 });
    const at = (gen: number, n: number): BacklogEntry => ({ ...entry(n), pos: { gen, offset: n } });
    const es = [at(1, 0), at(1, 1), at(2, 2), at(2, 3), at(3, 4)];
    const memoryOnly: BacklogEntry = { ...entry(9), pos: undefined };
    b.push(es[0]!);
    b.push(es[1]!);
    b.push(memoryOnly);
    for (const e of es.slice(2)) b.push(e);
    expect(b.nextToSend()).toBe(es[0]); // in flight
    expect(b.dropStoredThrough(2, 'size_cap')).toBe(3); // 1/1, 2/2, 2/3
    expect(b.dropped).toEqual({ buffer_full: 0, too_old: 0, retention: 0, size_cap: 3 });
    expect(b.size).toBe(3); // the one in flight, the memory-only one, 3/4
    expect([b.nextToSend(), b.nextToSend(), b.nextToSend()].map((e) => e?.message.topic)).toEqual(['t/9', 't/4', undefined]);
    b.done(es[0]!); // the in-flight one acknowledged after all
    expect(b.headPosition).toBeUndefined(); // the memory-only one has no position
    b.done(memoryOnly);
    expect(b.headPosition).toEqual({ gen: 3, offset: 4 });
    expect(b.dropStoredThrough(2, 'retention')).toBe(0);
    b.rewind();
    expect(b.dropStoredThrough(3, 'retention')).toBe(1); // sent, not acknowledged, rewound: waiting again
    expect(b.size).toBe(0);
    expect(b.dropped.retention).toBe(1);
  });
});
