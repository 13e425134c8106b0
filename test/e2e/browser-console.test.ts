/**
 * The console (web/console, served at / on the HTTP port) in a real headless Chromium
 * (Debian's /usr/bin/chromium, driven by playwright-core), against a real broker with admin
 * users, real MQTT.js clients over TCP and the real state-store client. Takes the
 * screenshots of docs/console.md on the way (written to docs/console/*.png with
 * EDB_UPDATE_SCREENSHOTS=1, else to a temp folder).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { runPasswd } from '../../src/cli/passwd.js';
import { StateStoreClient } from '../../src/state/client.js';
import { collect, connectClient, closeAll } from '../helpers/mqttjs.js';
import { screenshotDir } from '../helpers/screenshots.js';


const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SHOTS = screenshotDir();
const PASSWORDS = { ada: 'ada console pw!', vera: 'vera console pw!' } as const;

const FIRE_RULE = {
  filters: [{ topic: 'house/#', subtopic: 'alert/', statements: [{ condition: '$inside.temperature >= 45 and $inside.humidity <= 15', new_payload: 'fire_danger' }] }],
  rules: [],
};

describe.skipIf(!existsSync(CHROMIUM))('the console in Chromium', () => {
  let dir: string;
  let server: EdbServer;
  let base: string;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];

  async function shot(name: string, p: Page = page): Promise<void> {
    await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
  }

  async function login(p: Page, user: keyof typeof PASSWORDS): Promise<void> {
    await p.goto(`${base}/`);
    await p.waitForSelector('#login-form');
    await p.fill('#login-user', user);
    await p.fill('#login-password', PASSWORDS[user]);
    await p.click('#login-submit');
    await p.waitForSelector('#who');
  }

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    dir = mkdtempSync(join(tmpdir(), 'edb-console-'));
    const users = join(dir, 'admin-users');
    const io = { stdin: process.stdin, stderr: process.stderr };
    await runPasswd(users, 'ada', { role: 'admin', password: PASSWORDS.ada }, io);
    await runPasswd(users, 'vera', { role: 'viewer', password: PASSWORDS.vera }, io);
    server = await startEdb(testConfig({ host: '127.0.0.1', httpPort: 0, dataDir: dir, adminUsersFile: users, adminTrusted: 'none' }), silentLogger());
    base = `http://127.0.0.1:${server.port('http')}`;
    context = await chromium.launchPersistentContext(join(dir, 'profile'), { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('asks for a login, and logs in', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('#login-form');
    await page.fill('#login-user', 'ada');
    await page.fill('#login-password', 'wrong password');
    await page.click('#login-submit');
    await page.waitForFunction(() => ((globalThis as any).document.getElementById('login-error')?.textContent ?? '') !== '');
    expect(await page.textContent('#login-error')).toMatch(/bad user name or password/);
    await page.fill('#login-password', PASSWORDS.ada);
    await shot('login');
    await page.click('#login-submit');
    await page.waitForSelector('#who');
    expect(await page.textContent('#who')).toContain('ada (admin)');
    // the session cookie is not readable from the page
    expect(await page.evaluate(() => (globalThis as any).document.cookie)).toBe('');
  });

  it('shows a message published by a TCP client in the topic tree, pretty-printed', async () => {
    const pub = await connectClient(server.port('mqtt'));
    try {
      await pub.publishAsync('plant/line1/temp', JSON.stringify({ celsius: 21.5, ok: true }), { qos: 1, retain: true });
      for (let i = 0; i < 5; i++) await pub.publishAsync(`plant/line2/sensor${i}`, Buffer.from([0, 1, 2, 0xff, i]), { qos: 1 });
    } finally {
      await closeAll(pub);
    }
    await page.goto(`${base}/#/topics`);
    await page.click('button[aria-label="open plant"]', { timeout: 10_000 });
    await page.click('button[aria-label="open plant/line1"]');
    await page.click('[data-topic="plant/line1/temp"]');
    await page.waitForSelector('#detail-payload');
    const payload = await page.textContent('#detail-payload');
    expect(payload).toContain('"celsius": 21.5');
    expect(await page.textContent('#topic-detail')).toContain('retained');
    await page.click('button[aria-label="open plant/line2"]');
    await page.click('[data-topic="plant/line2/sensor3"]');
    await page.waitForFunction(() => ((globalThis as any).document.getElementById('detail-topic')?.textContent ?? '') === 'plant/line2/sensor3');
    await page.waitForFunction(() => ((globalThis as any).document.getElementById('detail-payload')?.textContent ?? '').includes('00 01 02 ff 03'));
    await page.fill('#topic-search', 'plant/+/temp');
    await page.waitForSelector('#search-results [data-topic="plant/line1/temp"]');
    await shot('topics');
    // on a phone: one column, nothing wider than the screen
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${base}/#/topics`);
    await phone.waitForSelector('button[aria-label="open plant"]');
    const overflow = await phone.evaluate(() => {
      const d = (globalThis as any).document.documentElement;
      return d.scrollWidth - d.clientWidth;
    });
    expect(overflow).toBeLessThanOrEqual(0);
    await shot('topics-phone', phone);
    await phone.close();
  });

  it('shows a rule syntax error inline at the reported position', async () => {
    // the page's first GET /rules is held back 1.5 s: what is typed before it answers is kept,
    // and Activate waits for its ETag (a slow broker once overwrote the edits with the old document)
    let held = 0;
    await page.route('**/rules', async (route) => {
      if (route.request().method() === 'GET' && held++ === 0) await new Promise((r) => setTimeout(r, 1_500));
      await route.continue();
    });
    await page.goto(`${base}/#/rules`);
    await page.waitForSelector('#rules-editor');
    const bad = JSON.stringify({ filters: [{ topic: 'house/#', subtopic: 'alert/', statements: [{ condition: '$inside.temperature >= )', new_payload: 'x' }] }], rules: [] }, null, 2);
    await page.fill('#rules-editor', bad);
    await page.click('#rules-activate');
    expect(held).toBeGreaterThan(0);
    await page.waitForSelector('#rules-error-marker:not([hidden])', { timeout: 60_000 });
    const marker = await page.textContent('#rules-error-marker');
    // the condition is on line 8 of the pretty-printed document
    expect(marker).toMatch(/^line 8, column \d+: /);
    expect(await page.textContent('#rules-error')).toContain('filters/0/statements/0/condition');
    // the editor's selection is at the character the API reports, inside the condition
    const api = await fetch(`${base}/rules`, { method: 'POST', headers: { authorization: `Basic ${Buffer.from(`ada:${PASSWORDS.ada}`).toString('base64')}` }, body: bad });
    const { error } = (await api.json()) as { error: { position: number } };
    expect(error.position).toBeTypeOf('number');
    const selectionStart = await page.evaluate(() => (globalThis as any).document.getElementById('rules-editor').selectionStart as number);
    expect(selectionStart).toBe(bad.indexOf('"$inside.temperature >= )"') + 1 + error.position);
    await shot('rules-error');
  }, 120_000);

  it('dry-runs the edited document on pasted messages and shows its outputs', async () => {
    await page.goto(`${base}/#/rules`);
    await page.waitForFunction(() => ((globalThis as any).document.getElementById('rules-meta')?.textContent ?? '').startsWith('active'));
    await page.fill('#rules-editor', JSON.stringify(FIRE_RULE, null, 2));
    await page.click('details summary');
    await page.fill(
      '#rules-samples',
      JSON.stringify([
        { topic: 'house/7', payload: { inside: { temperature: 20, humidity: 40 } } },
        { topic: 'house/7', payload: { inside: { temperature: 50, humidity: 6 } } },
      ]),
    );
    await page.click('#rules-dry-run');
    await page.waitForSelector('#dry-run-outputs td.mono');
    const rows = await page.$$eval('#dry-run-outputs tr', (trs) => trs.slice(1).map((tr) => Array.from((tr as any).querySelectorAll('td'), (td: any) => td.textContent)));
    expect(rows).toEqual([['1', 'house/7/alert/', 'fire_danger']]);
    await shot('rules-dry-run');
    // nothing was activated: the active document is still the empty one
    expect(await page.textContent('#rules-meta')).not.toContain('uploaded by');
  }, 60_000);

  it('activates a document with If-Match: a subscriber receives its output; the diff shows the change', async () => {
    await page.goto(`${base}/#/rules`);
    await page.waitForFunction(() => ((globalThis as any).document.getElementById('rules-meta')?.textContent ?? '').startsWith('active'));
    await page.fill('#rules-editor', JSON.stringify(FIRE_RULE, null, 2));
    await page.click('#rules-diff-button');
    await page.waitForSelector('#rules-diff div.add');
    await page.click('#rules-activate');
    await page.waitForSelector('#rules-ok', { timeout: 120_000 });
    await page.waitForFunction(() => ((globalThis as any).document.getElementById('rules-meta')?.textContent ?? '').includes('uploaded by ada'));
    await shot('rules');
    const sub = await connectClient(server.port('mqtt'));
    const pub = await connectClient(server.port('mqtt'));
    try {
      const got = collect(sub);
      await sub.subscribeAsync('house/+/alert/');
      await pub.publishAsync('house/1', JSON.stringify({ inside: { temperature: 50, humidity: 6 } }), { qos: 1 });
      const [m] = await got.wait(1, 10_000);
      expect(m!.topic).toBe('house/1/alert/');
      expect(m!.payload.toString()).toBe('fire_danger');
    } finally {
      await closeAll(sub, pub);
    }
    // the live counts move, in total and for the filter
    await page.waitForFunction(() => Number((globalThis as any).document.querySelector('#rules-counts [data-count="fires"] b')?.textContent ?? '0') >= 1, undefined, { timeout: 10_000 });
    await page.waitForFunction(() => Number((globalThis as any).document.querySelector('#rules-parts [data-part="filters/0"] td.fires')?.textContent ?? '0') >= 1, undefined, { timeout: 10_000 });
    // and the time it spent (the first message is always timed)
    expect(await page.textContent('#rules-parts [data-part="filters/0"] td.time')).toMatch(/^[0-9.]+ µs$/);
  }, 180_000); // the first document compiles with asc: seconds on a loaded machine

  it('sets a state key that an MQTT client then reads, and watches it change', async () => {
    await page.goto(`${base}/#/state`);
    await page.waitForSelector('#state-set-form');
    await page.fill('#state-set-key', 'line1/setpoint');
    await page.fill('#state-set-value', '{"celsius": 42}');
    await page.click('#state-set-form button[type="submit"]');
    await page.waitForSelector('#state-set-ok');
    const mqttClient = await connectClient(server.port('mqtt'), { protocolVersion: 5, clientId: 'console-test-reader' });
    try {
      const state = await StateStoreClient.create(mqttClient);
      const read = await state.get('line1/setpoint');
      expect(read.value?.toString()).toBe('{"celsius": 42}');
      // watch in the console; a write over MQTT shows there, pushed by the broker (no reload,
      // no polling: the page asks for the key once, over the event stream)
      await page.waitForSelector('[data-key="line1/setpoint"]');
      const asked: string[] = [];
      const onRequest = (r: { url(): string }): void => void asked.push(new URL(r.url()).pathname);
      page.on('request', onRequest);
      await page.click('#state-watch');
      await page.waitForSelector('#state-watching');
      await state.set('line1/setpoint', '{"celsius": 43}');
      await page.waitForFunction(() => ((globalThis as any).document.getElementById('state-value')?.textContent ?? '').includes('43'), undefined, { timeout: 10_000 });
      await state.set('line1/setpoint', '{"celsius": 44}');
      await page.waitForFunction(() => ((globalThis as any).document.getElementById('state-value')?.textContent ?? '').includes('44'), undefined, { timeout: 10_000 });
      page.off('request', onRequest);
      expect(asked).toEqual(['/api/state/watch']);
      await shot('state');
    } finally {
      await closeAll(mqttClient);
    }
  });

  it('lists clients with a disconnect action for admins; bridges can be added, edited and removed; cluster says not configured', async () => {
    const c = await connectClient(server.port('mqtt'), { clientId: 'press-7' });
    try {
      await page.goto(`${base}/#/clients`);
      await page.waitForSelector('#clients-table td:text("press-7")');
      expect(await page.locator('#clients-table button:text("Disconnect")').count()).toBeGreaterThan(0);
      await shot('clients');
      await page.goto(`${base}/#/bridges`);
      await page.waitForSelector('#no-bridges');
      await page.fill('#bridge-name', 'site-a');
      await page.fill('#bridge-url', 'mqtt://127.0.0.1:1');
      await page.fill('#bridge-topics', 'sensors/# out 1 "" site-a/\ncmd/# in 1');
      await page.click('#bridge-submit');
      await page.waitForSelector('#bridges-table td:text("site-a")');
      expect(server.bridges.get('site-a')!.config.topics.map((t) => t.line)).toEqual(['sensors/# out 1 "" site-a/', 'cmd/# in 1']);
      await shot('bridges');
      // edit: the backlog stays, the settings the form does not show are kept
      await page.click('#bridges-table button:text("Edit")');
      await page.fill('#bridge-topics', 'sensors/# out 1 "" site-a/');
      await page.click('#bridge-submit');
      await page.waitForSelector('#bridge-note span.ok:text("saved site-a")'); // the add's note stays until the save answers
      expect(server.bridges.get('site-a')!.config.topics.map((t) => t.line)).toEqual(['sensors/# out 1 "" site-a/']);
      page.once('dialog', (d) => void d.accept());
      await page.click('#bridges-table button:text("Remove")');
      await page.waitForSelector('#no-bridges');
      expect(server.bridges.get('site-a')).toBeUndefined();
      await page.goto(`${base}/#/cluster`);
      expect(await page.textContent('#not-configured')).toContain('Not configured');
    } finally {
      await closeAll(c);
    }
  });

  it('gives a viewer no edit controls, and the API answers a viewer 403', async () => {
    const viewerContext = await chromium.launchPersistentContext(join(dir, 'profile-viewer'), { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 800 } });
    try {
      const v = await viewerContext.newPage();
      await login(v, 'vera');
      expect(await v.textContent('#who')).toContain('vera (viewer)');
      await v.waitForSelector('#topic-tree');
      expect(await v.locator('#publish-form').count()).toBe(0);
      await v.goto(`${base}/#/rules`);
      await v.waitForSelector('#rules-editor');
      expect(await v.locator('#rules-activate').count()).toBe(0);
      expect(await v.locator('#rules-dry-run').count()).toBe(0);
      expect(await v.getAttribute('#rules-editor', 'readonly')).not.toBeNull();
      await v.goto(`${base}/#/state`);
      await v.waitForSelector('[data-key="line1/setpoint"]');
      expect(await v.locator('#state-set-form').count()).toBe(0);
      await v.goto(`${base}/#/bridges`);
      await v.waitForSelector('#bridges-table table');
      expect(await v.locator('#bridge-form').count()).toBe(0);
      await v.goto(`${base}/#/clients`);
      await v.waitForSelector('#clients-table table');
      expect(await v.locator('#clients-table button').count()).toBe(0);
      // the same calls the admin's controls make, from the viewer's page with its session
      const statuses = await v.evaluate(async () => {
        const s = (await (await fetch('/api/session')).json()) as { csrf: string };
        const h = { 'content-type': 'application/json', 'x-edb-csrf': s.csrf };
        const put = await fetch('/api/state/key?key=line1/setpoint', { method: 'PUT', headers: h, body: JSON.stringify({ value: 'x' }) });
        const rules = await fetch('/rules', { method: 'POST', headers: h, body: '{"filters":[],"rules":[]}' });
        const publish = await fetch('/api/publish', { method: 'POST', headers: h, body: JSON.stringify({ topic: 'a', payload: 'b' }) });
        const bridge = await fetch('/api/bridges', { method: 'POST', headers: h, body: JSON.stringify({ name: 'x', url: 'mqtt://127.0.0.1:1' }) });
        return [put.status, rules.status, publish.status, bridge.status];
      });
      expect(statuses).toEqual([403, 403, 403, 403]);
    } finally {
      await viewerContext.close();
    }
    expect(pageErrors).toEqual([]);
  }, 60_000);
});
