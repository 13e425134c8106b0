/**
 * One broker under test, in its own process so it has a core to itself:
 *   node dist/bench/ws-target.js edb-uws | edb-ws | aedes
 * Prints one JSON line {"tcp": port, "ws": port, "engine": "..."} once listening, then
 * runs until its parent closes stdin.
 */
import net from 'node:net';
import http from 'node:http';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { startEdb } from '../src/server.js';
import { testConfig } from '../src/config/load.js';
import { silentLogger } from '../src/log.js';

const kind = process.argv[2];

async function main(): Promise<void> {
  if (kind === 'edb-uws' || kind === 'edb-ws') {
    const server = await startEdb(
      testConfig({ host: '127.0.0.1', mqttPort: 0, wsPort: 0, wsEngine: kind === 'edb-uws' ? 'uws' : 'ws', maxQueuedMessages: 100_000, maxQueuedBytes: 256 * 1024 * 1024 }),
      silentLogger(),
    );
    const ws = server.listeners.find((l) => l.name === 'ws')!;
    process.stdout.write(`${JSON.stringify({ tcp: server.port('mqtt'), ws: ws.port, engine: ws.engine })}\n`);
    process.stdin.on('end', () => void server.stop().then(() => process.exit(0)));
    process.stdin.resume();
    return;
  }
  if (kind === 'aedes') {
    const { Aedes } = await import('aedes');
    const aedes = await Aedes.createBroker();
    const tcp = net.createServer((socket) => aedes.handle(socket));
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    // aedes' documented WebSocket set-up: ws + createWebSocketStream.
    const httpServer = http.createServer();
    const wss = new WebSocketServer({ server: httpServer });
    wss.on('connection', (websocket, req) => aedes.handle(createWebSocketStream(websocket) as never, req));
    await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
    process.stdout.write(`${JSON.stringify({ tcp: (tcp.address() as net.AddressInfo).port, ws: (httpServer.address() as net.AddressInfo).port, engine: 'ws (aedes)' })}\n`);
    process.stdin.on('end', () => process.exit(0));
    process.stdin.resume();
    return;
  }
  throw new Error(`unknown target ${kind}: edb-uws, edb-ws or aedes`);
}

void main();
