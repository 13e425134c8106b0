/**
 * A long backlog of an offline persistent session with durable storage (the default): the
 * session keeps a window of its messages in memory and reads the rest from the message log as
 * its client acknowledges.
 *
 * The log is written through the storage API (as bench/storage.ts does for the 1M restart:
 * fast, and the same files the broker writes), then a real `edb start` process serves it to an
 * MQTT.js client reconnecting to its session:
 *  - 200,000 messages of 1 KiB (about 200 MiB of log): every one delivered once, in log order,
 *    while the broker's RSS stays far below the backlog's size (a generous sanity bound);
 *  - a drain killed with SIGKILL three times at moments chosen by how much it has received:
 *    after each restart the client gets everything it had not acknowledged (nothing lost), and
 *    the position it had acknowledged is kept (few repeats, not the whole backlog again).
 */
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DurableStorage } from '../../src/storage/durable.js';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A data folder holding `n` stored messages (`topic/<i % 100>`, payload starting with i) for the offline session `keeper`. */
async function fill(dataDir: string, n: number, payloadBytes: number): Promise<void> {
  const storage = new DurableStorage({ dir: join(dataDir, 'storage'), log: pino({ level: 'silent' }), batchSize: 4096, flushIntervalMs: 5, generationMs: 3_600_000, retentionMs: 0, maxBytes: 0 });
  const first = storage.tail;
  storage.setSession({ clientId: 'keeper', expiryInterval: 0xffffffff, subscriptions: [{ topic: 'fill/#', filter: 'fill/#', qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 }], incomingQos2: [] });
  storage.setIterator('keeper', { next: first, done: [], pubrel: [] });
  const payload = Buffer.alloc(payloadBytes, 0x2e);
  for (let i = 0; i < n; i++) {
    payload.writeUInt32BE(i, 0);
    storage.append({ topic: `fill/${i % 100}`, payload, qos: 1, retain: false, senderId: 'filler' });
    if (i % 50_000 === 49_999) await storage.flushed();
  }
  await storage.flushed();
  await storage.close();
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** The session `keeper` resumed (clean session off, 3.1.1): `onMessage` gets each message's number; MQTT.js acknowledges after it. */
function keeper(port: number, onMessage: (seq: number, topic: string) => void): MqttClient {
  const c = mqtt.connect({ port, host: '127.0.0.1', protocolVersion: 4, clientId: 'keeper', clean: false, reconnectPeriod: 0, connectTimeout: 10_000 });
  c.on('message', (topic, payload) => onMessage(payload.readUInt32BE(0), topic));
  c.on('error', () => undefined);
  return c;
}

const dirs: string[] = [];
let broker: BrokerProcess | undefined;
let client: MqttClient | undefined;

afterEach(async () => {
  client?.end(true);
  client = undefined;
  await broker?.stop('SIGKILL');
  broker = undefined;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('durable storage: a long backlog is read from the log, not held in memory', () => {
  it('200,000 queued messages (200 MiB) are delivered completely and in order after reconnect, with the RSS bounded', async () => {
    const N = 200_000;
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-backlog-'));
    dirs.push(dataDir);
    await fill(dataDir, N, 1024);
    broker = await startBrokerProcess({ EDB_DATA_DIR: dataDir, EDB_BACKUP: 'false' });
    const loaded = broker.logs.find((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('storage: loaded'));
    // only the window is read at start (EDB_STORAGE_SESSION_WINDOW, 1000 by default)
    expect(loaded?.['queued']).toBe(1000);
    const pid = broker.child.pid!;
    let maxRss = rssOf(pid);
    const got: number[] = [];
    let outOfOrder = 0;
    const perTopic = new Map<string, number>();
    client = keeper(broker.ports['mqtt']!, (seq, topic) => {
      if (got.length > 0 && seq !== got[got.length - 1]! + 1) outOfOrder++;
      const last = perTopic.get(topic);
      if (last !== undefined && seq <= last) outOfOrder++;
      perTopic.set(topic, seq);
      got.push(seq);
    });
    const deadline = Date.now() + 150_000;
    while (got.length < N && Date.now() < deadline) {
      await sleep(200);
      maxRss = Math.max(maxRss, rssOf(pid));
    }
    await sleep(500); // nothing more comes
    expect(got.length).toBe(N);
    expect(outOfOrder).toBe(0);
    expect(got[0]).toBe(0);
    expect(got[N - 1]).toBe(N - 1);
    // the backlog is 200 MiB of payload: held in memory (EDB_STORAGE_SESSION_WINDOW=1000000) the
    // broker reached 409 MiB here; read from the log, 117 MiB
    expect(maxRss).toBeLessThan(160 * 1024 * 1024);
    // no error on the way (an unreadable record, a failed read)
    expect(broker.logs.filter((l) => (l['level'] as number) >= 50)).toEqual([]);
  }, 240_000);

  it('SIGKILL in the middle of a drain, three times: nothing acknowledged is lost, and the acknowledged position is kept', async () => {
    const N = 120_000;
    const dataDir = mkdtempSync(join(tmpdir(), 'edb-backlog-kill-'));
    dirs.push(dataDir);
    await fill(dataDir, N, 256);
    const seen = new Uint8Array(N);
    let received = 0;
    let repeats = 0;
    for (let cycle = 0; cycle < 4; cycle++) {
      broker = await startBrokerProcess({ EDB_DATA_DIR: dataDir, EDB_BACKUP: 'false' });
      let thisCycle = 0;
      let cycleRepeats = 0;
      let highest = -1;
      let outOfOrder = 0;
      client = keeper(broker.ports['mqtt']!, (seq) => {
        // after a restart the log is replayed from the stored position: in order, maybe repeating a few
        if (seq <= highest) outOfOrder++;
        highest = seq;
        thisCycle++;
        if (seen[seq]) cycleRepeats++;
        else {
          seen[seq] = 1;
          received++;
        }
      });
      const last = cycle === 3;
      // kill after a share of the backlog chosen per cycle; the last cycle drains the rest
      const killAt = [17_000, 31_000, 23_000][cycle] ?? Infinity;
      const deadline = Date.now() + 60_000;
      while ((last ? received < N : thisCycle < killAt) && Date.now() < deadline) await sleep(20);
      expect(outOfOrder).toBe(0);
      repeats += cycleRepeats;
      if (!last) {
        await broker.stop('SIGKILL');
        broker = undefined;
        client.end(true);
        client = undefined;
        // a repeat is a message whose acknowledgement the broker had not stored yet (written
        // within 20 ms of the ack) or was in flight: a few hundred, never the backlog again
        expect(cycleRepeats).toBeLessThan(10_000);
      }
    }
    await sleep(500);
    const missing: number[] = [];
    for (let i = 0; i < N && missing.length < 10; i++) if (!seen[i]) missing.push(i);
    expect(missing).toEqual([]);
    expect(received).toBe(N);
    expect(repeats).toBeLessThan(30_000);
  }, 240_000);
});
