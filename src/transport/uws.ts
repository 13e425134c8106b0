/**
 * The one module that loads uWebSockets.js. It is a native addon built for particular
 * Node ABIs and glibc versions, so loading may fail (e.g. Node 22/24 builds need glibc
 * 2.38+); callers ask `loadUws()` and fall back to `ws` + node:http when it is not there.
 * It is loaded lazily: a broker that never opens a WebSocket/HTTP listener never loads it.
 */
import { createRequire } from 'node:module';
import type * as UwsModule from 'uWebSockets.js';

export type Uws = typeof UwsModule;
export type {
  HttpRequest as UwsHttpRequest,
  HttpResponse as UwsHttpResponse,
  TemplatedApp as UwsApp,
  WebSocket as UwsWebSocket,
  us_listen_socket as UwsListenSocket,
} from 'uWebSockets.js';

export type UwsLoadResult = { ok: true; uws: Uws } | { ok: false; reason: string };

let cached: UwsLoadResult | undefined;

/** Loads uWebSockets.js once; never throws. `reason` says why it could not load. */
export function loadUws(): UwsLoadResult {
  if (cached) return cached;
  try {
    const require = createRequire(import.meta.url);
    const uws = require('uWebSockets.js') as Uws;
    if (typeof uws.App !== 'function') throw new Error('the module has no App()');
    cached = { ok: true, uws };
  } catch (err) {
    // The addon's own message is long and multi-line; keep its last line (the dlopen error).
    const text = (err as Error).message ?? String(err);
    const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
    cached = { ok: false, reason: lines.length > 1 ? lines[lines.length - 1]! : text };
  }
  return cached;
}

export type WsEngineSetting = 'auto' | 'uws' | 'ws';
export type WsEngineName = 'uWebSockets.js' | 'ws';

export interface EngineChoice {
  engine: WsEngineName;
  /** Why `ws` runs instead of uWebSockets.js, when it does. */
  fallbackReason?: string;
}

/**
 * Which engine runs the WebSocket and HTTP listeners. `auto` prefers uWebSockets.js and
 * falls back to `ws`; `uws` insists (falls back too, but the reason is logged as a warning
 * by the caller); `ws` never loads the addon.
 */
export function chooseEngine(setting: WsEngineSetting): EngineChoice {
  if (setting === 'ws') return { engine: 'ws', fallbackReason: 'EDB_WS_ENGINE=ws' };
  const loaded = loadUws();
  if (loaded.ok) return { engine: 'uWebSockets.js' };
  return { engine: 'ws', fallbackReason: `uWebSockets.js cannot load: ${loaded.reason}` };
}

/** Text of an ArrayBuffer address from getRemoteAddressAsText(); IPv4-mapped IPv6 shortened. */
export function uwsAddressText(buf: ArrayBuffer): string {
  const text = Buffer.from(buf).toString();
  return text.startsWith('0000:0000:0000:0000:0000:ffff:') ? text.slice(30) : text;
}
