/**
 * Subscription interest across the cluster: which node has a subscriber for which filter.
 *
 * Each node counts its own filters (a filter many local clients subscribe to is one entry)
 * and announces changes; it keeps the entries announced by every other node. One trie holds
 * them all, keyed by node name, so matching a topic answers "which nodes want it" and, for
 * a `$share` group, "which nodes have members" in one walk.
 *
 * An entry is `filter` or, for a shared subscription, shareKey(group, filter).
 */
import { shareKey } from '../mqtt/message.js';
import { TopicTrie, type MatchVisitor, type SharedGroup } from '../topics/trie.js';

export interface InterestEntry {
  filter: string;
  group?: string;
}

export function entryKey(e: InterestEntry): string {
  return e.group === undefined ? e.filter : shareKey(e.group, e.filter);
}

/** Where one message must go: nodes with a plain subscriber, and the shared groups each node delivers. */
export interface ForwardPlan {
  /** Other nodes that get the message, with the shared groups (shareKey) they deliver. */
  readonly nodes: Map<string, string[]>;
  /** When a shared group went to another node: the groups this node still delivers. */
  localShares: Set<string> | undefined;
}

export class ClusterInterest {
  private readonly trie = new TopicTrie<string>();
  /** This node's entries with how many local subscriptions hold each. */
  private readonly local = new Map<string, { entry: InterestEntry; count: number }>();
  /** Other nodes' entries. */
  private readonly remote = new Map<string, Map<string, InterestEntry>>();
  private readonly planner: Planner;

  constructor(readonly self: string) {
    this.planner = new Planner(self);
  }

  /** A local subscription came; true when the entry is new for this node (to announce). */
  addLocal(entry: InterestEntry): boolean {
    const key = entryKey(entry);
    const held = this.local.get(key);
    if (held) {
      held.count++;
      return false;
    }
    this.local.set(key, { entry, count: 1 });
    this.trie.add(entry.filter, this.self, this.self, entry.group);
    return true;
  }

  /** A local subscription went; true when no local subscription holds the entry any more. */
  removeLocal(entry: InterestEntry): boolean {
    const key = entryKey(entry);
    const held = this.local.get(key);
    if (!held) return false;
    if (--held.count > 0) return false;
    this.local.delete(key);
    this.trie.remove(entry.filter, this.self, entry.group);
    return true;
  }

  localEntries(): InterestEntry[] {
    return [...this.local.values()].map((v) => v.entry);
  }

  /** Replace everything known of `node` with `entries` (a full sync). */
  setRemote(node: string, entries: InterestEntry[]): void {
    this.dropRemote(node);
    const map = new Map<string, InterestEntry>();
    this.remote.set(node, map);
    for (const e of entries) this.addRemote(node, e, map);
  }

  addRemote(node: string, e: InterestEntry, map = this.remoteMap(node)): void {
    const key = entryKey(e);
    if (map.has(key)) return;
    map.set(key, e);
    this.trie.add(e.filter, node, node, e.group);
  }

  private remoteMap(node: string): Map<string, InterestEntry> {
    let map = this.remote.get(node);
    if (!map) this.remote.set(node, (map = new Map()));
    return map;
  }

  removeRemote(node: string, e: InterestEntry): void {
    const map = this.remote.get(node);
    if (!map?.delete(entryKey(e))) return;
    this.trie.remove(e.filter, node, e.group);
  }

  /** A node left (or was lost): none of its interest stays. */
  dropRemote(node: string): void {
    const map = this.remote.get(node);
    if (!map) return;
    for (const e of map.values()) this.trie.remove(e.filter, node, e.group);
    this.remote.delete(node);
  }

  remoteCount(node: string): number {
    return this.remote.get(node)?.size ?? 0;
  }

  get localCount(): number {
    return this.local.size;
  }

  /**
   * Where a message published on this node goes. Each shared group matched picks one node
   * among those with members, round robin, so the group gets the message once cluster-wide.
   */
  plan(topic: string): ForwardPlan | undefined {
    this.trie.match(topic, this.planner);
    return this.planner.take();
  }
}

class Planner implements MatchVisitor<string> {
  private nodes: Map<string, string[]> | undefined;
  private localShares: Set<string> | undefined;
  private sharesElsewhere = false;

  constructor(private readonly self: string) {}

  subscription(node: string): void {
    if (node === this.self) return;
    this.nodes ??= new Map();
    if (!this.nodes.has(node)) this.nodes.set(node, []);
  }

  shared(group: SharedGroup<string>): void {
    const members = [...group.members.keys()];
    const chosen = members[group.cursor % members.length]!;
    group.cursor = (group.cursor + 1) % members.length;
    const key = shareKey(group.group, group.filter);
    if (chosen === this.self) {
      (this.localShares ??= new Set()).add(key);
      return;
    }
    this.sharesElsewhere = true;
    this.nodes ??= new Map();
    const list = this.nodes.get(chosen);
    if (list) list.push(key);
    else this.nodes.set(chosen, [key]);
  }

  take(): ForwardPlan | undefined {
    const nodes = this.nodes;
    const plan = nodes || this.sharesElsewhere ? { nodes: nodes ?? new Map(), localShares: this.sharesElsewhere ? (this.localShares ?? new Set<string>()) : undefined } : undefined;
    this.nodes = undefined;
    this.localShares = undefined;
    this.sharesElsewhere = false;
    return plan;
  }
}
