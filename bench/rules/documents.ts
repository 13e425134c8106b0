/** Documents and messages shared by the rules benchmarks: N filters on distinct topics. */
import type { RulesDocument } from '../../src/rules/ast.js';

export function filterTopic(i: number): string {
  return `site/${i}/sensor`;
}

export function condition(i: number): string {
  return `$temperature > ${i % 40} and $inside.humidity < ${60 + (i % 30)}`;
}

/** N filters, one statement each, on distinct topics. */
export function filtersDocument(n: number): RulesDocument {
  return {
    filters: Array.from({ length: n }, (_, i) => ({ topic: filterTopic(i), subtopic: 'alert', statements: [{ condition: condition(i), new_payload: 'alert' }] })),
    rules: [],
  };
}

/** A typical small sensor payload (about 120 bytes); every other message fires. */
export function payload(k: number): Buffer {
  return Buffer.from(JSON.stringify({ id: k, name: 'sensor-7', temperature: k % 2 === 0 ? 45.5 : -3, inside: { humidity: 41, pressure: 1013.25 }, battery: 0.87, tags: ['roof', 'north'] }));
}

/** A document with n statements split between filters and rules (for compile time). */
export function mixedDocument(n: number): RulesDocument {
  const filters = Math.ceil(n / 2);
  const rules = n - filters;
  return {
    filters: filtersDocument(filters).filters,
    rules: Array.from({ length: Math.ceil(rules / 2) }, (_, r) => ({
      statements: [
        { id: 2 * r + 1, topic: `mine/${r}/+`, payload_type: 'float' as const, condition: `$heart-rate >= ${90 + (r % 20)} and $heart-rate <= 120` },
        { id: 2 * r + 2, topic: `mine/${r}/environment`, payload_type: 'int' as const, condition: `$temperature > ${30 + (r % 10)} or $humidity > 85` },
      ],
      logic: [{ operations: `$${2 * r + 1} and $${2 * r + 2}`, new_topic: `action/${r}`, new_payload: '' }],
    })),
  };
}

/** A stateful condition: a 5-minute average over a limit, reported on a 0.5 deadband. */
export function statefulCondition(i: number): string {
  return `avg($temperature, '5m') > ${i % 40} and deadband($temperature, 0.5) and $inside.humidity < ${60 + (i % 30)}`;
}

/** N filters with one stateful statement each, on distinct topics. */
export function statefulDocument(n: number): RulesDocument {
  return {
    filters: Array.from({ length: n }, (_, i) => ({ topic: filterTopic(i), subtopic: 'alert', statements: [{ condition: statefulCondition(i), new_payload: 'alert' }] })),
    rules: [],
  };
}
