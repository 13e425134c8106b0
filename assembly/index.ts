// Entry point of the build-time WebAssembly module (build/edb.wasm).
// Later parts add their modules here (the state-store hash table, shared helpers).

/** Version of the module's ABI, checked by the loader. */
export function abiVersion(): i32 {
  return 1;
}
