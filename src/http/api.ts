/**
 * Read-only JSON API for operators and `edb clients` / `edb subscriptions`:
 * GET /api/clients, GET /api/subscriptions, GET /api/status (what the status page shows).
 */
import type { BrokerApi } from '../broker/api.js';
import type { ListenerState } from './metrics.js';
import type { RateHistory } from './rates.js';
import { json, type HttpHandler, type HttpRequest } from './server.js';

/** A summary block another part adds to the status page (rules, state store). */
export type StatusSection = () => Record<string, unknown>;

export interface StatusSources {
  version: string;
  listeners(): ListenerState[];
  rates: RateHistory;
  sections: Map<string, StatusSection>;
}

/** Rows of the status page's client table, at most this many (the count is always exact). */
export const STATUS_CLIENT_ROWS = 200;

function param(req: HttpRequest, name: string): string | undefined {
  return new URLSearchParams(req.query).get(name) ?? undefined;
}

export function clientsHandler(broker: BrokerApi): HttpHandler {
  return (req) => {
    const id = param(req, 'clientId');
    const rows = broker.clients();
    return json(200, id === undefined ? rows : rows.filter((c) => c.clientId === id));
  };
}

export function subscriptionsHandler(broker: BrokerApi): HttpHandler {
  return (req) => {
    const id = param(req, 'clientId');
    const rows = broker.subscriptions();
    return json(200, id === undefined ? rows : rows.filter((s) => s.clientId === id));
  };
}

export function statusHandler(broker: BrokerApi, sources: StatusSources): HttpHandler {
  return () => {
    const stats = broker.stats;
    const clients = broker.clients().sort((a, b) => b.connectedAt - a.connectedAt);
    const sections: Record<string, unknown> = {};
    for (const [name, read] of sources.sections) {
      try {
        sections[name] = read();
      } catch (err) {
        sections[name] = { error: (err as Error).message };
      }
    }
    const rates = sources.rates;
    return json(200, {
      version: sources.version,
      now: Date.now(),
      startedAt: stats.startedAt,
      uptimeSeconds: Math.round((Date.now() - stats.startedAt) / 1000),
      listeners: sources.listeners(),
      clients: { count: clients.length, rows: clients.slice(0, STATUS_CLIENT_ROWS) },
      subscriptions: broker.subscriptions().length,
      retained: broker.retainedCount(),
      queued: broker.queuedMessages(),
      totals: {
        connections: stats.connectionsTotal,
        messagesReceived: stats.messagesReceived,
        messagesSent: stats.messagesSent,
        bytesReceived: stats.bytesReceived,
        bytesSent: stats.bytesSent,
      },
      dropped: stats.dropped,
      rates: { intervalMs: rates.intervalMs, current: rates.current(), history: rates.history() },
      sections,
    });
  };
}
