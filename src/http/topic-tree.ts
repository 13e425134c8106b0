/**
 * The console's topic explorer, server side: one entry per topic seen (count, last message,
 * QoS, retained flag), updated by an onPublish hook with one Map lookup per message and no
 * allocation for a known topic. Branch totals and rates are computed when asked (a walk of
 * the entries, about a millisecond per 10,000 topics), and rates are sampled by a timer that
 * runs only while a console asks (the explorer is open), so a closed explorer costs the
 * broker the lookup alone. The browser asks only for the branches it has open.
 */
import type { BrokerApi } from '../broker/api.js';
import type { Message } from '../mqtt/message.js';
import { matchLevels } from '../topics/match.js';

export interface TopicEntry {
  topic: string;
  messages: number;
  /** Messages per second over the last sample interval. */
  rate: number;
  last: Message | undefined;
  lastAt: number;
  /** Count at the previous sample, for the rate. */
  sampled: number;
}

export interface BranchRow {
  /** The level name ("" for an empty level). */
  name: string;
  /** Full topic of the branch / topic. */
  path: string;
  /** Topics at or below it. */
  topics: number;
  messages: number;
  rate: number;
  /** A topic of its own (not only a branch). */
  isTopic: boolean;
  /** Has levels below. */
  hasChildren: boolean;
  retained: boolean;
}

/** Topics remembered at once; more are counted but not shown. */
export const MAX_TOPICS = 100_000;
/** Rates are sampled this often while a console is looking, and it counts as looking this long after its last call. */
export const SAMPLE_MS = 2000;
const LOOKING_MS = 30_000;
/** How stale a topic's "last message at" may be. */
const CLOCK_MS = 1000;

export class TopicTree {
  readonly entries = new Map<string, TopicEntry>();
  overflow = 0;
  private timer: NodeJS.Timeout | undefined;
  private lastLook = 0;
  private lastSample = 0;
  /** now(), refreshed every CLOCK_MS while started; what record() stamps messages with. */
  private clock: number;
  private clockTimer: NodeJS.Timeout | undefined;

  constructor(private readonly now: () => number = Date.now) {
    this.clock = now();
  }

  /** Keeps the clock of record() current (to within CLOCK_MS); without it, now() is read per message. */
  startClock(): void {
    if (this.clockTimer) return;
    this.clock = this.now();
    this.clockTimer = setInterval(() => {
      this.clock = this.now();
    }, CLOCK_MS);
    this.clockTimer.unref();
  }

  private stamp(): number {
    return this.clockTimer ? this.clock : this.now();
  }

  /** The hook: called for every message before routing. */
  record(message: Message): void {
    const e = this.entries.get(message.topic);
    if (e !== undefined) {
      e.messages++;
      e.last = message;
      e.lastAt = this.stamp();
      return;
    }
    if (this.entries.size >= MAX_TOPICS) {
      this.overflow++;
      return;
    }
    this.entries.set(message.topic, { topic: message.topic, messages: 1, rate: 0, last: message, lastAt: this.stamp(), sampled: 0 });
  }

  /** Called by each console request: keeps the rate sampler running while someone looks. */
  touch(): void {
    this.lastLook = this.now();
    if (this.timer) return;
    this.lastSample = this.now();
    for (const e of this.entries.values()) e.sampled = e.messages;
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    this.timer.unref();
  }

  private sample(): void {
    const t = this.now();
    if (t - this.lastLook > LOOKING_MS) {
      clearInterval(this.timer);
      this.timer = undefined;
      for (const e of this.entries.values()) e.rate = 0;
      return;
    }
    const dt = (t - this.lastSample) / 1000;
    this.lastSample = t;
    if (dt <= 0) return;
    for (const e of this.entries.values()) {
      e.rate = (e.messages - e.sampled) / dt;
      e.sampled = e.messages;
    }
  }

  /** The children of `prefix` ("" for the top), aggregated, sorted by name. */
  children(prefix: string, limit = 1000): { rows: BranchRow[]; more: number } {
    const byName = new Map<string, BranchRow>();
    const depth = prefix === '' ? 0 : prefix.split('/').length;
    const start = prefix === '' ? '' : `${prefix}/`;
    for (const e of this.entries.values()) {
      const t = e.topic;
      if (prefix !== '' && !t.startsWith(start) && t !== prefix) continue;
      if (t === prefix) continue; // the branch itself: shown by its parent
      const levels = t.split('/');
      const name = levels[depth]!;
      let row = byName.get(name);
      if (!row) {
        row = { name, path: start + name, topics: 0, messages: 0, rate: 0, isTopic: false, hasChildren: false, retained: false };
        byName.set(name, row);
      }
      row.topics++;
      row.messages += e.messages;
      row.rate += e.rate;
      if (levels.length === depth + 1) {
        row.isTopic = true;
        row.retained = e.last?.retain === true && e.last.payload.length > 0;
      } else row.hasChildren = true;
    }
    const rows = [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { rows: rows.slice(0, limit), more: Math.max(0, rows.length - limit) };
  }

  /** Topics matching an MQTT filter (`+`, `#`) or containing a text, at most `limit`. */
  search(pattern: string, limit = 200): { topics: { topic: string; messages: number; rate: number }[]; more: boolean } {
    const wild = pattern.includes('+') || pattern.includes('#');
    const filter = pattern.split('/');
    const out: { topic: string; messages: number; rate: number }[] = [];
    let more = false;
    for (const e of this.entries.values()) {
      if (wild ? !matchLevels(filter, e.topic.split('/')) : !e.topic.includes(pattern)) continue;
      if (out.length >= limit) {
        more = true;
        break;
      }
      out.push({ topic: e.topic, messages: e.messages, rate: e.rate });
    }
    out.sort((a, b) => (a.topic < b.topic ? -1 : 1));
    return { topics: out, more };
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    clearInterval(this.clockTimer);
    this.clockTimer = undefined;
  }
}

export function startTopicTree(broker: BrokerApi): TopicTree {
  const tree = new TopicTree();
  tree.startClock();
  broker.addHooks({
    onPublish(message) {
      tree.record(message);
    },
  });
  return tree;
}
