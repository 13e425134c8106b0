// The state-store protocol through the real broker (startEdb, real TCP on port 0) and real
// MQTT 5 clients (MQTT.js) using user properties, response topic and correlation data.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient, type IPublishPacket } from 'mqtt';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { encodeRequest } from '../../src/state/resp.js';
import { ERRORS, INVOKE_TOPIC, notifyTopic, RESERVED_PREFIX } from '../../src/state/protocol.js';
import { StateStoreClient, StateStoreError } from '../../src/state/client.js';
import { LeaseLock } from '../../src/state/lease-lock.js';
import { parseHlc, formatHlc } from '../../src/state/hlc.js';

let server: EdbServer;
let port: number;
const clients: MqttClient[] = [];

beforeAll(async () => {
  server = await startEdb(
    testConfig({
      stateSweepIntervalMs: 50,
      sections: {
        stateStore: {
          authorization: {
            rules: [
              { clientId: 'restricted', access: 'read', keys: ['public'] },
              { clientId: 'restricted', access: 'readwrite', patterns: ['own/{clientId}/*'] },
              // everyone else: ids not starting with "r", and "raw-*", "racer-*"
              { clientId: '[!r]*', access: 'readwrite', patterns: ['*'] },
              { clientId: 'ra*', access: 'readwrite', patterns: ['*'] },
            ],
          },
        },
      },
    }),
    silentLogger(),
  );
  port = server.port('mqtt');
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
  await server.stop();
});

async function connect(clientId: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync({ port, protocolVersion: 5, clientId, reconnectPeriod: 0 });
  clients.push(c);
  return c;
}

/** A raw requester: publishes RESP payloads with the protocol's properties, collects answers. */
async function rawRequester(clientId: string) {
  const c = await connect(clientId);
  const responseTopic = `clients/${clientId}/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response`;
  await c.subscribeAsync(responseTopic, { qos: 1 });
  const waiting = new Map<string, (p: IPublishPacket) => void>();
  c.on('message', (_t, _p, packet) => {
    const id = packet.properties?.correlationData?.toString('hex');
    if (id) waiting.get(id)?.(packet);
  });
  let n = 0;
  return {
    client: c,
    async send(payload: Buffer | (string | Buffer)[], userProperties: Record<string, string> = { __ts: `${Date.now()}:0:${clientId}` }): Promise<IPublishPacket> {
      const correlationData = Buffer.from(`corr-${clientId}-${n++}`);
      const answered = new Promise<IPublishPacket>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no answer')), 5000);
        waiting.set(correlationData.toString('hex'), (p) => {
          clearTimeout(t);
          resolve(p);
        });
      });
      // the caller gets this rejection when it awaits `answered`; if the publish fails first, the time-out must not go unhandled 5 s later
      answered.catch(() => undefined);
      await c.publishAsync(INVOKE_TOPIC, Array.isArray(payload) ? encodeRequest(payload) : payload, {
        qos: 1,
        properties: { responseTopic, correlationData, userProperties: { __srcId: clientId, __protVer: '1.0', ...userProperties } },
      });
      return answered;
    },
  };
}

const text = (p: IPublishPacket) => Buffer.from(p.payload as Buffer).toString('latin1');

describe('state store over MQTT 5', () => {
  it('answers every command byte for byte, with __stat, __ts and the correlation data', async () => {
    const r = await rawRequester('raw-1');
    const set = await r.send(['SET', 'e2e:k', 'v1']);
    expect(text(set)).toBe('+OK\r\n');
    expect(set.qos).toBe(1);
    expect(set.properties?.contentType).toBe('application/octet-stream');
    expect(set.properties?.userProperties?.['__stat']).toBe('200');
    const version = set.properties?.userProperties?.['__ts'] as string;
    expect(parseHlc(version)).toBeDefined();

    const get = await r.send(['GET', 'e2e:k']);
    expect(text(get)).toBe('$2\r\nv1\r\n');
    expect(get.properties?.userProperties?.['__ts']).toBe(version);
    expect(text(await r.send(['GET', 'e2e:missing']))).toBe('$-1\r\n');
    expect(text(await r.send(['SET', 'e2e:k', 'v2', 'NX']))).toBe(':-1\r\n');
    expect(text(await r.send(['SET', 'e2e:k', 'v2', 'NEX']))).toBe(':-1\r\n');
    expect(text(await r.send(['SET', 'e2e:k', 'v1', 'NEX', 'PX', '60000']))).toBe('+OK\r\n');
    expect(text(await r.send(['VDEL', 'e2e:k', 'other']))).toBe(':-1\r\n');
    expect(text(await r.send(['VDEL', 'e2e:k', 'v1']))).toBe(':1\r\n');
    expect(text(await r.send(['DEL', 'e2e:k']))).toBe(':0\r\n');
    expect(text(await r.send(['SET', 'e2e:k', 'v3']))).toBe('+OK\r\n');
    expect(text(await r.send(['DEL', 'e2e:k']))).toBe(':1\r\n');
    expect(text(await r.send(['KEYNOTIFY', 'e2e:k', 'STOP']))).toBe(':0\r\n');
    expect(text(await r.send(['KEYNOTIFY', 'e2e:k']))).toBe('+OK\r\n');
    expect(text(await r.send(['KEYNOTIFY', 'e2e:k', 'STOP']))).toBe('+OK\r\n');
    const bin = Buffer.from([0, 0xff, 13, 10]);
    expect(text(await r.send(['SET', bin, bin]))).toBe('+OK\r\n');
    expect(Buffer.from((await r.send(['GET', bin])).payload as Buffer)).toEqual(Buffer.concat([Buffer.from('$4\r\n'), bin, Buffer.from('\r\n')]));
  });

  it('answers every error with its exact text, and malformed RESP never costs the connection', async () => {
    const r = await rawRequester('raw-2');
    const err = (m: string) => `-ERR ${m}\r\n`;
    const now = Date.now();
    const cases: [Buffer | (string | Buffer)[], Record<string, string> | undefined, string][] = [
      [Buffer.from('GET k\r\n'), undefined, ERRORS.syntax],
      [Buffer.from('*2\r\n$3\r\nGET\r\n$9\r\nk\r\n'), undefined, ERRORS.syntax],
      [Buffer.from([0xff, 0x00, 0x2a]), undefined, ERRORS.syntax],
      [['SET', 'k', 'v', 'PX', 'soon'], undefined, ERRORS.syntax],
      [['SET', 'k', 'v', 'BOGUS'], undefined, ERRORS.syntax],
      [['HGETALL', 'k'], undefined, ERRORS.unknownCommand],
      [['GET'], undefined, ERRORS.arity],
      [['VDEL', 'k'], undefined, ERRORS.arity],
      [['SET', '', 'v'], undefined, ERRORS.emptyKey],
      [['SET', 'k', 'v'], {}, ERRORS.missingTimestamp],
      [['SET', 'k', 'v'], { __ts: 'not-a-clock' }, ERRORS.malformedTimestamp],
      [['SET', 'k', 'v'], { __ts: `${now + 120_000}:0:x` }, ERRORS.timestampFuture],
      [['SET', 'k', 'v'], { __ts: `${now}:0:x`, __ft: `${now + 120_000}:0:x` }, ERRORS.fencingFuture],
    ];
    for (const [payload, props, message] of cases) {
      const answer = await r.send(payload, props);
      expect(text(answer), message).toBe(err(message));
      expect(answer.properties?.userProperties?.['__stat']).toBe('200');
    }
    expect(r.client.connected).toBe(true);
    expect(text(await r.send(['SET', 'e2e:alive', 'yes']))).toBe('+OK\r\n');
  });

  it('enforces fencing tokens over the wire', async () => {
    const r = await rawRequester('raw-3');
    const now = Date.now();
    const t1 = `${now}:0:holder`;
    expect(text(await r.send(['SET', 'e2e:res', 'a'], { __ts: t1, __ft: t1 }))).toBe('+OK\r\n');
    expect(text(await r.send(['SET', 'e2e:res', 'b'], { __ts: t1 }))).toBe(`-ERR ${ERRORS.fencingRequired}\r\n`);
    expect(text(await r.send(['DEL', 'e2e:res'], { __ts: t1, __ft: `${now - 1}:0:holder` }))).toBe(`-ERR ${ERRORS.fencingStale}\r\n`);
    expect(text(await r.send(['DEL', 'e2e:res'], { __ts: t1, __ft: t1 }))).toBe(':1\r\n');
  });

  it('two clients race for a lease lock: exactly one wins, and a stale fencing token is refused', async () => {
    const a = await StateStoreClient.create(await connect('racer-a'));
    const b = await StateStoreClient.create(await connect('racer-b'));
    const lockA = new LeaseLock(a, 'e2e:lock', 'racer-a');
    const lockB = new LeaseLock(b, 'e2e:lock', 'racer-b');
    const [ta, tb] = await Promise.all([lockA.acquire(400), lockB.acquire(400)]);
    expect([ta, tb].filter(Boolean)).toHaveLength(1);
    const [winner, winnerLock, winnerToken, loser, loserLock] = ta ? [a, lockA, ta, b, lockB] as const : [b, lockB, tb!, a, lockA] as const;
    expect((await winnerLock.holderOf())?.toString()).toBe(winner.clientId);
    expect(await winnerLock.renew(400)).toBeDefined();
    await winner.set('e2e:guarded', 'by-winner', { fencingToken: winnerToken });

    // the loser waits; the winner's lease runs out (no renew); the loser gets the lock on expiry
    const loserToken = await loserLock.waitAndAcquire(5000, { retryMs: 10_000 });
    expect(formatHlc(loserToken) > formatHlc(winnerToken)).toBe(true);
    await loser.set('e2e:guarded', 'by-loser', { fencingToken: loserToken });
    // the old holder comes back with its stale token: refused
    const stale = await winner.set('e2e:guarded', 'late', { fencingToken: winnerToken }).catch((e: unknown) => e);
    expect(stale).toBeInstanceOf(StateStoreError);
    expect((stale as Error).message).toBe(ERRORS.fencingStale);
    expect(await winnerLock.release()).toBe(false);
    expect(await loserLock.release()).toBe(true);
    expect((await a.get('e2e:guarded')).value?.toString()).toBe('by-loser');
    await a.close();
    await b.close();
  });

  it('a lock waiter gives up when its signal aborts, and wakes at once on release', async () => {
    const a = await StateStoreClient.create(await connect('racer-c'));
    const b = await StateStoreClient.create(await connect('racer-d'));
    const held = new LeaseLock(a, 'e2e:lock2', 'c');
    const waiter = new LeaseLock(b, 'e2e:lock2', 'd');
    expect(await held.acquire(60_000)).toBeDefined();
    await expect(waiter.waitAndAcquire(60_000, { signal: AbortSignal.timeout(200), retryMs: 60_000 })).rejects.toThrow();
    const waiting = waiter.waitAndAcquire(60_000, { retryMs: 60_000 });
    await new Promise((r) => setTimeout(r, 100));
    const released = Date.now();
    expect(await held.release()).toBe(true);
    expect(await waiting).toBeDefined();
    // woken by the DELETE notification, not by the 60 s retry
    expect(Date.now() - released).toBeLessThan(10_000);
    expect((await waiter.holderOf())?.toString()).toBe('d');
    await waiter.release();
    await a.close();
    await b.close();
  });

  it('notifies SET, DELETE and expiry on the notify topic; registrations end at disconnect', async () => {
    const watcherMqtt = await connect('watcher-1');
    const watcher = await StateStoreClient.create(watcherMqtt);
    const rawTopics: string[] = [];
    watcherMqtt.on('message', (t) => rawTopics.push(t));
    const got: string[] = [];
    watcher.on('notification', (n) => got.push(`${n.key.toString()} ${n.operation}${n.value ? ` ${n.value.toString()}` : ''}`));
    await watcher.observe('e2e:watched');
    const writer = await StateStoreClient.create(await connect('writer-1'));
    await writer.set('e2e:watched', 'one');
    await writer.del('e2e:watched');
    await writer.set('e2e:watched', 'short-lived', { expiresInMs: 50 });
    await writer.set('e2e:other', 'ignored');
    for (let i = 0; i < 100 && got.length < 4; i++) await new Promise((r) => setTimeout(r, 20));
    expect(got).toEqual(['e2e:watched SET one', 'e2e:watched DELETE', 'e2e:watched SET short-lived', 'e2e:watched DELETE']);
    expect(rawTopics).toContain(notifyTopic('watcher-1', Buffer.from('e2e:watched')));

    // after a reconnect the registration is gone
    await watcher.close();
    await watcherMqtt.endAsync();
    const again = await connect('watcher-1');
    const seen: string[] = [];
    again.on('message', (t) => seen.push(t));
    await again.subscribeAsync(`${RESERVED_PREFIX}/${Buffer.from('watcher-1').toString('hex').toUpperCase()}/command/notify/+`, { qos: 1 });
    await writer.set('e2e:watched', 'after');
    await new Promise((r) => setTimeout(r, 150));
    expect(seen).toEqual([]);
    await writer.close();
  });

  it('answers "not authorized" to what the rules do not grant', async () => {
    const s = await StateStoreClient.create(await connect('restricted'));
    await expect(s.get('public')).resolves.toEqual({ value: undefined, version: undefined });
    await expect(s.set('public', 'x')).rejects.toThrow(ERRORS.notAuthorized);
    await expect(s.set('own/restricted/a', 'x')).resolves.toMatchObject({ applied: true });
    await expect(s.get('e2e:guarded')).rejects.toThrow(ERRORS.notAuthorized);
    await expect(s.observe('secret')).rejects.toThrow(ERRORS.notAuthorized);
    await s.close();
  });

  it('disconnects a client that asks for answers on a reserved topic', async () => {
    const c = await connect('bad-responder');
    const closed = new Promise<number | undefined>((resolve) => c.once('disconnect', (p) => resolve(p.reasonCode)));
    await c.publishAsync(INVOKE_TOPIC, encodeRequest(['GET', 'k']), {
      qos: 1,
      properties: { responseTopic: `${RESERVED_PREFIX}/x`, correlationData: Buffer.from('1'), userProperties: { __ts: `${Date.now()}:0:x` } },
    });
    expect(await closed).toBe(0x82);
  });

  it('reports metrics and a status line', () => {
    const m = server.stateStore.metrics();
    expect(m.ops['SET']).toBeGreaterThan(5);
    expect(m.errors[ERRORS.notAuthorized]).toBeGreaterThanOrEqual(3);
    expect(m.keys).toBeGreaterThan(0);
    expect(server.stateStore.statusLine()).toMatch(/^State store: \d+ of 1000000 keys/);
  });
});
