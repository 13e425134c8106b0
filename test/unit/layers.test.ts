/**
 * The shape of src/: no import circle (type-only imports count: they tie the files together
 * just the same), and no import from a lower layer up to a higher one.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return sources(full);
    return name.endsWith('.ts') ? [full] : [];
  });
}

/** file (relative to src/) -> the src/ files it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const text = readFileSync(file, 'utf8');
    const deps: string[] = [];
    for (const m of text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'/gm)) {
      deps.push(path.relative(SRC, path.resolve(path.dirname(file), m[1]!.replace(/\.js$/, '.ts'))));
    }
    graph.set(path.relative(SRC, file), deps);
  }
  return graph;
}

function findCycle(graph: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === 'done') return undefined;
    if (state.get(node) === 'open') return [...stack.slice(stack.indexOf(node)), node];
    state.set(node, 'open');
    stack.push(node);
    for (const dep of graph.get(node) ?? []) {
      const cycle = visit(dep);
      if (cycle) return cycle;
    }
    stack.pop();
    state.set(node, 'done');
    return undefined;
  };
  for (const node of graph.keys()) {
    const cycle = visit(node);
    if (cycle) return cycle;
  }
  return undefined;
}

describe('source layers', () => {
  const graph = importGraph();

  it('reads the imports (the check below has something to check)', () => {
    expect(graph.get('broker/broker.ts')).toContain('broker/client.ts');
    expect(graph.size).toBeGreaterThan(50);
  });

  it('has no import circle', () => {
    expect(findCycle(graph)).toBeUndefined();
  });

  it('finds a circle when there is one', () => {
    expect(findCycle(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']]]))).toEqual(['a', 'b', 'c', 'a']);
  });

  it('keeps the protocol, topic and session layers below the broker', () => {
    for (const [file, deps] of graph) {
      const folder = file.split('/')[0]!;
      if (!['mqtt', 'topics', 'session', 'transport'].includes(folder)) continue;
      for (const dep of deps) expect(`${file} -> ${dep}`).not.toMatch(/ -> (broker|auth|rules|state|http|persistence|cli)\//);
    }
  });

  it('gives packet handlers and connections the BrokerCore view, never the Broker class', () => {
    for (const [file, deps] of graph) {
      if (!file.startsWith('broker/handlers/') && !file.startsWith('transport/') && file !== 'broker/client.ts' && file !== 'broker/outbound.ts') continue;
      expect(deps, file).not.toContain('broker/broker.ts');
    }
  });
});
