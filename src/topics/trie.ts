/**
 * The subscription trie: one node per topic level, with `+` and `#` children kept apart
 * from literal levels, so matching a topic costs O(levels x matching branches), not
 * O(subscriptions). Each node holds the plain subscriptions that end there (by client id)
 * and the shared subscription groups (`$share/{group}/...`) that end there.
 */

class TrieNode<V> {
  readonly children = new Map<string, TrieNode<V>>();
  plus: TrieNode<V> | undefined;
  hash: TrieNode<V> | undefined;
  subs: Map<string, V> | undefined;
  shared: Map<string, SharedGroup<V>> | undefined;

  isEmpty(): boolean {
    return this.children.size === 0 && !this.plus && !this.hash && !this.subs?.size && !this.shared?.size;
  }
}

/** Members of one shared subscription, with the round-robin cursor. */
export class SharedGroup<V> {
  readonly members = new Map<string, V>();
  cursor = 0;
  constructor(
    readonly group: string,
    readonly filter: string,
  ) {}
}

export interface MatchVisitor<V> {
  subscription(key: string, value: V): void;
  shared(group: SharedGroup<V>): void;
}

/** What a topic matched, in the order the walk found it: plain subscriptions and shared groups. */
type MatchEntry<V> = { key: string; value: V } | SharedGroup<V>;

/** Topics whose matches are kept (longer topics are walked every time). */
const MATCH_CACHE_SIZE = 4096;
const MATCH_CACHE_TOPIC_LENGTH = 512;

export class TopicTrie<V> {
  private readonly root = new TrieNode<V>();
  private count = 0;
  /**
   * Topic -> what it matched. Publishers send to the same topics again and again while
   * subscriptions change far less often: any add or remove empties it, so an entry is
   * always what the walk would find now (shared groups still pick their member per message).
   */
  private readonly matches = new Map<string, MatchEntry<V>[]>();
  /** Hits since the kept matches were last emptied for size. */
  private hits = 0;
  /** Matches left during which nothing is kept (after the kept matches did not pay off). */
  private bypass = 0;

  get size(): number {
    return this.count;
  }

  /** Adds or replaces; returns true when it is new. */
  add(filter: string, key: string, value: V, group?: string): boolean {
    this.matches.clear();
    let node = this.root;
    for (const level of filter.split('/')) {
      if (level === '+') node = node.plus ??= new TrieNode<V>();
      else if (level === '#') node = node.hash ??= new TrieNode<V>();
      else {
        let next = node.children.get(level);
        if (!next) node.children.set(level, (next = new TrieNode<V>()));
        node = next;
      }
    }
    let map: Map<string, V>;
    if (group === undefined) map = node.subs ??= new Map();
    else {
      node.shared ??= new Map();
      let g = node.shared.get(group);
      if (!g) node.shared.set(group, (g = new SharedGroup<V>(group, filter)));
      map = g.members;
    }
    const isNew = !map.has(key);
    map.set(key, value);
    if (isNew) this.count++;
    return isNew;
  }

  /** Removes; returns the removed value, if there was one. */
  remove(filter: string, key: string, group?: string): V | undefined {
    this.matches.clear();
    const path: [TrieNode<V>, string][] = [];
    let node: TrieNode<V> | undefined = this.root;
    for (const level of filter.split('/')) {
      path.push([node, level]);
      node = level === '+' ? node.plus : level === '#' ? node.hash : node.children.get(level);
      if (!node) return undefined;
    }
    let removed: V | undefined;
    if (group === undefined) {
      removed = node.subs?.get(key);
      if (removed !== undefined) node.subs!.delete(key);
    } else {
      const g = node.shared?.get(group);
      removed = g?.members.get(key);
      if (removed !== undefined) {
        g!.members.delete(key);
        if (g!.members.size === 0) node.shared!.delete(group);
      }
    }
    if (removed === undefined) return undefined;
    this.count--;
    // prune empty branches bottom-up
    for (let i = path.length - 1; i >= 0 && node.isEmpty(); i--) {
      const [parent, level] = path[i]!;
      if (level === '+') parent.plus = undefined;
      else if (level === '#') parent.hash = undefined;
      else parent.children.delete(level);
      node = parent;
    }
    return removed;
  }

  /** Calls the visitor for every subscription and shared group whose filter matches `topic`. */
  match(topic: string, visitor: MatchVisitor<V>): void {
    const entries = this.bypass > 0 ? undefined : this.matches.get(topic);
    if (entries === undefined) {
      // walk, telling the visitor and writing down what it is told
      let found: MatchEntry<V>[] | undefined;
      if (this.bypass > 0) this.bypass--;
      else if (topic.length <= MATCH_CACHE_TOPIC_LENGTH) found = [];
      // [MQTT-5-4.7.2-1] wildcards in the first level do not match topics beginning with $
      this.walk(this.root, topic.split('/'), 0, visitor, topic.charCodeAt(0) === 0x24, found);
      if (found) {
        if (this.matches.size >= MATCH_CACHE_SIZE) {
          // full: with more distinct topics than it holds, keeping them costs more than it
          // saves; when fewer than half of the lookups hit, stop keeping for a while
          if (this.hits < MATCH_CACHE_SIZE) this.bypass = 64 * MATCH_CACHE_SIZE;
          this.matches.clear();
          this.hits = 0;
          if (this.bypass > 0) return;
        }
        this.matches.set(topic, found);
      }
      return;
    }
    this.hits++;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      if (e instanceof SharedGroup) visitor.shared(e);
      else visitor.subscription(e.key, e.value);
    }
  }

  private walk(node: TrieNode<V>, levels: string[], i: number, visitor: MatchVisitor<V>, dollar: boolean, found: MatchEntry<V>[] | undefined): void {
    if (node.hash && !dollar) emit(node.hash, visitor, found); // "a/#" matches "a" and everything below
    if (i === levels.length) {
      emit(node, visitor, found);
      return;
    }
    const literal = node.children.get(levels[i]!);
    if (literal) this.walk(literal, levels, i + 1, visitor, false, found);
    if (node.plus && !dollar) this.walk(node.plus, levels, i + 1, visitor, false, found);
  }

  /** Every (filter, key, value, group) entry, for listings and snapshots. */
  *entries(): Generator<{ filter: string; key: string; value: V; group?: string }> {
    const stack: [TrieNode<V>, string[]][] = [[this.root, []]];
    while (stack.length) {
      const [node, path] = stack.pop()!;
      const filter = path.join('/');
      if (node.subs) for (const [key, value] of node.subs) yield { filter, key, value };
      if (node.shared) for (const g of node.shared.values()) for (const [key, value] of g.members) yield { filter, key, value, group: g.group };
      for (const [level, child] of node.children) stack.push([child, [...path, level]]);
      if (node.plus) stack.push([node.plus, [...path, '+']]);
      if (node.hash) stack.push([node.hash, [...path, '#']]);
    }
  }
}

function emit<V>(node: TrieNode<V>, visitor: MatchVisitor<V>, found: MatchEntry<V>[] | undefined): void {
  if (node.subs) {
    for (const [key, value] of node.subs) {
      visitor.subscription(key, value);
      found?.push({ key, value });
    }
  }
  if (node.shared) {
    for (const g of node.shared.values()) {
      visitor.shared(g);
      found?.push(g);
    }
  }
}
