import { readFileSync } from 'node:fs';

/** The package version, from the package.json above this module (src/ or dist/src/). */
function packageVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version: string };
      if (pkg.name === 'edge-data-broker') return pkg.version;
    } catch {
      /* try the next */
    }
  }
  return '0.0.0';
}

/** The package version. A module of its own, so the CLI can print it without loading the broker. */
export const VERSION: string = packageVersion();
