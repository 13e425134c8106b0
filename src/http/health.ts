/**
 * /healthz: the process answers (liveness). /readyz: every listener is up and the broker
 * has finished starting (readiness; 503 while starting or stopping, with the reasons).
 */
import type { ListenerState } from './metrics.js';
import { json, type HttpHandler } from './server.js';

export interface Readiness {
  /** Set once every listener has started; cleared when the broker starts stopping. */
  ready: boolean;
  listeners(): ListenerState[];
  /** Parts that can hold readiness back (the cluster while NATS is unreachable): name -> why, or undefined when fine. */
  checks?(): Record<string, string>;
}

export const healthzHandler: HttpHandler = () => json(200, { status: 'ok' });

export function readyzHandler(readiness: Readiness): HttpHandler {
  return () => {
    const listeners = readiness.listeners();
    const down = listeners.filter((l) => !l.up).map((l) => l.name);
    const waiting = readiness.checks?.() ?? {};
    const ok = readiness.ready && down.length === 0 && Object.keys(waiting).length === 0;
    return json(ok ? 200 : 503, {
      status: ok ? 'ready' : 'not_ready',
      ...(readiness.ready ? {} : { reason: 'starting or stopping' }),
      ...(down.length > 0 ? { down } : {}),
      ...(Object.keys(waiting).length > 0 ? { waiting } : {}),
      listeners,
    });
  };
}
