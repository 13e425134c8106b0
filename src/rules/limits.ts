/** Bounds of the per-statement memory (specs/fr-script-state.md; settings EDB_RULES_MEMORY_TOPICS, EDB_RULES_WINDOW_SAMPLES). */
export interface MemoryLimits {
  /** Concrete topics per statement (the least recently seen is forgotten past that). */
  topics: number;
  /** Exact samples per window and topic (older ones are merged into buckets). */
  samples: number;
}
export const DEFAULT_MEMORY_LIMITS: MemoryLimits = { topics: 10_000, samples: 1024 };
