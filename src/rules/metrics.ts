/**
 * Prometheus metrics of the rules engine (prom-client), read from the service's counters at
 * scrape time: nothing is updated on the hot path except the counters inside the Wasm module.
 */
import { Counter, type Metric, type MetricValue, type Registry } from 'prom-client';
import { TIME_BUCKETS, type RulesService } from './service.js';
import { mirroredCounter, mirroredGauge } from '../metrics-mirror.js';

export function registerRulesMetrics(registry: Registry, service: RulesService): void {
  const counter = (name: string, help: string, read: () => number): void => mirroredCounter(registry, name, help, read);
  const gauge = (name: string, help: string, read: () => number): void => mirroredGauge(registry, name, help, read);
  const m = () => service.metrics();
  counter('edb_rules_messages_total', 'Messages the rules engine saw', () => m().messages);
  counter('edb_rules_topic_matches_total', 'Filters and rule statements whose topic matched a message', () => m().topicMatches);
  counter('edb_rules_evaluations_total', 'Conditions evaluated', () => m().evaluations);
  counter('edb_rules_fires_total', 'Filter statements and rule logic entries that fired (each publishes and/or writes state)', () => m().fires);
  new Counter({
    name: 'edb_rules_condition_errors_total',
    help: 'Conditions that were neither true nor false, and payloads that were not JSON objects, by kind',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const v = m();
      this.reset();
      this.inc({ kind: 'missing_variable' }, v.missingVariable);
      this.inc({ kind: 'kind_mismatch' }, v.kindMismatch);
      this.inc({ kind: 'not_json' }, v.notJson);
    },
  });
  gauge('edb_rules_memory_topics', 'Concrete topics held in statements\' memory (prev, deadband, windows)', () => m().memoryTopics);
  counter('edb_rules_memory_evicted_total', 'Topics forgotten by a statement holding EDB_RULES_MEMORY_TOPICS of them (least recently seen first)', () => m().memoryEvicted);
  counter('edb_rules_window_samples_merged_total', 'Window samples merged into buckets past EDB_RULES_WINDOW_SAMPLES per topic', () => m().samplesMerged);
  counter('edb_rules_state_writes_total', 'set_state writes done through the state store', () => m().stateWrites);
  counter('edb_rules_state_write_errors_total', 'set_state writes the state store refused (quota, fencing)', () => m().stateWriteErrors);
  for (const [name, help, key] of [
    ['edb_rules_part_evaluations_total', 'Conditions evaluated, per filter and per rule', 'evaluations'],
    ['edb_rules_part_fires_total', 'Filter statements and rule logic entries that fired, per filter and per rule', 'fires'],
    ['edb_rules_part_condition_errors_total', 'Conditions that ended unknown, per filter and per rule', 'conditionErrors'],
  ] as const) {
    new Counter({
      name,
      help,
      labelNames: ['part', 'topic'],
      registers: [registry],
      collect() {
        this.reset();
        for (const p of service.partMetrics()) this.inc({ part: p.part, topic: p.topic }, p[key]);
      },
    });
  }
  histogram(registry, 'edb_rules_part_seconds', 'Time spent per message by each filter and rule (its statements and logic entries), estimated from one message in 32', () =>
    service.partMetrics().map((p) => ({ labels: { part: p.part, topic: p.topic }, ...p.seconds })),
  );
  histogram(registry, 'edb_rules_message_seconds', 'Time the rules engine spends per message (topic match, payload scan, every filter and rule), estimated from one message in 32', () => [
    { labels: {}, ...service.messageSeconds() },
  ]);
  counter('edb_rules_buffer_full_total', 'Rule buffer entries not stored because the buffer was full', () => m().bufferFull);
  counter('edb_rules_engine_errors_total', 'Messages on which the engine failed (a bug; the message was routed normally)', () => m().engineErrors);
  counter('edb_rules_compiles_total', 'Documents compiled', () => m().compiles);
  counter('edb_rules_compile_errors_total', 'Valid documents the compiler failed on (a bug)', () => m().compileErrors);
  counter('edb_rules_rejected_writes_total', 'Document writes refused (invalid document, stale If-Match)', () => m().rejectedWrites);
  counter('edb_rules_denied_outputs_total', "Outputs dropped because the document's author may not publish to their topic (ACL)", () => m().deniedOutputs);
  counter('edb_rules_denied_state_writes_total', "set_state writes dropped because the document's author may not write their key (state store authorization)", () => m().deniedStateWrites);
  counter('edb_rules_denied_state_reads_total', "state() reads answered as an absent key because the document's author may not read it (state store authorization)", () => m().deniedStateReads);
  gauge('edb_rules_compile_seconds', 'Time to compile the active document (check, codegen, asc, instantiate)', () => m().lastCompileMillis / 1000);
  gauge('edb_rules_wasm_bytes', 'Size of the active compiled module', () => m().wasmBytes);
  gauge('edb_rules_source_bytes', 'Size of the generated AssemblyScript of the active document', () => m().sourceBytes);
  gauge('edb_rules_filters', 'Filters in the active document', () => m().filters);
  gauge('edb_rules_statements', 'Filter and rule statements in the active document', () => m().filterStatements + m().ruleStatements);
}

interface HistogramSeries {
  labels: Record<string, string>;
  /** Per bucket of TIME_BUCKETS (not cumulative), then +Inf. */
  counts: number[];
  sum: number;
}

/**
 * A histogram whose buckets live in the rules engine (fixed buckets filled on the timed
 * messages, src/rules/runtime.ts): formatted at scrape time; prom-client's own Histogram
 * could only be fed one observation at a time.
 */
function histogram(registry: Registry, name: string, help: string, read: () => HistogramSeries[]): void {
  const metric = {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    // prom-client's typings say `type` is an enum; its registry prints the string
    async get() {
      const values: (MetricValue<string> & { metricName: string })[] = [];
      for (const series of read()) {
        let total = 0;
        series.counts.forEach((c, b) => {
          total += c;
          const le = b < TIME_BUCKETS.length ? String(TIME_BUCKETS[b]) : '+Inf';
          values.push({ metricName: `${name}_bucket`, labels: { ...series.labels, le }, value: total });
        });
        values.push({ metricName: `${name}_sum`, labels: series.labels, value: series.sum });
        values.push({ metricName: `${name}_count`, labels: series.labels, value: total });
      }
      return { name, help, type: 'histogram', aggregator: 'sum', values };
    },
    reset(): void {},
  };
  registry.registerMetric(metric as unknown as Metric);
}
