import type { Message } from '../mqtt/message.js';
import { TopicTrie } from '../topics/trie.js';

/**
 * Retained messages, one per topic. Kept in a trie keyed by topic name so that a
 * subscription's filter finds its retained messages by walking the filter against
 * stored topics (the reverse of routing).
 */
export class RetainedStore {
  private readonly byTopic = new Map<string, Message>();

  get size(): number {
    return this.byTopic.size;
  }

  /** [MQTT-3.3.1-5] store / replace; [MQTT-3.3.1-6] an empty payload clears the topic. */
  set(message: Message): void {
    if (message.payload.length === 0) this.byTopic.delete(message.topic);
    else this.byTopic.set(message.topic, message);
  }

  get(topic: string): Message | undefined {
    return this.byTopic.get(topic);
  }

  /** Retained messages whose topic matches `filter`, skipping expired ones. */
  match(filter: string, now = Date.now()): Message[] {
    const out: Message[] = [];
    if (!filter.includes('+') && !filter.includes('#')) {
      const m = this.byTopic.get(filter);
      if (m && !expired(m, now)) out.push(m);
      return out;
    }
    // Match the stored topics against this one filter with the same trie rules as routing.
    const trie = new TopicTrie<true>();
    trie.add(filter, '', true);
    for (const [topic, m] of this.byTopic) {
      if (expired(m, now)) {
        this.byTopic.delete(topic);
        continue;
      }
      let hit = false;
      trie.match(topic, { subscription: () => (hit = true), shared: () => undefined });
      if (hit) out.push(m);
    }
    return out;
  }

  all(): IterableIterator<Message> {
    return this.byTopic.values();
  }

  clear(): void {
    this.byTopic.clear();
  }
}

function expired(m: Message, now: number): boolean {
  return m.expiresAt !== undefined && m.expiresAt <= now;
}
