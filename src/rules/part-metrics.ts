/**
 * Metrics per filter and per rule, for an operator looking for the rule that costs: the
 * statement counters and time histograms of the active program (runtime.ts) summed by the
 * part of the document each statement and logic entry belongs to.
 */
import type { RulesDocument } from './ast.js';
import { TIME_BUCKETS, type RulesProgram } from './runtime.js';

/** One message in this many is timed (docs/rules.md#metrics). */
export const TIMING_EVERY = 32;

export interface PartMetrics {
  /** "filters/0" or "rules/1". */
  part: string;
  topic: string;
  evaluations: number;
  fires: number;
  conditionErrors: number;
  /**
   * Time spent on messages by this filter or rule (its statements and logic entries),
   * estimated from one message in TIMING_EVERY: per message it ran on, a histogram over
   * TIME_BUCKETS (counts not cumulative, the last +Inf) and the sum, in seconds.
   */
  seconds: { counts: number[]; sum: number };
}

/** Times one message in TIMING_EVERY of `program`, by part: filters first, then rules (the rule of each logic entry). */
export function enablePartTiming(program: RulesProgram, doc: RulesDocument): void {
  const logicRule: number[] = [];
  doc.rules.forEach((r, ri) => r.logic.forEach(() => logicRule.push(ri)));
  program.enableTiming(TIMING_EVERY, doc.filters.length, doc.rules.length, logicRule);
}

export function partMetrics(program: RulesProgram, doc: RulesDocument): PartMetrics[] {
  const { statements, logicFires } = program.statementCounters();
  const parts = new Map<string, PartMetrics>();
  const times = program.timeHistograms();
  const nb = TIME_BUCKETS.length + 1;
  const part = (name: string, topic: string, index: number): PartMetrics => {
    let m = parts.get(name);
    if (!m) {
      const counts = index < times.parts ? Array.from(times.counts.subarray(index * nb, index * nb + nb)) : new Array<number>(nb).fill(0);
      parts.set(name, (m = { part: name, topic, evaluations: 0, fires: 0, conditionErrors: 0, seconds: { counts, sum: times.sums[index] ?? 0 } }));
    }
    return m;
  };
  const ruleTopics = (ri: number): string => doc.rules[ri]?.statements.map((s) => s.topic).join(' ') ?? '';
  // parts are numbered filters first, then rules (RulesProgram.enableTiming)
  const filterPart = (fi: number): PartMetrics => part(`filters/${fi}`, doc.filters[fi]?.topic ?? '', fi);
  const rulePart = (ri: number): PartMetrics => part(`rules/${ri}`, ruleTopics(ri), doc.filters.length + ri);
  program.meta.statements.forEach((st, i) => {
    const c = statements[i]!;
    const m = st.filter >= 0 ? filterPart(st.filter) : rulePart(st.rule);
    m.evaluations += c.evaluations;
    m.conditionErrors += c.unknown;
    if (st.filter >= 0) m.fires += c.trueResults;
  });
  let j = 0;
  doc.rules.forEach((r, ri) => {
    for (let k = 0; k < r.logic.length; k++) rulePart(ri).fires += logicFires[j++] ?? 0;
  });
  return [...parts.values()];
}

/** The whole-message time histogram of `program` (none: all zero). */
export function messageSeconds(program: RulesProgram | undefined): { counts: number[]; sum: number } {
  const t = program?.timeHistograms();
  return t ? { counts: Array.from(t.messageCounts), sum: t.messageSum } : { counts: new Array<number>(TIME_BUCKETS.length + 1).fill(0), sum: 0 };
}
