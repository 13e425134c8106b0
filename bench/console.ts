/**
 * The console with 10,000 topics (issue 14, section 4):
 *  - broker CPU at 10,000 msg/s with the topic explorer closed vs open in a real Chromium
 *    (alternating phases; CPU from /proc/<pid>/stat of the broker process);
 *  - time to first render of the explorer (navigation to the first tree row, and to an opened
 *    branch of 100 topics) and the page's JS heap (CDP Performance.getMetrics).
 *
 *   npm run build && node dist/bench/console.js [--seconds 8] [--runs 2]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
const opt = (name: string, def: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const SECONDS = opt('seconds', 8);
const RUNS = opt('runs', 2);
const TOPICS = 10_000;
const RATE = 10_000;
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const topic = (i: number): string => `site/a${i % 10}/b${Math.floor(i / 10) % 10}/t${i}`;

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime (fields 14, 15)
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'edb-bench-console-'));
  const broker = spawn(process.execPath, [CLI, 'start'], {
    env: { ...process.env, EDB_MQTT_PORT: '0', EDB_HTTP_PORT: '0', EDB_WS_PORT: '-1', EDB_RULES_PORT: '-1', EDB_DATA_DIR: dir, EDB_LOG_FORMAT: 'json', EDB_LOG_LEVEL: 'info', EDB_SYS_INTERVAL: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ports: Record<string, number> = {};
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    broker.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) {
        const m = /"listener":"(\w+)".*"port":(\d+)/.exec(line);
        if (m) ports[m[1]!] = Number(m[2]);
      }
      if (ports['mqtt'] && ports['http']) resolve();
    });
    broker.once('exit', () => reject(new Error('broker exited')));
  });
  const base = `http://127.0.0.1:${ports['http']}`;
  const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${ports['mqtt']}`, { clientId: 'bench-console-pub' });
  // every topic once, then a steady RATE over all of them
  for (let i = 0; i < TOPICS; i++) pub.publish(topic(i), `{"v":${i}}`, { qos: 0 });
  let next = 0;
  let sent = 0;
  const started = Date.now();
  const timer = setInterval(() => {
    // paced on the clock, not on the timer's ticks (which drift under load)
    const due = Math.floor(((Date.now() - started) / 1000) * RATE) - sent;
    for (let k = 0; k < due; k++) {
      pub.publish(topic(next), `{"v":${next},"t":${Date.now()}}`, { qos: 0 });
      next = (next + 1) % TOPICS;
      sent++;
    }
  }, 10);
  await sleep(3000);

  const pid = broker.pid!;
  const measure = async (): Promise<{ cpu: number; rate: number }> => {
    const t0 = Date.now();
    const c0 = cpuTicks(pid);
    const s0 = sent;
    await sleep(SECONDS * 1000);
    const dt = (Date.now() - t0) / 1000;
    return { cpu: ((cpuTicks(pid) - c0) / 100 / dt) * 100, rate: (sent - s0) / dt };
  };

  const profile = mkdtempSync(join(tmpdir(), 'edb-bench-chromium-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', headless: true, args: ARGS, viewport: { width: 1280, height: 800 } });
  const closed: number[] = [];
  const open: number[] = [];
  const rates: number[] = [];
  const renders: { firstRow: number; branch: number; heapMB: number }[] = [];
  for (let run = 0; run < RUNS; run++) {
    const c = await measure();
    closed.push(c.cpu);
    rates.push(c.rate);
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Performance.enable');
    const t0 = Date.now();
    await page.goto(`${base}/#/topics`);
    await page.waitForSelector('button[aria-label="open site"]');
    const firstRow = Date.now() - t0;
    await page.click('button[aria-label="open site"]');
    await page.click('button[aria-label="open site/a3"]');
    await page.click('button[aria-label="open site/a3/b4"]');
    await page.waitForSelector('[data-topic="site/a3/b4/t43"]');
    const branch = Date.now() - t0;
    await page.click('[data-topic="site/a3/b4/t43"]');
    const o = await measure();
    open.push(o.cpu);
    rates.push(o.rate);
    const metrics = (await cdp.send('Performance.getMetrics')) as { metrics: { name: string; value: number }[] };
    const heap = metrics.metrics.find((m) => m.name === 'JSHeapUsedSize')?.value ?? 0;
    renders.push({ firstRow, branch, heapMB: heap / 1048576 });
    await page.close();
    await sleep(2000); // let the sampler notice nobody looks (it stops 30 s after the last call; CPU of that tail counts as closed)
  }
  clearInterval(timer);
  const topicsSeen = ((await (await fetch(`${base}/api/topics`)).json()) as { totalTopics: number }).totalTopics;
  await context.close();
  await pub.endAsync();
  broker.kill('SIGTERM');
  await new Promise((r) => broker.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
  rmSync(profile, { recursive: true, force: true });

  const out = {
    topics: topicsSeen,
    offeredRate: Math.round(median(rates)),
    cpuClosedPercent: closed.map((x) => Math.round(x * 10) / 10),
    cpuOpenPercent: open.map((x) => Math.round(x * 10) / 10),
    medianClosed: Math.round(median(closed) * 10) / 10,
    medianOpen: Math.round(median(open) * 10) / 10,
    openVsClosed: Math.round((median(open) / median(closed)) * 1000) / 1000,
    firstRowMs: renders.map((r) => r.firstRow),
    branchOpenMs: renders.map((r) => r.branch),
    pageHeapMB: renders.map((r) => Math.round(r.heapMB * 10) / 10),
  };
  console.log(JSON.stringify(out, null, 2));
}

await main();
