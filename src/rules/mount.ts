/**
 * Wiring of the rules service into the main HTTP service: the API under /rules, the
 * Prometheus series, and a status-page section. Typed structurally so the rules layer does
 * not depend on the HTTP layer's implementation.
 */
import type { Registry } from 'prom-client';
import { createRulesHttpHandler } from './http.js';
import { registerRulesMetrics } from './metrics.js';
import type { RulesService } from './service.js';

interface MainHttpRequest {
  method: string;
  path: string;
  query: string;
  headers: Record<string, string>;
  body: Buffer;
}
interface MainHttpResponse {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}
export interface MainHttp {
  readonly router: { mount(prefix: string, handler: (req: MainHttpRequest) => Promise<MainHttpResponse>): unknown };
  readonly registry: Registry;
  addStatusSection(name: string, read: () => Record<string, unknown>): void;
}

export const RULES_MOUNT = '/rules';

export function mountRules(http: MainHttp, service: RulesService): void {
  const handle = createRulesHttpHandler(service, { basePath: RULES_MOUNT });
  http.router.mount(RULES_MOUNT, (req) =>
    handle({
      method: req.method,
      path: (req.path.slice(RULES_MOUNT.length) || '/') + (req.query ? `?${req.query}` : ''),
      headers: req.headers,
      body: req.body,
    }),
  );
  registerRulesMetrics(http.registry, service);
  http.addStatusSection('rules', () => {
    const m = service.metrics();
    return {
      etag: service.current().etag,
      filters: m.filters,
      statements: m.filterStatements + m.ruleStatements,
      logicEntries: m.logicEntries,
      messages: m.messages,
      topicMatches: m.topicMatches,
      evaluations: m.evaluations,
      fires: m.fires,
      conditionErrors: { missingVariable: m.missingVariable, kindMismatch: m.kindMismatch, notJson: m.notJson },
      compileMillis: Math.round(m.lastCompileMillis),
      wasmBytes: m.wasmBytes,
    };
  });
}
