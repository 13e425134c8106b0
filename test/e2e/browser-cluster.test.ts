/**
 * The console's Cluster page in a real browser (Debian's chromium, playwright-core) against
 * two broker nodes joined through a real nats-server with JetStream: the page lists both
 * nodes from GET /api/cluster, with this node marked. Screenshot: docs/console/cluster.png (with EDB_UPDATE_SCREENSHOTS=1).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext } from 'playwright-core';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { startNats, type NatsCluster } from '../helpers/nats.js';
import { screenshotDir } from '../helpers/screenshots.js';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe.skipIf(!existsSync(CHROMIUM))('the console Cluster page in Chromium', () => {
  let nats: NatsCluster;
  const nodes: TestBroker[] = [];
  let context: BrowserContext;
  let dir: string;

  beforeAll(async () => {
    nats = await startNats(1);
    for (const name of ['edge-a', 'edge-b']) nodes.push(await startBroker({ clusterNats: nats.urls, nodeName: name, clusterName: 'console', clusterReplicas: 1, httpPort: 0 }));
    await until(() => nodes.every((n) => n.server.cluster!.status().nodes.length === 2), 20_000, 'two nodes');
    dir = mkdtempSync(join(tmpdir(), 'edb-browser-cluster-'));
    context = await chromium.launchPersistentContext(join(dir, 'profile'), { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 700 } });
  });

  afterAll(async () => {
    await context?.close();
    for (const n of nodes) await n.stop();
    await nats?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('lists the nodes of the cluster', async () => {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // no admin users: loopback is trusted as admin
    await page.goto(`http://127.0.0.1:${nodes[0]!.server.port('http')}/#/cluster`);
    await page.waitForSelector('#cluster-table table tr:nth-child(3)');
    const rows = await page.$$eval('#cluster-table tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td,th')].map((c) => c.textContent)));
    expect(rows[0]).toEqual(['node', 'running', 'clients', 'subscriptions', 'filters', 'NATS server', 'version', 'last seen']);
    expect(rows[1]![0]).toBe('edge-a (this node)');
    expect(rows[2]![0]).toBe('edge-b');
    expect(rows[2]![1]).toBe('yes');
    expect(await page.textContent('#cluster-summary')).toContain('cluster console, seen from node edge-a: connected to NATS server nats1');
    await page.screenshot({ path: join(screenshotDir(), 'cluster.png') });
    expect(errors).toEqual([]);
  });
});
