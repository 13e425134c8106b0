/**
 * Worker thread running the compile pipeline (check, codegen, asc), so the broker's event
 * loop keeps serving while a document compiles. In: { id, request }; out: { id, result } or
 * { id, crash } (the binary and tables buffers are transferred).
 */
import { parentPort } from 'node:worker_threads';
import { runCompile, type CompileRequest, type CompileResult } from './pipeline.js';

export interface WorkerRequest {
  id: number;
  request: CompileRequest;
}
export type WorkerReply = { id: number; result: CompileResult } | { id: number; crash: string };

if (parentPort) {
  const port = parentPort;
  port.on('message', (message: WorkerRequest) => {
    runCompile(message.request).then(
      (result) => {
        const reply: WorkerReply = { id: message.id, result };
        const transfer = result.ok ? [result.binary.buffer as ArrayBuffer, result.tables.buffer as ArrayBuffer] : [];
        port.postMessage(reply, transfer);
      },
      (err: unknown) => {
        const reply: WorkerReply = { id: message.id, crash: err instanceof Error ? (err.stack ?? err.message) : String(err) };
        port.postMessage(reply);
      },
    );
  });
}
