/**
 * Runs a compiled fr_script program: instantiates the module, writes the tables blob once,
 * then for every message copies the payload bytes into the module's input region and makes
 * one exported call (`process`) that reports what fired. A topic's bytes cross once, the
 * first time it is seen: the module matches it against its topic tree then and keeps the
 * result under a slot number (devices publish to the same topics over and over; the bounded
 * cache starts again when full, and stops keeping topics for a while when they do not come
 * back). No JS objects on the hot path except the outputs
 * themselves; the rule buffer lives in the module's memory.
 *
 * ABI (see assembly/rules/engine.ts for the byte layouts): exports `process(topicSlot,
 * payloadLen) -> records`, `learnTopic(slot, topicLen)`, `topicCache(slots)`,
 * `inputPtr(size)`, `outputPtr()`, `outputJsonPtr()`, `countersPtr()`,
 * `tablesPtr(size)`, `loadTables(ruleStatements)`, `restoreEntry(topicLen, payloadLen, s)`,
 * `bufferEntries()`, `bufferEntry(i)`, `bufferWords()`, `clearRuleBuffer()`; imports
 * `env.parseNumber`, `env.formatNumber`, `env.stateRead`, `env.clock`, `env.abort`.
 *
 * Timing (metrics per filter and per rule): one message in `timingEvery` is timed. The host
 * sets a flag beside the counters, the module reads the clock where each statement and logic
 * entry starts and leaves (part, ms) records, and the host adds them, per filter and per rule,
 * into fixed histogram buckets (typed arrays allocated once): no allocation per message.
 */
import type { MemoryCell } from './ast.js';
import type { OutputTemplates, ProgramMeta } from './pipeline.js';
import { DEFAULT_MEMORY_LIMITS, type MemoryLimits } from './limits.js';
import { renderKey, renderTemplate, type TemplateValue } from './template.js';
import * as layout from '../../assembly/rules/layout.js';

export interface RuleOutput {
  topic: string;
  payload: Buffer;
  /** A state write (set_state): `payload` is the value, `topic` is empty. */
  state?: { key: string; px?: number };
}

/** Counters of one program instance (cumulative since it was loaded). */
export interface EngineCounters {
  messages: number;
  topicMatches: number;
  evaluations: number;
  fires: number;
  missingVariable: number;
  kindMismatch: number;
  notJson: number;
  bufferFull: number;
  /** Concrete topics held in statements' memory (now), forgotten past the bound, window samples merged into buckets. */
  memoryTopics: number;
  memoryEvicted: number;
  samplesMerged: number;
}

/** A buffered message, for carrying the buffer across a PATCH. */
export interface BufferedEntry {
  topic: Buffer;
  payload: Buffer;
  statementIds: number[];
}

/** The few WebAssembly JS API types used here (the project's lib setting has no DOM types). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
export type WasmModule = object;
interface WasmInstance {
  readonly exports: unknown;
}
interface WasmApi {
  compile(bytes: Uint8Array): Promise<WasmModule>;
  Instance: new (module: WasmModule, imports: object) => WasmInstance;
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

interface Exports {
  memory: WasmMemory;
  process(topicSlot: number, payloadLen: number, now: number, mode: number): number;
  statementCountersPtr(): number;
  memoryOldest(s: number): number;
  memoryAlloc(size: number): number;
  memoryRestore(s: number, cells: number, ptr: number, len: number): number;
  memoryClear(): void;
  ringReserve(cell: number, size: number): void;
  setMemoryLimits(topics: number, samples: number): void;
  learnTopic(slot: number, topicLen: number): void;
  topicCache(slots: number): void;
  inputPtr(size: number): number;
  outputPtr(): number;
  outputJsonPtr(): number;
  countersPtr(): number;
  tablesPtr(size: number): number;
  loadTables(ruleStatements: number): number;
  restoreEntry(topicLen: number, payloadLen: number, statement: number): void;
  bufferEntries(): number;
  bufferEntry(i: number): number;
  bufferWords(): number;
  clearRuleBuffer(): void;
}

// byte layouts shared with the module: assembly/rules/layout.ts
const { OUT_FILTER, OUTPUT_SIZE, PTRS, TIMING, RULES_SKIPPED, RUN_ALL, TIMING_SIZE, REC_HEADER, CELL_SIZE, BUCKET_SIZE, BUCKET_CAP, V_NULL, V_BOOL, V_NUMBER, V_STRING, ENTRY_HEADER, STATEMENT_COUNTERS_SIZE, LOGIC_COUNTERS_SIZE, VALUE_SIZE } = layout;
/** Upper bounds (seconds) of the time histograms' buckets; a last bucket holds the rest (+Inf). */
export const TIME_BUCKETS: readonly number[] = [1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3, 1e-2];
const NB = TIME_BUCKETS.length + 1;

/**
 * Time histograms of sampled messages, each sample weighted by the sampling interval so that
 * counts and sums estimate all messages: `counts` per part (filters, then rules) NB buckets
 * each (not cumulative; the last is +Inf), `sums` per part in seconds; the same for whole messages.
 */
export interface TimeHistograms {
  parts: number;
  counts: Float64Array;
  sums: Float64Array;
  messageCounts: Float64Array;
  messageSum: number;
}

/** Per-statement counters (metrics per filter and per rule). */
export interface StatementCounters {
  evaluations: number;
  trueResults: number;
  unknown: number;
}

/** One statement's memory on one topic, as the backup and PATCH carry it: a state per cell. */
export interface TopicMemory {
  topic: Buffer;
  cells: CellMemory[];
}
export type CellMemory =
  | { kind: 'value'; has: boolean; type: number; num: number; str?: Buffer }
  | { kind: 'deadband'; has: boolean; ref: number }
  /** exact: [t, v] pairs, oldest first; buckets: [key, n, c, sum, min, max, last] each, oldest first. */
  | { kind: 'window'; exact: Float64Array; buckets: Float64Array };

/** A statement's memory by topic, least recently seen first, with the cell descriptors it was kept for. */
export interface StatementMemory {
  key: string;
  cells: string[];
  topics: TopicMemory[];
}
const NO_OUTPUT: readonly RuleOutput[] = Object.freeze([]);
/** Topics kept, matched, in the module (topics repeat: devices publish to the same few topics). */
export const TOPIC_CACHE = 16384;
/** The module's slot for topics matched but not kept. */
const SCRATCH_SLOT = TOPIC_CACHE;

interface TopicEntry {
  /** The module's topic slot. */
  slot: number;
  /** Once a filter fired on the topic: its output topics by filter statement index (a Map:
   * an array indexed by statement would hold thousands of holes per topic). */
  outputs: Map<number, string> | undefined;
}

export class RulesProgram {
  private readonly exports: Exports;
  private bytes!: Buffer;
  private view!: DataView;
  private inputAddress = 0;
  private inputCapacity = 0;
  private readonly countersAt: number;
  private readonly topics = new Map<string, TopicEntry>();
  /** Lookups that found their topic since the slots were last reused. */
  private hits = 0;
  /** Topics left to match in the scratch slot, without keeping them. */
  private bypass = 0;
  private readonly filterSuffix: string[];
  private readonly filterPayload: (Buffer | null)[];
  private readonly logicTopic: string[];
  private readonly logicPayload: (Buffer | null)[];
  private readonly statementIds: number[];
  private readonly filterTemplates: (OutputTemplates | undefined)[];
  private readonly logicTemplates: (OutputTemplates | undefined)[];
  readonly meta: ProgramMeta;
  /** Whether a statement keeps a window (samples are timed): the only use of a message's time. */
  private readonly usesClock: boolean;
  /** The topic of the message being processed (state() keys are rendered for it). */
  private currentTopic = '';
  /** Reads the state store for state() (same process, no round trip); none: every key absent. */
  stateReader: (key: string) => Buffer | undefined = () => undefined;
  /** Timing: 0 off, else one message in this many is timed. */
  private timingEvery = 0;
  private untilTimed = 0;
  /** Part of each statement, then of each logic entry (filters first, then rules). */
  private partOf = new Int32Array(0);
  private times: TimeHistograms = { parts: 0, counts: new Float64Array(0), sums: new Float64Array(0), messageCounts: new Float64Array(NB), messageSum: 0 };
  /** Per part: its time in the timed message (ms), and which parts ran (scratch, reused). */
  private partMs = new Float64Array(0);
  private touched = new Int32Array(0);

  private constructor(
    instance: WasmInstance,
    meta: ProgramMeta,
    tables: Uint8Array,
    limits: MemoryLimits,
  ) {
    this.exports = instance.exports as unknown as Exports;
    this.meta = meta;
    this.usesClock = meta.statements.some((st) => st.cells.some((c) => c.kind === 'window'));
    this.refresh();
    const at = this.exports.tablesPtr(tables.length);
    this.refresh();
    this.bytes.set(tables, at);
    if (this.exports.loadTables(meta.ruleStatementIds.length) !== 1) throw new Error('rules module rejected its tables');
    this.exports.topicCache(TOPIC_CACHE + 1); // and the scratch slot
    this.filterSuffix = meta.filterOutputs.map((f) => f.suffix);
    const payloads = new Map<string, Buffer>(); // one Buffer per distinct fixed payload
    const fixed = (text: string): Buffer => {
      let b = payloads.get(text);
      if (!b) payloads.set(text, (b = Buffer.from(text, 'utf8')));
      return b;
    };
    this.filterPayload = meta.filterOutputs.map((f) => (f.payload === null ? null : fixed(f.payload)));
    this.logicTopic = meta.logicOutputs.map((l) => l.topic);
    this.logicPayload = meta.logicOutputs.map((l) => (l.payload === null ? null : fixed(l.payload)));
    this.statementIds = meta.ruleStatementIds;
    this.filterTemplates = meta.filterOutputs.map((f) => f.templates);
    this.logicTemplates = meta.logicOutputs.map((l) => l.templates);
    this.countersAt = this.exports.countersPtr();
    this.exports.setMemoryLimits(limits.topics, limits.samples);
    this.refresh();
  }

  static async load(binary: Uint8Array, meta: ProgramMeta, tables: Uint8Array, limits: MemoryLimits = DEFAULT_MEMORY_LIMITS): Promise<RulesProgram> {
    const module = await WA.compile(binary);
    return RulesProgram.instantiate(module, meta, tables, limits);
  }

  static instantiate(module: WasmModule, meta: ProgramMeta, tables: Uint8Array, limits: MemoryLimits = DEFAULT_MEMORY_LIMITS): RulesProgram {
    let self: RulesProgram | undefined;
    const imports = {
      env: {
        stateRead: (key: number, dst: number, cap: number): number => self!.readState(key, dst, cap),
        clock: (): number => performance.now(),
        parseNumber: (ptr: number, len: number): number => Number(self!.bytes.toString('latin1', ptr, ptr + len)),
        formatNumber: (value: number, dst: number): number => self!.bytes.write(String(value), dst, 32, 'latin1'),
        abort: (): never => {
          throw new Error('rules module aborted');
        },
      },
    };
    // synchronous: the module is compiled already; the imports are only called later,
    // from process(), once `self` is set
    const instance = new WA.Instance(module, imports);
    self = new RulesProgram(instance, meta, tables, limits);
    return self;
  }

  /** env.stateRead (assembly/rules/host.ts): the state store's value of key template `key` for the current topic. */
  private readState(key: number, dst: number, cap: number): number {
    const template = this.meta.stateKeys[key];
    const name = template === undefined ? undefined : renderKey(template, this.currentTopic);
    if (name === undefined) return -1;
    const bytes = this.stateReader(name);
    if (bytes === undefined) return -1;
    const text = bytes.toString('utf8');
    let v: unknown = text;
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed === null || typeof parsed === 'number' || typeof parsed === 'string' || typeof parsed === 'boolean') v = parsed;
    } catch {
      // not JSON: the text itself
    }
    this.refresh();
    if (v === null) return 1;
    if (v === false) return 2;
    if (v === true) return 3;
    if (typeof v === 'number') {
      this.view.setFloat64(dst, v, true);
      return 4;
    }
    const b = Buffer.from(v as string, 'utf8');
    if (b.length > cap) return (b.length << 3) | 6;
    b.copy(this.bytes, dst);
    return (b.length << 3) | 5;
  }

  private refresh(): void {
    const buffer = this.exports.memory.buffer;
    if (!this.bytes || this.bytes.buffer !== buffer || this.bytes.length === 0) {
      this.bytes = Buffer.from(buffer);
      this.view = new DataView(buffer);
    }
  }

  /**
   * Runs one message at `now` (ms; the clock when absent, read only when a statement keeps a
   * window: nothing else in the module uses the time); returns what to publish (a shared
   * empty array when nothing fired). `mode` (RUN_* of assembly/rules/layout.ts): everything,
   * or only the filters or only the rules (a cluster keeps one rule buffer, on one node: see
   * src/cluster/rule-buffer.ts).
   */
  process(topic: string, payload: Buffer, now?: number, mode: number = RUN_ALL): readonly RuleOutput[] {
    this.currentTopic = topic;
    let entry = this.bypass > 0 ? undefined : this.topics.get(topic);
    if (entry === undefined) entry = this.learn(topic);
    else this.hits++;
    if (payload.length > this.inputCapacity) this.reserveInput(payload.length);
    let bytes = this.bytes;
    if (bytes.length === 0) {
      // the memory grew during the last call: the old view is detached
      this.refresh();
      bytes = this.bytes;
    }
    bytes.set(payload, this.inputAddress);
    let timed = false;
    if (this.timingEvery > 0 && --this.untilTimed <= 0) {
      this.untilTimed = this.timingEvery;
      this.view.setUint32(this.countersAt + TIMING, 1, true);
      timed = true;
    }
    const records = this.exports.process(entry.slot, payload.length, now ?? (this.usesClock ? Date.now() : 0), mode);
    if (timed) this.addTiming();
    if (records === 0) return NO_OUTPUT;
    return this.readOutputs(records, topic, payload, entry);
  }

  /**
   * First sight of a topic: the module matches it once and keeps it under the next slot. When
   * the slots fill up with fewer hits than topics (more distinct topics than it holds), keeping
   * costs more than it saves: for a while each topic is matched in the scratch slot instead.
   */
  private learn(topic: string): TopicEntry {
    let entry: TopicEntry;
    if (this.bypass > 0) {
      this.bypass--;
      entry = { slot: SCRATCH_SLOT, outputs: undefined };
    } else {
      if (this.topics.size >= TOPIC_CACHE) {
        if (this.hits < TOPIC_CACHE) this.bypass = 16 * TOPIC_CACHE;
        this.topics.clear(); // slots are reused from 0
        this.hits = 0;
      }
      entry = { slot: this.bypass > 0 ? SCRATCH_SLOT : this.topics.size, outputs: undefined };
    }
    // the topic's UTF-8 goes straight into the input region (at most 3 bytes a UTF-16 unit)
    if (topic.length * 3 > this.inputCapacity) this.reserveInput(topic.length * 3);
    if (this.bytes.length === 0) this.refresh(); // detached: the memory grew
    const length = this.bytes.write(topic, this.inputAddress, 'utf8');
    this.exports.learnTopic(entry.slot, length);
    if (this.bytes.length === 0) this.refresh();
    if (entry.slot !== SCRATCH_SLOT) this.topics.set(topic, entry);
    return entry;
  }

  private reserveInput(size: number): void {
    this.inputCapacity = Math.max(size, this.inputCapacity * 2, 4096);
    this.inputAddress = this.exports.inputPtr(this.inputCapacity);
    this.refresh();
  }

  private readOutputs(records: number, topic: string, payload: Buffer, entry: TopicEntry): RuleOutput[] {
    if (this.bytes.length === 0) this.refresh();
    const view = this.view;
    // the record and JSON addresses sit after the counters (assembly/rules/engine.ts)
    const base = view.getUint32(this.countersAt + PTRS, true);
    const json = view.getUint32(this.countersAt + PTRS + 4, true);
    const out: RuleOutput[] = [];
    for (let i = 0; i < records; i++) {
      const p = base + i * OUTPUT_SIZE;
      const kind = view.getInt32(p, true);
      const index = view.getInt32(p + 4, true);
      const templates = kind === OUT_FILTER ? this.filterTemplates[index] : this.logicTemplates[index];
      if (templates !== undefined) {
        const values = this.templateValues(view.getInt32(p + 16, true), view.getInt32(p + 20, true));
        let outTopic: string;
        let original: Buffer;
        if (kind === OUT_FILTER) {
          outTopic = topic + this.filterSuffix[index]!;
          original = payload;
        } else {
          outTopic = this.logicTopic[index]!;
          const start = view.getInt32(p + 8, true);
          original = start < 0 ? Buffer.alloc(0) : Buffer.from(this.bytes.subarray(json + start, json + start + view.getInt32(p + 12, true)));
        }
        if (templates.publish) out.push({ topic: outTopic, payload: templates.payload === null ? original : Buffer.from(renderTemplate(templates.payload, values), 'utf8') });
        if (templates.setState) {
          const key = renderKey(templates.setState.key, topic);
          if (key !== undefined) {
            out.push({ topic: '', payload: Buffer.from(renderTemplate(templates.setState.value, values), 'utf8'), state: { key, ...(templates.setState.px === undefined ? {} : { px: templates.setState.px }) } });
          }
        }
        continue;
      }
      if (kind === OUT_FILTER) {
        let outTopic: string | undefined;
        if (entry.slot === SCRATCH_SLOT) outTopic = topic + this.filterSuffix[index]!; // not kept: nothing to remember
        else {
          const outputs = (entry.outputs ??= new Map());
          outTopic = outputs.get(index);
          if (outTopic === undefined) outputs.set(index, (outTopic = topic + this.filterSuffix[index]!));
        }
        out.push({ topic: outTopic, payload: this.filterPayload[index] ?? payload });
      } else {
        const start = view.getInt32(p + 8, true);
        const length = view.getInt32(p + 12, true);
        const fixed = this.logicPayload[index];
        const body = fixed ?? Buffer.from(this.bytes.subarray(json + start, json + start + length));
        out.push({ topic: this.logicTopic[index]!, payload: body });
      }
    }
    return out;
  }

  /** The template values of an output record (values arena, assembly/rules/engine.ts). */
  private templateValues(start: number, count: number): TemplateValue[] {
    const view = this.view;
    let at = view.getUint32(this.countersAt + PTRS + 8, true) + start;
    const values: TemplateValue[] = [];
    for (let i = 0; i < count; i++) {
      const kind = view.getInt32(at, true);
      const len = view.getInt32(at + 4, true);
      const num = view.getFloat64(at + 8, true);
      if (kind === V_NUMBER) values.push(num);
      else if (kind === V_STRING) values.push(this.bytes.toString('utf8', at + VALUE_SIZE, at + VALUE_SIZE + len));
      else if (kind === V_BOOL) values.push(num !== 0);
      else if (kind === V_NULL) values.push(null);
      else values.push(undefined);
      at += VALUE_SIZE + ((len + 7) & ~7);
    }
    return values;
  }

  /**
   * Time one message in `every` (0: none), adding it to the part of each statement and logic
   * entry: filter statements to their filter (parts 0 .. filters-1), rule statements and logic
   * entries (`logicRule`: the rule of each) to `filters` + their rule.
   */
  enableTiming(every: number, filters: number, rules: number, logicRule: readonly number[]): void {
    const st = this.meta.statements;
    const partOf = new Int32Array(st.length + logicRule.length);
    st.forEach((s, i) => (partOf[i] = s.filter >= 0 ? s.filter : filters + s.rule));
    logicRule.forEach((r, j) => (partOf[st.length + j] = filters + r));
    const parts = filters + rules;
    this.partOf = partOf;
    this.times = { parts, counts: new Float64Array(parts * NB), sums: new Float64Array(parts), messageCounts: new Float64Array(NB), messageSum: 0 };
    this.partMs = new Float64Array(parts);
    this.touched = new Int32Array(parts);
    this.timingEvery = every;
    this.untilTimed = 1; // the first message is timed: a quiet broker shows figures at once
  }

  /** The time histograms so far (live arrays: copy what must not change). */
  timeHistograms(): TimeHistograms {
    return this.times;
  }

  /** Adds the timed message's records to the histograms. */
  private addTiming(): void {
    if (this.bytes.length === 0) this.refresh();
    const v = this.view;
    const at = v.getUint32(this.countersAt + TIMING + 4, true);
    const n = v.getInt32(this.countersAt + TIMING + 8, true);
    const weight = this.timingEvery;
    const t = this.times;
    const partMs = this.partMs;
    const touched = this.touched;
    let ran = 0;
    for (let i = 0; i < n; i++) {
      const index = v.getInt32(at + i * TIMING_SIZE, true);
      const part = this.partOf[index];
      if (part === undefined || part >= t.parts) continue;
      if (partMs[part] === 0) touched[ran++] = part;
      partMs[part] += v.getFloat64(at + i * TIMING_SIZE + 8, true) || Number.MIN_VALUE;
    }
    for (let k = 0; k < ran; k++) {
      const part = touched[k]!;
      const seconds = partMs[part]! / 1000;
      partMs[part] = 0;
      t.counts[part * NB + bucketOf(seconds)]! += weight;
      t.sums[part]! += seconds * weight;
    }
    const message = v.getFloat64(this.countersAt + TIMING + 12, true) / 1000;
    t.messageCounts[bucketOf(message)]! += weight;
    t.messageSum += message * weight;
  }

  /** Per statement (filter statements, then rule statements) and per logic entry (fires). */
  statementCounters(): { statements: StatementCounters[]; logicFires: number[] } {
    this.refresh();
    const p = this.exports.statementCountersPtr();
    const v = this.view;
    const statements = this.meta.statements.map((_, i) => ({
      evaluations: v.getFloat64(p + i * STATEMENT_COUNTERS_SIZE, true),
      trueResults: v.getFloat64(p + i * STATEMENT_COUNTERS_SIZE + 8, true),
      unknown: v.getFloat64(p + i * STATEMENT_COUNTERS_SIZE + 16, true),
    }));
    const l = p + this.meta.statements.length * STATEMENT_COUNTERS_SIZE;
    return { statements, logicFires: this.meta.logicOutputs.map((_, j) => v.getFloat64(l + j * LOGIC_COUNTERS_SIZE, true)) };
  }

  /** Every statement's memory (for the backup and PATCH). */
  memorySnapshot(): StatementMemory[] {
    const out: StatementMemory[] = [];
    this.meta.statements.forEach((st, s) => {
      if (st.cells.length === 0) return;
      const topics: TopicMemory[] = [];
      let r = this.exports.memoryOldest(s);
      this.refresh();
      while (r !== 0) {
        topics.push(this.readRecord(r, st.cells));
        r = this.view.getUint32(r + 8, true);
      }
      out.push({ key: st.key, cells: st.cells.map((c) => c.id), topics });
    });
    return out;
  }

  private readRecord(r: number, cells: readonly MemoryCell[]): TopicMemory {
    const v = this.view;
    const b = this.bytes;
    const topicAt = v.getUint32(r + 24, true);
    const topic = Buffer.from(b.subarray(topicAt, topicAt + v.getUint32(r + 20, true)));
    const states = cells.map((cell, i): CellMemory => {
      const c = r + REC_HEADER + i * CELL_SIZE;
      if (cell.kind === 'value') {
        const type = v.getInt32(c + 4, true);
        const strAt = v.getUint32(c + 8, true);
        return { kind: 'value', has: v.getInt32(c, true) !== 0, type, num: v.getFloat64(c + 16, true), ...(type === V_STRING ? { str: Buffer.from(b.subarray(strAt, strAt + v.getInt32(c + 12, true))) } : {}) };
      }
      if (cell.kind === 'deadband') return { kind: 'deadband', has: v.getInt32(c, true) !== 0, ref: v.getFloat64(c + 16, true) };
      const ring = v.getUint32(c, true);
      const cap = v.getInt32(c + 4, true);
      const head = v.getInt32(c + 8, true);
      const n = v.getInt32(c + 12, true);
      const exact = new Float64Array(n * 2);
      for (let k = 0; k < n; k++) {
        const e = ring + ((head + k) % cap) * 16;
        exact[k * 2] = v.getFloat64(e, true);
        exact[k * 2 + 1] = v.getFloat64(e + 8, true);
      }
      const bucketsAt = v.getUint32(c + 16, true);
      const bh = v.getInt32(c + 20, true);
      const nb = v.getInt32(c + 24, true);
      const buckets = new Float64Array(nb * 7);
      for (let k = 0; k < nb; k++) {
        const e = bucketsAt + ((bh + k) % BUCKET_CAP) * BUCKET_SIZE;
        for (let f = 0; f < 7; f++) buckets[k * 7 + f] = v.getFloat64(e + f * 8, true);
      }
      return { kind: 'window', exact, buckets };
    });
    return { topic, cells: states };
  }

  /**
   * Puts memory back: for each statement of this program whose key (topic filter and condition)
   * is in `saved`, the cells with the same descriptors, topic by topic (least recent first).
   */
  restoreMemory(saved: readonly StatementMemory[], keep: (key: string) => boolean = () => true): number {
    const byKey = new Map(saved.map((m) => [m.key, m]));
    let restored = 0;
    this.meta.statements.forEach((st, s) => {
      if (st.cells.length === 0) return;
      const m = byKey.get(st.key);
      if (!m || !keep(st.key)) return;
      const from = st.cells.map((c) => m.cells.indexOf(c.id));
      for (const t of m.topics) {
        if (t.topic.length > this.inputCapacity) this.reserveInput(t.topic.length);
        this.refresh();
        t.topic.copy(this.bytes, this.inputAddress);
        const r = this.exports.memoryRestore(s, st.cells.length, this.inputAddress, t.topic.length);
        if (r === 0) continue;
        from.forEach((k, i) => {
          const state = k < 0 ? undefined : t.cells[k];
          if (state) this.writeCell(r + REC_HEADER + i * CELL_SIZE, state);
        });
        restored++;
      }
    });
    return restored;
  }

  private writeCell(c: number, state: CellMemory): void {
    if (state.kind === 'value') {
      let strAt = 0;
      if (state.str && state.str.length > 0) {
        strAt = this.exports.memoryAlloc(state.str.length);
        this.refresh();
        state.str.copy(this.bytes, strAt);
      }
      this.refresh();
      const v = this.view;
      v.setInt32(c, state.has ? 1 : 0, true);
      v.setInt32(c + 4, state.type, true);
      v.setUint32(c + 8, strAt, true);
      v.setInt32(c + 12, state.str?.length ?? 0, true);
      v.setFloat64(c + 16, state.num, true);
      v.setInt32(c + 24, state.str?.length ?? 0, true);
      v.setUint32(c + 28, strAt !== 0 ? 1 : 0, true);
      return;
    }
    if (state.kind === 'deadband') {
      this.refresh();
      this.view.setInt32(c, state.has ? 1 : 0, true);
      this.view.setFloat64(c + 16, state.ref, true);
      return;
    }
    const n = state.exact.length / 2;
    if (n > 0) this.exports.ringReserve(c, n);
    const nb = state.buckets.length / 7;
    let bucketsAt = 0;
    if (nb > 0) bucketsAt = this.exports.memoryAlloc(BUCKET_CAP * BUCKET_SIZE);
    this.refresh();
    const v = this.view;
    const ring = v.getUint32(c, true);
    for (let k = 0; k < n; k++) {
      v.setFloat64(ring + k * 16, state.exact[k * 2]!, true);
      v.setFloat64(ring + k * 16 + 8, state.exact[k * 2 + 1]!, true);
    }
    v.setInt32(c + 8, 0, true);
    v.setInt32(c + 12, n, true);
    if (nb > 0) {
      for (let k = 0; k < nb; k++) for (let f = 0; f < 7; f++) v.setFloat64(bucketsAt + k * BUCKET_SIZE + f * 8, state.buckets[k * 7 + f]!, true);
      v.setUint32(c + 16, bucketsAt, true);
      v.setInt32(c + 20, 0, true);
      v.setInt32(c + 24, nb, true);
      v.setUint32(c + 28, v.getUint32(c + 28, true) | 4, true);
    }
  }

  clearMemory(): void {
    this.exports.memoryClear();
  }

  counters(): EngineCounters {
    this.refresh();
    const p = this.exports.countersPtr();
    const v = this.view;
    const f = (i: number): number => v.getFloat64(p + i * 8, true);
    return {
      messages: f(0),
      topicMatches: f(1),
      evaluations: f(2),
      fires: f(3),
      missingVariable: f(4),
      kindMismatch: f(5),
      notJson: f(6),
      bufferFull: f(7),
      memoryTopics: f(8),
      memoryEvicted: f(9),
      samplesMerged: f(10),
    };
  }

  /** The buffered messages, with the ids of the statements each satisfies. */
  bufferSnapshot(): BufferedEntry[] {
    const n = this.exports.bufferEntries();
    const words = this.exports.bufferWords();
    const entries: BufferedEntry[] = [];
    for (let i = 0; i < n; i++) {
      const e = this.exports.bufferEntry(i);
      this.refresh();
      const v = this.view;
      const payloadAt = v.getUint32(e + 16, true);
      const payloadLen = v.getUint32(e + 20, true);
      const topicLen = v.getUint32(e + 28, true);
      const ids: number[] = [];
      for (let w = 0; w < words; w++) {
        const bits = v.getUint32(e + ENTRY_HEADER + w * 4, true);
        for (let b = 0; b < 32; b++) if ((bits >>> b) & 1) ids.push(this.statementIds[w * 32 + b]!);
      }
      const topicAt = e + ENTRY_HEADER + words * 4;
      entries.push({
        topic: Buffer.from(this.bytes.subarray(topicAt, topicAt + topicLen)),
        payload: Buffer.from(this.bytes.subarray(payloadAt, payloadAt + payloadLen)),
        statementIds: ids,
      });
    }
    return entries;
  }

  /** Puts buffered messages back, for the statements (by id) this program has. */
  restoreBuffer(entries: readonly BufferedEntry[], keepIds: ReadonlySet<number>): void {
    const indexById = new Map(this.statementIds.map((id, i) => [id, i]));
    for (const entry of entries) {
      const need = entry.topic.length + entry.payload.length;
      if (need > this.inputCapacity) this.reserveInput(need);
      this.refresh();
      entry.topic.copy(this.bytes, this.inputAddress);
      entry.payload.copy(this.bytes, this.inputAddress + entry.topic.length);
      for (const id of entry.statementIds) {
        const index = indexById.get(id);
        if (index !== undefined && keepIds.has(id)) this.exports.restoreEntry(entry.topic.length, entry.payload.length, index);
      }
    }
  }

  clearBuffer(): void {
    this.exports.clearRuleBuffer();
  }

  /** Whether the last message matched rule statements that its mode did not run. */
  rulesSkipped(): boolean {
    if (this.bytes.length === 0) this.refresh();
    return this.view.getUint32(this.countersAt + RULES_SKIPPED, true) !== 0;
  }
}

function bucketOf(seconds: number): number {
  let b = 0;
  while (b < TIME_BUCKETS.length && seconds > TIME_BUCKETS[b]!) b++;
  return b;
}
