/**
 * A real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
 * the status page shows a newly connected client without reloading, and the MQTT console
 * page connects over MQTT/WebSocket with the MQTT.js bundle the broker serves, subscribes,
 * publishes and receives, also from and to a TCP client.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import mqtt from 'mqtt';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { loadUws } from '../../src/transport/uws.js';

/**
 * The page's `document`, as far as the callbacks below (which run in the browser) use it:
 * the project compiles without lib "dom", which would make browser globals valid in Node code.
 */
declare const document: {
  documentElement: { scrollWidth: number; clientWidth: number };
  getElementById(id: string): { textContent: string | null } | null;
};

const CHROMIUM = '/usr/bin/chromium';
// Without the background-networking flags Chromium's own connections get refused here.
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

describe.skipIf(!existsSync(CHROMIUM)).each(['uws', 'ws'] as const)('in Chromium, engine %s', (wsEngine) => {
  let server: EdbServer;
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  let base: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    server = await startEdb(testConfig({ host: '127.0.0.1', httpPort: 0, wsPort: 0, wsEngine }), silentLogger());
    base = `http://127.0.0.1:${server.port('http')}`;
    profile = mkdtempSync(join(tmpdir(), 'edb-chromium-'));
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
    page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
  });

  afterAll(async () => {
    await context?.close();
    await server?.stop();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it('the status page shows a newly connected client without reloading', async () => {
    await page.goto(`${base}/status`);
    await page.waitForSelector('#cards .card');
    // The listeners table names the engine each runs on (uws falls back to ws where the addon cannot load).
    const engine = server.listeners.find((l) => l.name === 'ws')!.engine;
    expect(engine).toBe(wsEngine === 'uws' && loadUws().ok ? 'uWebSockets.js' : 'ws');
    await expect.poll(() => page.locator('#listeners tr', { hasText: /^ws/ }).locator('td').nth(3).textContent()).toBe(engine);
    const clientId = `sensor-${wsEngine}-${process.pid}`;
    expect(await page.textContent('#clients')).not.toContain(clientId);

    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${server.port('mqtt')}`, { clientId, reconnectPeriod: 0 });
    try {
      await client.subscribeAsync('plant/+/temp');
      // The page refreshes itself; the row appears with the transport and subscription count.
      const row = page.locator('#clients tr', { hasText: clientId });
      await row.waitFor({ timeout: 10_000 });
      const cells = await row.locator('td').allTextContents();
      expect(cells[0]).toBe(clientId);
      expect(cells[1]).toBe('3.1.1');
      expect(cells[2]).toBe('tcp');
      expect(cells[5]).toBe('1');
    } finally {
      await client.endAsync();
    }
    // And it goes away again.
    await page.locator('#clients tr', { hasText: clientId }).waitFor({ state: 'detached', timeout: 10_000 });
    expect(pageErrors).toEqual([]);
  });

  it('renders a rate chart and a phone-sized layout without horizontal page scroll', async () => {
    await page.setViewportSize({ width: 375, height: 740 });
    await page.goto(`${base}/status`);
    await page.waitForSelector('#cards .card');
    expect(await page.locator('#chart').count()).toBe(1);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it('labels its figures in words with units, formats numbers, and its chart has a y-axis scale and a legend that matches it', async () => {
    const requests: string[] = [];
    page.on('request', (r) => requests.push(new URL(r.url()).pathname));
    // a document, so that the rules section has a compiled module of some thousands of bytes
    const doc = readFileSync('test/fixtures/house-filters.json', 'utf8');
    expect((await fetch(`${base}/rules`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: doc })).status).toBe(200);
    await page.goto(`${base}/status`);
    await page.locator('#sections th', { hasText: 'compiled module size' }).waitFor({ timeout: 10_000 });

    // rules and state store: labels in words (no field names such as compileMillis), values with units
    const labels = await page.locator('#sections th').allTextContents();
    expect(labels).toEqual(expect.arrayContaining(['filters', 'statements', 'logic entries', 'rules fired', 'messages evaluated', 'last compile time', 'compiled module size', 'usage']));
    for (const field of ['compileMillis', 'wasmBytes', 'fires', 'logic', 'summary']) expect(labels).not.toContain(field);
    const row = (label: string) => page.locator('#sections tr', { has: page.locator('th', { hasText: label }) }).locator('td').textContent();
    expect(await row('last compile time')).toMatch(/^\d{1,3}(,\d{3})* ms$/);
    expect(await row('compiled module size')).toMatch(/^\d{1,3}(,\d{3})+ bytes$/); // thousands separated
    expect(await page.locator('#sections h3').allTextContents()).toEqual(expect.arrayContaining(['rules', 'state store']));

    // the y-axis: five labels from the top of the scale down to 0
    const axis = await page.locator('#yaxis span').allTextContents();
    expect(axis).toHaveLength(5);
    expect(axis[4]).toBe('0');
    const values = axis.map((t) => Number(t.replace(/,/g, '')));
    for (let i = 1; i < values.length; i++) expect(values[i]!).toBeLessThan(values[i - 1]!);
    expect(await page.textContent('#chartmax')).toMatch(/^messages \/ s, peak /);

    // the legend draws each line as the chart does: "in" dashed, "out" solid, same colours
    for (const series of ['in', 'out']) {
      const legend = page.locator(`#legend-${series} line`);
      const line = page.locator(`#chart polyline[data-series="${series}"]`);
      expect(await legend.getAttribute('stroke-dasharray')).toBe(await line.getAttribute('stroke-dasharray'));
      expect(await legend.getAttribute('stroke')).toBe(await line.getAttribute('stroke'));
    }
    expect(await page.locator('#chart polyline[data-series="in"]').getAttribute('stroke-dasharray')).toBe('6 4');

    // no page asks for a favicon that does not exist
    await page.goto(`${base}/status/try`);
    await page.waitForSelector('#connect');
    expect(requests.filter((p) => p.includes('favicon'))).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 120_000);

  it('the console page connects over MQTT/WebSocket, subscribes, publishes and receives', async () => {
    await page.goto(`${base}/status/try`);
    // The page finds the WebSocket port from /api/status.
    await expect.poll(() => page.inputValue('#url')).toBe(`ws://127.0.0.1:${server.port('ws')}/mqtt`);
    await page.fill('#clientid', `browser-${wsEngine}`);
    await page.click('#connect button');
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'connected', undefined, { timeout: 10_000 });
    expect(server.broker.clients().find((c) => c.clientId === `browser-${wsEngine}`)?.transport).toBe('ws');

    await page.fill('#filter', 'browser/#');
    await page.click('#subscribe button');
    await page.waitForFunction(() => /subscribed to browser\/#/.test(document.getElementById('subscribed')?.textContent ?? ''));

    // A TCP client listens too: what the browser publishes reaches it, and the other way round.
    const tcp = await mqtt.connectAsync(`mqtt://127.0.0.1:${server.port('mqtt')}`, { clientId: `tcp-peer-${wsEngine}`, reconnectPeriod: 0 });
    try {
      await tcp.subscribeAsync('browser/#');
      const atTcp = new Promise<string>((resolve) => tcp.on('message', (t, p) => t === 'browser/echo' && resolve(p.toString())));
      await page.fill('#topic', 'browser/echo');
      await page.fill('#payload', 'from chromium');
      await page.click('#publish button');
      await page.locator('#log li', { hasText: 'browser/echo from chromium' }).waitFor({ timeout: 10_000 });
      expect(await atTcp).toBe('from chromium');

      await tcp.publishAsync('browser/tcp', 'from node over tcp', { qos: 1 });
      await page.locator('#log li', { hasText: 'browser/tcp from node over tcp' }).waitFor({ timeout: 10_000 });
    } finally {
      await tcp.endAsync();
    }
    expect(pageErrors).toEqual([]);
  });
});
