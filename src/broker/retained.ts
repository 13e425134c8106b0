import type { Message } from '../mqtt/message.js';
import type { RetainedMessages } from '../session/store.js';

/** One topic level of the retained trie; `message` is the one retained at this exact topic. */
class RetainedNode {
  readonly children = new Map<string, RetainedNode>();
  message: Message | undefined;
  constructor(readonly parent: RetainedNode | undefined, readonly level: string) {}
}

/**
 * Retained messages in memory, one per topic, in a trie of topic levels: a subscription's filter
 * walks only the branches it can match ('+' every child of one level, '#' a whole subtree), so
 * a wildcard SUBSCRIBE costs what it matches, not a scan of every retained topic. A Map by
 * topic answers get(), size and all(). The walks are loops, not recursion: a topic may have
 * tens of thousands of levels.
 */
export class RetainedStore implements RetainedMessages {
  private readonly byTopic = new Map<string, RetainedNode>();
  private readonly root = new RetainedNode(undefined, '');

  get size(): number {
    return this.byTopic.size;
  }

  /** [MQTT-5-3.3.1-5] store / replace; [MQTT-5-3.3.1-6] an empty payload clears the topic. */
  set(message: Message): void {
    if (message.payload.length === 0) return this.delete(message.topic);
    const known = this.byTopic.get(message.topic);
    if (known) {
      known.message = message;
      return;
    }
    let node = this.root;
    for (const level of message.topic.split('/')) {
      let child = node.children.get(level);
      if (!child) {
        child = new RetainedNode(node, level);
        node.children.set(level, child);
      }
      node = child;
    }
    node.message = message;
    this.byTopic.set(message.topic, node);
  }

  get(topic: string): Message | undefined {
    return this.byTopic.get(topic)?.message;
  }

  /** Retained messages whose topic matches `filter`, skipping (and forgetting) expired ones. */
  match(filter: string, now = Date.now()): Message[] {
    const out: Message[] = [];
    const expired: string[] = [];
    const take = (node: RetainedNode): void => {
      const m = node.message;
      if (m === undefined) return;
      if (m.expiresAt !== undefined && m.expiresAt <= now) expired.push(m.topic);
      else out.push(m);
    };
    const levels = filter.split('/');
    // (node, index of the filter level to match below it)
    const nodes: RetainedNode[] = [this.root];
    const depths: number[] = [0];
    while (nodes.length > 0) {
      const node = nodes.pop()!;
      const i = depths.pop()!;
      if (i === levels.length) {
        take(node);
        continue;
      }
      const level = levels[i]!;
      if (level === '#') {
        // the level above too ("a/#" matches "a"), and everything below
        if (node !== this.root) take(node);
        this.subtree(node, node === this.root, take);
      } else if (level === '+') {
        // pushed last to first, so that they come off the stack in the order they were stored
        const children = [...node.children.values()];
        for (let c = children.length - 1; c >= 0; c--) {
          const child = children[c]!;
          // [MQTT-5-4.7.2-1] a filter starting with a wildcard does not match topics starting with $
          if (node === this.root && child.level.startsWith('$')) continue;
          nodes.push(child);
          depths.push(i + 1);
        }
      } else {
        const child = node.children.get(level);
        if (child) {
          nodes.push(child);
          depths.push(i + 1);
        }
      }
    }
    for (const topic of expired) this.delete(topic);
    return out;
  }

  /** Every message strictly below `node`; at the root, not the `$` topics [MQTT-5-4.7.2-1]. */
  private subtree(node: RetainedNode, atRoot: boolean, take: (node: RetainedNode) => void): void {
    const stack: RetainedNode[] = [];
    const pushChildren = (n: RetainedNode): void => {
      const children = [...n.children.values()];
      for (let c = children.length - 1; c >= 0; c--) if (!(atRoot && n === node && children[c]!.level.startsWith('$'))) stack.push(children[c]!);
    };
    pushChildren(node);
    while (stack.length > 0) {
      const n = stack.pop()!;
      take(n);
      pushChildren(n);
    }
  }

  private delete(topic: string): void {
    let node = this.byTopic.get(topic);
    if (!node) return;
    this.byTopic.delete(topic);
    node.message = undefined;
    // prune the branch back up to the first node still in use
    while (node.parent && node.message === undefined && node.children.size === 0) {
      node.parent.children.delete(node.level);
      node = node.parent;
    }
  }

  *all(): IterableIterator<Message> {
    for (const node of this.byTopic.values()) yield node.message!;
  }

  clear(): void {
    this.byTopic.clear();
    this.root.children.clear();
  }
}
