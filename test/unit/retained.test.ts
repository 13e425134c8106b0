import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RetainedStore } from '../../src/broker/retained.js';
import { topicMatches } from '../../src/topics/match.js';
import type { Message } from '../../src/mqtt/message.js';

const msg = (topic: string, payload: string, expiresAt?: number): Message => ({ topic, payload: Buffer.from(payload), qos: 0, retain: true, ...(expiresAt !== undefined ? { expiresAt } : {}) });

describe('RetainedStore', () => {
  it('stores, replaces and clears with an empty payload [MQTT-5-3.3.1-5] [MQTT-5-3.3.1-6]', () => {
    const r = new RetainedStore();
    r.set(msg('a/b', '1'));
    r.set(msg('a/c', '2'));
    expect(r.size).toBe(2);
    r.set(msg('a/b', '3'));
    expect(r.size).toBe(2);
    expect(r.get('a/b')!.payload.toString()).toBe('3');
    r.set(msg('a/b', ''));
    expect(r.size).toBe(1);
    expect(r.get('a/b')).toBeUndefined();
    r.set(msg('never/set', '')); // clearing nothing is fine
    expect(r.size).toBe(1);
  });

  it('matches filters with the routing rules, $-topics only for $ filters', () => {
    const r = new RetainedStore();
    for (const t of ['a', 'a/b', 'a/b/c', 'b/b', '$SYS/x', '/a']) r.set(msg(t, t));
    const m = (f: string): string[] => r.match(f).map((x) => x.topic).sort();
    expect(m('a')).toEqual(['a']);
    expect(m('a/#')).toEqual(['a', 'a/b', 'a/b/c']);
    expect(m('+/b')).toEqual(['a/b', 'b/b']);
    expect(m('#')).toEqual(['/a', 'a', 'a/b', 'a/b/c', 'b/b']);
    expect(m('$SYS/#')).toEqual(['$SYS/x']);
    expect(m('+/a')).toEqual(['/a']);
    expect(m('nothing')).toEqual([]);
  });

  it('skips and forgets expired messages', () => {
    const r = new RetainedStore();
    r.set(msg('e/old', 'x', 1000));
    r.set(msg('e/new', 'y', 5000));
    r.set(msg('e/forever', 'z'));
    expect(r.match('e/old', 2000)).toEqual([]);
    expect(r.match('e/#', 2000).map((x) => x.topic).sort()).toEqual(['e/forever', 'e/new']);
    expect(r.size).toBe(2); // the wildcard walk dropped the expired one
  });

  it('agrees with topicMatches on generated topics and filters', () => {
    const level = fc.constantFrom('a', 'b', '', '$x');
    const topic = fc.array(level, { minLength: 1, maxLength: 4 }).map((l) => l.join('/')).filter((t) => t.length > 0);
    const filter = fc
      .tuple(fc.array(fc.constantFrom('a', 'b', '', '+', '$x'), { minLength: 1, maxLength: 4 }), fc.boolean())
      .map(([l, hash]) => (hash ? [...l, '#'] : l).join('/'));
    fc.assert(
      fc.property(fc.uniqueArray(topic, { maxLength: 10 }), filter, (topics, f) => {
        const r = new RetainedStore();
        for (const t of topics) r.set(msg(t, 'p'));
        expect(r.match(f).map((x) => x.topic).sort()).toEqual(topics.filter((t) => topicMatches(f, t)).sort());
      }),
      { numRuns: 400 },
    );
  });
});
