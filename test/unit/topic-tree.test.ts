import { afterEach, describe, expect, it, vi } from 'vitest';
import { TopicTree } from '../../src/http/topic-tree.js';
import type { Message } from '../../src/mqtt/message.js';

const msg = (topic: string): Message => ({ topic, payload: Buffer.from('x'), qos: 0, retain: false });

describe('TopicTree', () => {
  afterEach(() => vi.useRealTimers());

  it('counts messages per topic and keeps the last one', () => {
    let t = 1000;
    const tree = new TopicTree(() => t);
    tree.record(msg('a/b'));
    t = 2000;
    const last = msg('a/b');
    tree.record(last);
    tree.record(msg('a/c'));
    const e = tree.entries.get('a/b')!;
    expect(e.messages).toBe(2);
    expect(e.last).toBe(last);
    // without the clock started, each message reads now()
    expect(e.lastAt).toBe(2000);
    const { rows } = tree.children('a');
    expect(rows.map((r) => [r.name, r.messages])).toEqual([['b', 2], ['c', 1]]);
  });

  it('stamps messages from a clock refreshed once a second once started, not per message', () => {
    vi.useFakeTimers();
    let t = 5000;
    let reads = 0;
    const tree = new TopicTree(() => (reads++, t));
    tree.startClock();
    reads = 0;
    t = 5400;
    for (let i = 0; i < 100; i++) tree.record(msg('x'));
    expect(reads).toBe(0);
    expect(tree.entries.get('x')!.lastAt).toBe(5000);
    t = 6000;
    vi.advanceTimersByTime(1000);
    tree.record(msg('x'));
    expect(tree.entries.get('x')!.lastAt).toBe(6000);
    tree.close();
  });
});
