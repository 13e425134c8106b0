import { describe, expect, it } from 'vitest';
import { Session, type Delivery, type InflightEntry } from '../../src/session/session.js';
import type { QoS } from '../../src/mqtt/message.js';

function delivery(topic: string, payload: string, qos: QoS): Delivery {
  return { message: { topic, payload: Buffer.from(payload), qos, retain: false }, qos, retain: false, subscriptionIds: undefined };
}

describe('Session', () => {
  it('queues in order and counts messages and bytes', () => {
    const s = new Session('c');
    s.enqueue(delivery('t', 'one', 1));
    s.enqueue(delivery('tt', 'three', 0));
    expect(s.queued).toBe(2);
    expect(s.queueBytes).toBe(1 + 3 + 2 + 5);
    expect(s.peek()!.message.payload.toString()).toBe('one');
    expect(s.shift()!.message.payload.toString()).toBe('one');
    expect(s.queued).toBe(1);
    expect(s.queueBytes).toBe(7);
    expect(s.shift()!.message.payload.toString()).toBe('three');
    expect(s.shift()).toBeUndefined();
    expect(s.peek()).toBeUndefined();
    expect(s.queued).toBe(0);
    expect(s.queueBytes).toBe(0);
  });

  it('keeps the broker-wide account equal to the sum of its sessions\' queued bytes', () => {
    const account = { bytes: 0 };
    const a = new Session('a');
    a.enqueue(delivery('t', 'before', 1)); // queued before it is attached (a restored session)
    a.attach(account);
    const b = new Session('b');
    b.attach(account);
    const sum = (): number => a.queueBytes + b.queueBytes;
    expect(account.bytes).toBe(sum());
    for (let i = 0; i < 50; i++) {
      (i % 2 ? a : b).enqueue(delivery('topic', 'x'.repeat(i), (i % 3) as QoS));
      if (i % 5 === 0) a.shift();
      if (i % 7 === 0) b.dropOldestQos0();
      expect(account.bytes).toBe(sum());
    }
    a.clearQueue();
    expect(account.bytes).toBe(b.queueBytes);
    b.clearQueue();
    expect(account.bytes).toBe(0);
  });

  it('stays in order and bounded across compaction', () => {
    const s = new Session('c');
    let next = 0;
    let expected = 0;
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 100; i++) s.enqueue(delivery('t', String(next++), 1));
      for (let i = 0; i < 90; i++) expect(s.shift()!.message.payload.toString()).toBe(String(expected++));
    }
    expect(s.queued).toBe(next - expected);
    expect(s.queue.length).toBeLessThan(5000); // compacted, not 5000 slots
    while (s.queued > 0) expect(s.shift()!.message.payload.toString()).toBe(String(expected++));
    expect(expected).toBe(next);
  });

  it('dropOldestQos0 removes only the oldest QoS 0 message', () => {
    const s = new Session('c');
    s.enqueue(delivery('t', 'q1', 1));
    s.enqueue(delivery('t', 'q0a', 0));
    s.enqueue(delivery('t', 'q0b', 0));
    expect(s.dropOldestQos0()).toBe(true);
    expect(s.queued).toBe(2);
    expect(s.queueBytes).toBe(1 + 2 + 1 + 3);
    expect(s.shift()!.message.payload.toString()).toBe('q1');
    expect(s.shift()!.message.payload.toString()).toBe('q0b');
    s.enqueue(delivery('t', 'q2', 2));
    expect(s.dropOldestQos0()).toBe(false);
    expect(s.queued).toBe(1);
  });

  it('dropOldestQos0 ignores already-shifted slots', () => {
    const s = new Session('c');
    s.enqueue(delivery('t', 'old0', 0));
    s.enqueue(delivery('t', 'q1', 1));
    s.shift(); // old0 is gone
    expect(s.dropOldestQos0()).toBe(false);
    expect(s.queued).toBe(1);
  });

  it('clearQueue empties everything', () => {
    const s = new Session('c');
    for (let i = 0; i < 5; i++) s.enqueue(delivery('t', 'x', 1));
    s.shift();
    s.clearQueue();
    expect(s.queued).toBe(0);
    expect(s.queueBytes).toBe(0);
    expect(s.peek()).toBeUndefined();
  });

  it('allocates packet ids 1..65535, wrapping and skipping those in flight [MQTT-5-2.2.1-3]', () => {
    const s = new Session('c');
    expect(s.allocatePacketId()).toBe(1);
    expect(s.allocatePacketId()).toBe(2);
    const entry = (packetId: number): InflightEntry => ({ ...delivery('t', 'x', 1), packetId, state: 'publish' });
    s.addInflight(entry(3));
    s.addInflight(entry(4));
    expect(s.allocatePacketId()).toBe(5);
    for (let id = 6; id <= 65535; id++) expect(s.allocatePacketId()).toBe(id);
    // wraps to 1, never 0, and skips 3 and 4 which are still in flight
    expect(s.allocatePacketId()).toBe(1);
    expect(s.allocatePacketId()).toBe(2);
    expect(s.allocatePacketId()).toBe(5);
  });

  it('throws when all 65535 ids are in flight', () => {
    const s = new Session('c');
    for (let id = 1; id <= 65535; id++) s.addInflight({ ...delivery('t', 'x', 1), packetId: id, state: 'publish' });
    expect(() => s.allocatePacketId()).toThrow(/no free packet identifier/);
  });
});
