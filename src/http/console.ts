/**
 * Serves the console's bundle (build/console: index.html, app.js, app.css, made by
 * scripts/build-console.mjs at `npm run build`) at / and /console/*. The files are read
 * once and kept, with gzip copies; nothing is fetched from elsewhere.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { json, type HttpHandler, type HttpRouter } from './server.js';

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

/** build/console beside src/ (tests) or dist/src/ (the package). */
function consoleDir(): string | undefined {
  for (const rel of ['../../build/console', '../../../build/console']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(join(dir, 'index.html'))) return dir;
  }
  return undefined;
}

function fileHandler(name: string): HttpHandler {
  let plain: Buffer | undefined;
  let gzipped: Buffer | undefined;
  return (req) => {
    if (!plain) {
      const dir = consoleDir();
      if (!dir) return json(503, { error: 'console_not_built', message: 'the console is not built: run npm run build' });
      plain = readFileSync(join(dir, name));
      gzipped = gzipSync(plain, { level: 9 });
    }
    const headers: Record<string, string> = {
      'content-type': FILES[name]!,
      'cache-control': 'no-cache',
      vary: 'accept-encoding',
      'x-content-type-options': 'nosniff',
      // the console loads only its own files and talks only to this origin
      'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
      'x-frame-options': 'DENY',
    };
    if (/\bgzip\b/.test(req.headers['accept-encoding'] ?? '')) return { status: 200, headers: { ...headers, 'content-encoding': 'gzip' }, body: gzipped! };
    return { status: 200, headers, body: plain };
  };
}

export function mountConsole(router: HttpRouter): void {
  const index = fileHandler('index.html');
  router.get('/', index).get('/console', index).get('/console/', index).get('/console/app.js', fileHandler('app.js')).get('/console/app.css', fileHandler('app.css'));
}
