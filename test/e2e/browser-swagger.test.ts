/**
 * The rules API's Swagger UI (GET /docs on the rules port, served from swagger-ui-dist) in a
 * real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core): POST /test is
 * listed, and "Try it out" with a request body runs a trial on the real broker and shows what
 * the document would publish.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const TRIAL = {
  document: { filters: [{ topic: 'plant/+/temp', subtopic: 'alert', statements: [{ condition: "$c > state('limits/{2}')", new_payload: 'hot {{ $c }}' }] }] },
  messages: [
    { topic: 'plant/3/temp', payload: { c: 29 }, t: 0 },
    { topic: 'plant/3/temp', payload: { c: 31 }, t: 1000 },
  ],
  state: { 'limits/3': 30 },
};

describe.skipIf(!existsSync(CHROMIUM))('the rules API in Swagger UI (Chromium)', () => {
  let dir: string;
  let server: EdbServer;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edb-swagger-'));
    server = await startEdb(testConfig({ host: '127.0.0.1', rulesPort: 0, httpPort: -1, dataDir: dir }), silentLogger());
    context = await chromium.launchPersistentContext(join(dir, 'profile'), { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('lists POST /test, and "Try it out" runs a trial and shows its outputs', async () => {
    await page.goto(`http://127.0.0.1:${server.port('rules')}/docs`);
    const op = page.locator('#operations-default-post_test, .opblock-post:has([data-path="/test"])').first();
    await op.waitFor({ timeout: 30_000 });
    await op.locator('.opblock-summary').first().click();
    await op.locator('button.try-out__btn').click();
    await op.locator('textarea.body-param__text').fill(JSON.stringify(TRIAL));
    await op.locator('button.execute').click();
    const body = op.locator('.live-responses-table .response-col_description pre, .live-responses-table .microlight').first();
    await body.waitFor({ timeout: 30_000 });
    const text = (await body.textContent()) ?? '';
    // the first message is under the limit, the second over it
    expect(JSON.parse(text)).toEqual({ outputs: [{ after: 1, topic: 'plant/3/temp/alert', payload: 'hot 31' }] });
    expect(await op.locator('.live-responses-table tbody td.response-col_status').first().textContent()).toContain('200');
    expect(pageErrors).toEqual([]);
  }, 90_000);
});
