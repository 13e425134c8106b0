import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AclError, ClientAcl, loadAclFile, loadAclFileSync, mergeAcl, parseAcl, parseAclSection } from '../../src/auth/acl.js';
import { filterWithin, matchLevels } from '../../src/topics/match.js';
import { isValidTopicFilter as validFilter, parseSharedFilter } from '../../src/topics/validate.js';

const match = (filter: string, topic: string): boolean => matchLevels(filter.split('/'), topic.split('/'));
const within = (inner: string, outer: string): boolean => filterWithin(inner.split('/'), outer.split('/'));

describe('topic filter matching', () => {
  it.each([
    ['a/b', 'a/b', true],
    ['a/b', 'a/c', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a/b/c', false],
    ['a/+', 'a', false],
    ['a/+', 'a/', true], // empty level is a level
    ['+/+', '/b', true],
    ['a/#', 'a', true], // [MQTT-5-4.7.1-2] parent level
    ['a/#', 'a/b/c', true],
    ['a/#', 'ab', false],
    ['#', 'a/b', true],
    ['#', '$SYS/x', false], // [MQTT-5-4.7.2-1]
    ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/broker/uptime', true],
    ['a/+/c', 'a/b/c', true],
    ['a/+/c', 'a/b/d', false],
    ['a/b/c', 'a/b', false],
  ])('%s matches %s: %s', (filter, topic, expected) => {
    expect(match(filter, topic)).toBe(expected);
  });

  it.each([
    ['a/b', 'a/#', true],
    ['a', 'a/#', true],
    ['a/#', 'a/#', true],
    ['a/#', '#', true],
    ['a/#', 'a/+', false],
    ['a/+', 'a/#', true],
    ['a/+/c', 'a/+/+', true],
    ['a/+/+', 'a/+/c', false],
    ['a/+', 'a/b', false],
    ['#', 'a/#', false],
    ['+/b', 'a/b', false],
    ['a/b/#', 'a/+/#', true],
    ['$SYS/#', '#', false],
    ['$SYS/a', '+/a', false],
    ['$SYS/#', '$SYS/#', true],
    ['a/b/c', 'a/b', false],
  ])('%s within %s: %s', (inner, outer, expected) => {
    expect(within(inner, outer)).toBe(expected);
  });

  it('validates filters', () => {
    for (const ok of ['a', 'a/b', '#', 'a/#', '+', 'a/+/b', '/', '+/+/#']) expect(validFilter(ok)).toBe(true);
    for (const bad of ['', 'a/#/b', 'a#', 'a/b+', '#/a', 'a\0b']) expect(validFilter(bad)).toBe(false);
  });

  it('splits shared subscriptions', () => {
    expect(parseSharedFilter('$share/g1/a/b')).toEqual({ group: 'g1', filter: 'a/b' });
    expect(parseSharedFilter('a/b')).toBeUndefined();
    // malformed shared filters are null (the broker answers 0x8F): no inner filter, or an empty share name
    expect(parseSharedFilter('$share/g1')).toBeNull();
    expect(parseSharedFilter('$share//x')).toBeNull();
  });

  // Property: if inner lies within outer, every topic inner matches is matched by outer;
  // and if it does not, some topic shows it (checked on the generated sample only one way).
  const level = fc.constantFrom('a', 'b', '$s', '');
  const filterLevel = fc.constantFrom('a', 'b', '$s', '', '+');
  const filterArb = fc
    .tuple(fc.array(filterLevel, { minLength: 1, maxLength: 4 }), fc.boolean())
    .map(([levels, hash]) => (hash ? [...levels, '#'] : levels).join('/'))
    .filter(validFilter);
  const topicArb = fc.array(level, { minLength: 1, maxLength: 6 }).map((l) => l.join('/'));

  it('filterWithin agrees with matching on generated topics', () => {
    fc.assert(
      fc.property(filterArb, filterArb, fc.array(topicArb, { minLength: 1, maxLength: 30 }), (inner, outer, topics) => {
        if (!within(inner, outer)) return true;
        for (const t of topics) if (match(inner, t)) expect(match(outer, t)).toBe(true);
        return true;
      }),
      { numRuns: 3000 },
    );
  });

  it('filterWithin is not too strict: a filter that does not fit has a counterexample topic', () => {
    // enumerate all topics up to 5 levels over the alphabet; for inner filters without '#',
    // not-within must be witnessed by a topic matched by inner but not by outer
    const alphabet = ['a', 'b', '$s', ''];
    const topics: string[] = [];
    const grow = (prefix: string[], depth: number): void => {
      if (prefix.length > 0) topics.push(prefix.join('/'));
      if (depth === 0) return;
      for (const l of alphabet) grow([...prefix, l], depth - 1);
    };
    grow([], 5);
    fc.assert(
      fc.property(filterArb, filterArb, (inner, outer) => {
        if (inner.includes('#') || within(inner, outer)) return true;
        const witness = topics.find((t) => match(inner, t) && !match(outer, t));
        const innerMatchesSomething = topics.some((t) => match(inner, t));
        return !innerMatchesSomething || witness !== undefined;
      }),
      { numRuns: 2000 },
    );
  });
});

const SAMPLE = `
# anonymous clients
topic read public/#
topic read $SYS/#

user alice
topic readwrite alice/#
topic deny alice/secret/#
topic write shared/in

user bob the builder
topic read my topic/with space
topic factory/#

pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern deny clients/%c/locked
`;

describe('ACL file parser', () => {
  it('reads anonymous, user and pattern rules', () => {
    const doc = parseAcl(SAMPLE, 'acl.conf');
    expect(doc.anonymous.map((r) => [r.access, r.topic])).toEqual([
      ['read', 'public/#'],
      ['read', '$SYS/#'],
    ]);
    expect(doc.users.get('alice')!.map((r) => [r.access, r.topic])).toEqual([
      ['readwrite', 'alice/#'],
      ['deny', 'alice/secret/#'],
      ['write', 'shared/in'],
    ]);
    // user names and topics may contain spaces; the access word is optional (readwrite)
    expect(doc.users.get('bob the builder')!.map((r) => [r.access, r.topic])).toEqual([
      ['read', 'my topic/with space'],
      ['readwrite', 'factory/#'],
    ]);
    expect(doc.patterns.map((r) => [r.access, r.topic, r.source])).toEqual([
      ['readwrite', 'clients/%c/#', 'acl.conf:15'],
      ['read', 'users/%u/inbox', 'acl.conf:16'],
      ['deny', 'clients/%c/locked', 'acl.conf:17'],
    ]);
  });

  it.each([
    ['bogus line', /acl.conf:1: unknown keyword "bogus"/],
    ['user', /acl.conf:1: "user" needs a user name/],
    ['topic', /needs a topic filter/],
    ['topic read', /needs a topic filter after the access type/],
    ['topic read a/#/b', /not a valid topic filter/],
    ['pattern read a/x%c/b', /must be a whole topic level/],
    ['topic read clients/%c', /only in "pattern" lines/],
  ])('refuses %j', (text, message) => {
    expect(() => parseAcl(text, 'acl.conf')).toThrow(AclError);
    expect(() => parseAcl(text, 'acl.conf')).toThrow(message);
  });

  it('loads from files (sync at start-up, async on reload)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'edb-acl-'));
    const file = join(dir, 'acl.conf');
    writeFileSync(file, SAMPLE);
    expect(loadAclFileSync(file).users.size).toBe(2);
    expect((await loadAclFile(file)).patterns.length).toBe(3);
    expect(() => loadAclFileSync(join(dir, 'missing'))).toThrow(/cannot read the ACL file/);
  });
});

describe('ACL decisions', () => {
  const doc = parseAcl(SAMPLE);

  it('anonymous clients get the rules before the first user line, plus patterns without %u', () => {
    const anon = new ClientAcl(doc, 'dev-1', undefined);
    expect(anon.canRead('public/news')).toBe(true);
    expect(anon.canWrite('public/news')).toBe(false);
    expect(anon.canRead('alice/x')).toBe(false);
    expect(anon.canRead('$SYS/broker/uptime')).toBe(true);
    expect(anon.canWrite('clients/dev-1/state')).toBe(true); // %c pattern
    expect(anon.canWrite('clients/dev-2/state')).toBe(false);
    expect(anon.canRead('users/dev-1/inbox')).toBe(false); // no user name: no %u grant
  });

  it('users get their own rules; deny wins over a broader grant', () => {
    const alice = new ClientAcl(doc, 'c1', 'alice');
    expect(alice.canWrite('alice/data')).toBe(true);
    expect(alice.canRead('alice')).toBe(true);
    expect(alice.canRead('alice/secret/plans')).toBe(false);
    expect(alice.canWrite('alice/secret')).toBe(false);
    expect(alice.canWrite('shared/in')).toBe(true);
    expect(alice.canRead('shared/in')).toBe(false);
    expect(alice.canRead('public/news')).toBe(false); // anonymous rules are not for named users
    expect(alice.canRead('users/alice/inbox')).toBe(true);
    expect(alice.canRead('users/bob/inbox')).toBe(false);
    expect(alice.canWrite('clients/c1/x')).toBe(true);
    expect(alice.canWrite('clients/c1/locked')).toBe(false); // deny pattern
  });

  it('an unknown user gets only the patterns', () => {
    const eve = new ClientAcl(doc, 'e1', 'eve');
    expect(eve.canRead('public/news')).toBe(false);
    expect(eve.canRead('users/eve/inbox')).toBe(true);
  });

  it('subscriptions must fit inside a readable filter; shared subscriptions use the inner filter', () => {
    const alice = new ClientAcl(doc, 'c1', 'alice');
    expect(alice.canSubscribe('alice/#')).toBe(true);
    expect(alice.canSubscribe('alice/+/temp')).toBe(true);
    expect(alice.canSubscribe('#')).toBe(false);
    expect(alice.canSubscribe('+/data')).toBe(false);
    expect(alice.canSubscribe('alice/secret/#')).toBe(false); // wholly denied
    expect(alice.canSubscribe('alice/secret/x')).toBe(false);
    expect(alice.canSubscribe('$share/g/alice/#')).toBe(true);
    expect(alice.canSubscribe('$share/g/bob/#')).toBe(false);
    const anon = new ClientAcl(doc, 'd', undefined);
    expect(anon.canSubscribe('$SYS/#')).toBe(true);
    expect(anon.canSubscribe('#')).toBe(false);
  });

  it('client ids and user names with wildcard characters get no pattern grant, and deny patterns still bite', () => {
    const acl = parseAcl('pattern readwrite clients/%c/#\npattern readwrite u/%u/#\npattern deny locked/%c\ntopic readwrite locked/#\n');
    const weird = new ClientAcl(acl, 'a/+', undefined);
    expect(weird.canWrite('clients/a/+/x')).toBe(false);
    expect(weird.canWrite('clients/a/x')).toBe(false);
    // deny pattern applies with '+' for the unusable level
    expect(weird.canWrite('locked/anything')).toBe(false);
    expect(weird.canWrite('locked/a/b')).toBe(true);
    const hashUser = new ClientAcl(acl, 'ok', '#');
    expect(hashUser.canWrite('u/x/y')).toBe(false);
    expect(hashUser.canWrite('clients/ok/y')).toBe(true);
  });

  it('caches decisions without changing them', () => {
    const alice = new ClientAcl(doc, 'c1', 'alice');
    for (let i = 0; i < 1000; i++) {
      expect(alice.canRead(`alice/${i % 300}`)).toBe(true);
      expect(alice.canRead(`alice/secret/${i % 300}`)).toBe(false);
    }
  });
});

describe('ACL config section', () => {
  it('accepts the structured form', () => {
    const doc = parseAclSection({
      anonymous: [{ topic: 'public/#', access: 'read' }],
      users: { alice: [{ topic: 'alice/#' }, { topic: 'alice/secret', access: 'deny' }] },
      patterns: [{ topic: 'clients/%c/#', access: 'readwrite' }],
    });
    expect(doc.anonymous[0]).toMatchObject({ access: 'read', topic: 'public/#', pattern: false });
    expect(doc.users.get('alice')!.map((r) => r.access)).toEqual(['readwrite', 'deny']);
    const alice = new ClientAcl(doc, 'x', 'alice');
    expect(alice.canWrite('alice/a')).toBe(true);
    expect(alice.canWrite('alice/secret')).toBe(false);
  });

  it('accepts the file format as a string', () => {
    const doc = parseAclSection('user alice\ntopic read a/#\n');
    expect(doc.users.get('alice')![0]).toMatchObject({ access: 'read', topic: 'a/#' });
  });

  it.each([
    [{ anonymous: [{ topic: 'a', access: 'all' }] }, /acl \(config file\)\.anonymous\.0\.access/],
    [{ anonymous: [{ access: 'read' }] }, /must have required property 'topic'/],
    [{ users: { alice: 'a/#' } }, /users\.alice: must be array/],
    [{ groups: {} }, /must NOT have additional properties/],
    [{ anonymous: [{ topic: 'a/#/b' }] }, /acl \(config file\)\.anonymous\[0\]: "a\/#\/b" is not a valid topic filter/],
    [42, /acl \(config file\): must be object/],
  ])('refuses %j', (section, message) => {
    expect(() => parseAclSection(section)).toThrow(AclError);
    expect(() => parseAclSection(section)).toThrow(message);
  });

  it('merges file and section rules', () => {
    const merged = mergeAcl(parseAcl('user alice\ntopic read a/#\n'), parseAclSection({ users: { alice: [{ topic: 'b/#', access: 'write' }] } }));
    const alice = new ClientAcl(merged, 'x', 'alice');
    expect(alice.canRead('a/1')).toBe(true);
    expect(alice.canWrite('b/1')).toBe(true);
    expect(alice.canWrite('a/1')).toBe(false);
  });
});
