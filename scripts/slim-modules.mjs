#!/usr/bin/env node
// Slims production node_modules for the Docker image (run by the Dockerfile's build stage, which
// has the runtime's platform, architecture and Node version); about 400 MB -> 70 MB:
// - uWebSockets.js ships 54 builds (about 250 MB); only the one this Node loads is kept,
//   uws_<platform>_<arch>_<ABI>.node, the name its uws.js asks for.
// - binaryen's bin/ holds its command-line tools (wasm-opt & co., about 80 MB); the rules
//   compiler (asc) uses only the library, binaryen/index.js.
// Usage: node scripts/slim-modules.mjs [node_modules folder]
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const modules = resolve(process.argv[2] ?? 'node_modules');
const mib = (bytes) => `${(bytes / 1048576).toFixed(0)} MiB`;

function sizeOf(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((sum, name) => sum + sizeOf(join(path, name)), 0);
}

const uwsDir = join(modules, 'uWebSockets.js');
const keep = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
let names;
try {
  names = readdirSync(uwsDir);
} catch (err) {
  console.error(`slim-modules: cannot read ${uwsDir}: ${err.message}`);
  process.exit(1);
}
let removed = 0;
let bytes = 0;
for (const name of names) {
  if (!name.endsWith('.node') || name === keep) continue;
  bytes += sizeOf(join(uwsDir, name));
  rmSync(join(uwsDir, name));
  removed++;
}
if (names.includes(keep)) console.log(`slim-modules: uWebSockets.js: kept ${keep}, removed ${removed} other builds (${mib(bytes)})`);
else console.log(`slim-modules: uWebSockets.js has no build ${keep} (the ws engine will serve); removed ${removed} other builds (${mib(bytes)})`);

const binaryenBin = join(modules, 'binaryen', 'bin');
try {
  const size = sizeOf(binaryenBin);
  rmSync(binaryenBin, { recursive: true });
  console.log(`slim-modules: binaryen: removed its command-line tools (${mib(size)})`);
} catch (err) {
  if (err.code !== 'ENOENT') throw err;
}
