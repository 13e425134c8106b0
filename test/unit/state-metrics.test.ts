// The state store's Prometheus metrics, read from a real prom-client registry.
import { describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { registerStateStoreMetrics } from '../../src/state/metrics.js';
import { Harness } from './state-harness.js';

describe('state store metrics', () => {
  it('exposes keys, bytes, ops by command and errors by message', async () => {
    const h = new Harness();
    const registry = new Registry();
    registerStateStoreMetrics(registry, h.service);
    h.request(['SET', 'a', '12345']);
    h.request(['SET', 'b', '1']);
    h.request(['GET', 'a']);
    h.request(['BOGUS']);
    h.request(['KEYNOTIFY', 'a']);
    let text = await registry.metrics();
    expect(text).toContain('edb_state_keys 2');
    expect(text).toContain('edb_state_bytes 8');
    expect(text).toContain('edb_state_ops_total{command="SET"} 2');
    expect(text).toContain('edb_state_ops_total{command="GET"} 1');
    expect(text).toContain('edb_state_errors_total{error="unknown command"} 1');
    expect(text).toContain('edb_state_keynotify_registrations 1');
    expect(text).toMatch(/edb_state_memory_bytes \d+/);
    h.request(['SET', 'a', 'x']);
    text = await registry.metrics();
    expect(text).toContain('edb_state_ops_total{command="SET"} 3');
    expect(text).toContain('edb_state_notifications_total 1');
  });
});
