import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TopicTrie, type SharedGroup } from '../../src/topics/trie.js';
import { topicMatches } from '../../src/topics/match.js';

/** Keys of the plain subscriptions and "group:filter" of shared groups matching `topic`. */
function matchKeys<V>(trie: TopicTrie<V>, topic: string): { subs: string[]; shared: string[] } {
  const subs: string[] = [];
  const shared: string[] = [];
  trie.match(topic, {
    subscription: (key) => void subs.push(key),
    shared: (g: SharedGroup<V>) => void shared.push(`${g.group}:${g.filter}`),
  });
  return { subs: subs.sort(), shared: shared.sort() };
}

describe('TopicTrie', () => {
  const table: [string[], string, string[]][] = [
    // filters subscribed (key = filter), topic, expected matching filters
    [['a/b', 'a/+', 'a/#', '#', '+/b', 'a/b/c'], 'a/b', ['#', '+/b', 'a/#', 'a/+', 'a/b']],
    [['a/#'], 'a', ['a/#']], // '#' matches the parent level
    [['a/+'], 'a', []],
    [['+/+'], '/', ['+/+']],
    [['#', '+/x', '$SYS/#', '$SYS/+'], '$SYS/x', ['$SYS/#', '$SYS/+']], // [MQTT-5-4.7.2-1]
    [['#', '$SYS/#'], '$SYS', ['$SYS/#']],
    [['a/b/c/#', 'a/+/c', 'a/+/+/+'], 'a/b/c', ['a/+/c', 'a/b/c/#']],
    [['x'], 'y', []],
  ];
  it.each(table)('%j matching %j', (filters, topic, expected) => {
    const trie = new TopicTrie<string>();
    for (const f of filters) trie.add(f, f, f);
    expect(matchKeys(trie, topic).subs).toEqual([...expected].sort());
  });

  it('add replaces per key, remove prunes and counts', () => {
    const trie = new TopicTrie<number>();
    expect(trie.add('a/+', 'c1', 1)).toBe(true);
    expect(trie.add('a/+', 'c1', 2)).toBe(false); // same filter, same client: replaced
    expect(trie.add('a/+', 'c2', 3)).toBe(true);
    expect(trie.size).toBe(2);
    const seen: number[] = [];
    trie.match('a/x', { subscription: (_k, v) => void seen.push(v), shared: () => undefined });
    expect(seen.sort()).toEqual([2, 3]);
    expect(trie.remove('a/+', 'c1')).toBe(2);
    expect(trie.remove('a/+', 'c1')).toBeUndefined();
    expect(trie.remove('a/b', 'c2')).toBeUndefined();
    expect(trie.remove('a/+', 'c2')).toBe(3);
    expect(trie.size).toBe(0);
    expect([...trie.entries()]).toEqual([]);
    expect(matchKeys(trie, 'a/x').subs).toEqual([]);
  });

  it('keeps shared groups apart from plain subscriptions and from each other', () => {
    const trie = new TopicTrie<string>();
    trie.add('s/#', 'c1', 'g1-c1', 'g1');
    trie.add('s/#', 'c2', 'g1-c2', 'g1');
    trie.add('s/#', 'c1', 'g2-c1', 'g2');
    trie.add('s/#', 'c1', 'plain');
    const m = matchKeys(trie, 's/x');
    expect(m.subs).toEqual(['c1']);
    expect(m.shared).toEqual(['g1:s/#', 'g2:s/#']);
    const groups: SharedGroup<string>[] = [];
    trie.match('s/x', { subscription: () => undefined, shared: (g) => void groups.push(g) });
    expect([...groups.find((g) => g.group === 'g1')!.members.values()].sort()).toEqual(['g1-c1', 'g1-c2']);
    expect(trie.size).toBe(4);
    expect(trie.remove('s/#', 'c1', 'g2')).toBe('g2-c1');
    expect(matchKeys(trie, 's/x').shared).toEqual(['g1:s/#']);
    const entries = [...trie.entries()].map((e) => `${e.group ?? '-'}|${e.filter}|${e.key}`).sort();
    expect(entries).toEqual(['-|s/#|c1', 'g1|s/#|c1', 'g1|s/#|c2']);
  });

  // Differential: the trie must agree with the reference matcher on generated filters and topics.
  const level = fc.constantFrom('a', 'b', 'c', '', '$x', 'dd');
  const topicArb = fc
    .tuple(fc.constantFrom('a', 'b', '', '$SYS', '$x', 'c'), fc.array(level, { maxLength: 4 }))
    .map(([first, rest]) => [first, ...rest].join('/'));
  const filterArb = fc
    .tuple(fc.array(fc.constantFrom('a', 'b', 'c', '', '+', '$SYS', '$x'), { minLength: 1, maxLength: 5 }), fc.boolean())
    .map(([levels, hash]) => (hash ? [...levels, '#'] : levels).join('/'))
    .chain((f) => fc.constantFrom(f, '#', '+/#'));

  it('agrees with topicMatches on generated topics and filters', () => {
    fc.assert(
      fc.property(fc.uniqueArray(filterArb, { minLength: 1, maxLength: 12 }), fc.array(topicArb, { minLength: 1, maxLength: 10 }), (filters, topics) => {
        const trie = new TopicTrie<string>();
        for (const f of filters) trie.add(f, f, f);
        for (const t of topics) {
          const expected = filters.filter((f) => topicMatches(f, t)).sort();
          expect(matchKeys(trie, t).subs).toEqual(expected);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('agrees with topicMatches when matches (kept per topic) interleave with adds and removes', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('add' as const), filter: filterArb }),
      fc.record({ kind: fc.constant('remove' as const), filter: filterArb }),
      fc.record({ kind: fc.constant('match' as const), topic: topicArb }),
    );
    fc.assert(
      fc.property(fc.array(topicArb, { minLength: 1, maxLength: 4 }), fc.array(op, { minLength: 1, maxLength: 40 }), (hot, ops) => {
        const trie = new TopicTrie<string>();
        const live = new Set<string>();
        const check = (t: string): void => expect(matchKeys(trie, t).subs).toEqual([...live].filter((f) => topicMatches(f, t)).sort());
        for (const o of ops) {
          if (o.kind === 'add') {
            trie.add(o.filter, o.filter, o.filter);
            live.add(o.filter);
          } else if (o.kind === 'remove') {
            trie.remove(o.filter, o.filter);
            live.delete(o.filter);
          } else check(o.topic);
          // the same few topics again and again, as publishers do: answered from the kept matches
          for (const t of hot) check(t);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('stays right when more distinct topics pass than it keeps (it stops keeping for a while)', () => {
    const trie = new TopicTrie<string>();
    const filters = ['s/+/t', 's/#', '+/7/t', 'x/y'];
    for (const f of filters) trie.add(f, f, f);
    const check = (t: string, live: string[]): void => expect(matchKeys(trie, t).subs).toEqual(live.filter((f) => topicMatches(f, t)).sort());
    for (let k = 0; k < 300_000; k++) {
      const t = k % 3 === 0 ? `s/${k % 10}/t` : `s/${k}/t`; // a few hot topics among many new ones
      if (k % 997 === 0) check(t, filters);
      else trie.match(t, { subscription: () => undefined, shared: () => undefined });
    }
    trie.add('s/5/t', 'late', 'late');
    expect(matchKeys(trie, 's/5/t').subs).toEqual(['late', 's/#', 's/+/t']);
    trie.remove('s/#', 's/#');
    expect(matchKeys(trie, 's/5/t').subs).toEqual(['late', 's/+/t']);
  });

  it('agrees with topicMatches after random removals', () => {
    fc.assert(
      fc.property(fc.uniqueArray(filterArb, { minLength: 2, maxLength: 12 }), fc.array(fc.nat(), { maxLength: 6 }), fc.array(topicArb, { minLength: 1, maxLength: 6 }), (filters, removals, topics) => {
        const trie = new TopicTrie<string>();
        for (const f of filters) trie.add(f, f, f);
        const live = new Set(filters);
        for (const r of removals) {
          const f = filters[r % filters.length]!;
          expect(trie.remove(f, f) !== undefined).toBe(live.delete(f));
        }
        expect(trie.size).toBe(live.size);
        for (const t of topics) {
          const expected = [...live].filter((f) => topicMatches(f, t)).sort();
          expect(matchKeys(trie, t).subs).toEqual(expected);
        }
      }),
      { numRuns: 300 },
    );
  });
});
