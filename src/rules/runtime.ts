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
 * `env.parseNumber`, `env.formatNumber`, `env.abort`.
 */
import type { ProgramMeta } from './pipeline.js';

export interface RuleOutput {
  topic: string;
  payload: Buffer;
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
  process(topicSlot: number, payloadLen: number): number;
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

const OUT_FILTER = 1;
const NO_OUTPUT: readonly RuleOutput[] = Object.freeze([]);
const ENTRY_HEADER = 32;
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

  private constructor(
    instance: WasmInstance,
    meta: ProgramMeta,
    tables: Uint8Array,
  ) {
    this.exports = instance.exports as unknown as Exports;
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
    this.countersAt = this.exports.countersPtr();
    this.refresh();
  }

  static async load(binary: Uint8Array, meta: ProgramMeta, tables: Uint8Array): Promise<RulesProgram> {
    const module = await WA.compile(binary);
    return RulesProgram.instantiate(module, meta, tables);
  }

  static instantiate(module: WasmModule, meta: ProgramMeta, tables: Uint8Array): RulesProgram {
    let self: RulesProgram | undefined;
    const imports = {
      env: {
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
    self = new RulesProgram(instance, meta, tables);
    return self;
  }

  private refresh(): void {
    const buffer = this.exports.memory.buffer;
    if (!this.bytes || this.bytes.buffer !== buffer || this.bytes.length === 0) {
      this.bytes = Buffer.from(buffer);
      this.view = new DataView(buffer);
    }
  }

  /** Runs one message; returns what to publish (a shared empty array when nothing fired). */
  process(topic: string, payload: Buffer): readonly RuleOutput[] {
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
    const records = this.exports.process(entry.slot, payload.length);
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
    const base = view.getUint32(this.countersAt + 64, true);
    const json = view.getUint32(this.countersAt + 68, true);
    const out: RuleOutput[] = [];
    for (let i = 0; i < records; i++) {
      const p = base + i * 16;
      const kind = view.getInt32(p, true);
      const index = view.getInt32(p + 4, true);
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
}
