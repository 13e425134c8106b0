/**
 * Worker thread that runs the AssemblyScript compiler, so the broker's event loop keeps
 * serving while a document compiles. Messages: { id, source, optimizeLevel } in,
 * { id, binary, millis } or { id, error } out (the binary's buffer is transferred).
 */
import { parentPort } from 'node:worker_threads';
import { compileAssemblyScript } from './asc.js';

export interface CompileRequest {
  id: number;
  source: string;
  optimizeLevel: number;
}
export type CompileReply = { id: number; binary: Uint8Array; millis: number } | { id: number; error: string };

if (parentPort) {
  const port = parentPort;
  port.on('message', (request: CompileRequest) => {
    compileAssemblyScript(request.source, { optimizeLevel: request.optimizeLevel }).then(
      (result) => {
        const reply: CompileReply = { id: request.id, binary: result.binary, millis: result.millis };
        port.postMessage(reply, [result.binary.buffer as ArrayBuffer]);
      },
      (err: unknown) => {
        const reply: CompileReply = { id: request.id, error: err instanceof Error ? err.message : String(err) };
        port.postMessage(reply);
      },
    );
  });
}
