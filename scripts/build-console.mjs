#!/usr/bin/env node
// Bundles the console (web/console) into build/console with esbuild: app.js, app.css, index.html.
// Part of `npm run build`; the broker serves the result at / on the HTTP port.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'web', 'console');
const out = join(root, 'build', 'console');
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(src, 'main.ts')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2020',
  outfile: join(out, 'app.js'),
  legalComments: 'none',
  logLevel: 'warning',
});
await build({ entryPoints: [join(src, 'style.css')], bundle: true, minify: true, outfile: join(out, 'app.css'), logLevel: 'warning' });
copyFileSync(join(src, 'index.html'), join(out, 'index.html'));
