// Entry point of the build-time WebAssembly module (build/edb.wasm).
// Later parts add their modules here (the state-store hash table, shared helpers).

/** Version of the module's ABI, checked by the loader. */
export function abiVersion(): i32 {
  return 1;
}

// The state store's hash table (src/state/table.ts loads it into an instance of its own).
export {
  stateInit, stateMeta, stateIo, stateIoCapacity, stateIoReserve, stateSetLimits, stateGet, stateSet,
  stateDelete, stateSweep, stateFirst, stateExport, stateImport, stateMaintain, stateCount, stateExpiring,
  stateDataBytes, stateEntryBytes, stateSlotBytes, stateFreeBytes, stateArenaBytes, stateMemoryBytes,
  stateCapacity, stateMigrating,
} from './state/table';
