/**
 * The Eclipse Mosquitto command-line clients (Debian mosquitto-clients) against a real
 * broker on a free port: QoS 2, retained messages, wills triggered by killing the client,
 * and MQTT 5 properties read back through mosquitto_sub's -F format.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Child, executable, run, startBroker, waitFor, waitForSubscription, type RunningBroker } from './helpers.js';

const PUB = '/usr/bin/mosquitto_pub';
const SUB = '/usr/bin/mosquitto_sub';
const missing = [PUB, SUB].filter((p) => !executable(p));
if (missing.length > 0) {
  // CI installs mosquitto-clients; say loudly why these tests do not run here
  console.warn(`SKIPPING mosquitto-clients tests: ${missing.join(', ')} not installed (apt-get install mosquitto-clients)`);
}

let broker: RunningBroker;
const children: Child[] = [];
let seq = 0;

beforeAll(async () => {
  if (missing.length === 0) broker = await startBroker();
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await broker?.stop();
});

function hostArgs(): string[] {
  return ['-h', '127.0.0.1', '-p', String(broker.port)];
}

/** Start mosquitto_sub and resolve once the broker holds its subscription. */
async function subscribe(filter: string, args: string[]): Promise<Child> {
  const id = `mosq-sub-${++seq}`;
  const child = new Child(SUB, [...hostArgs(), '-i', id, '-t', filter, ...args]);
  children.push(child);
  await Promise.race([
    waitForSubscription(broker, filter, id),
    child.exited.then(({ code }) => {
      throw new Error(`mosquitto_sub exited with ${code} before subscribing: ${child.stderr}`);
    }),
  ]);
  return child;
}

async function publish(args: string[], stdin?: string): Promise<void> {
  const child = new Child(PUB, [...hostArgs(), ...args]);
  child.proc.stdin.end(stdin ?? '');
  const { code } = await child.finished(10_000);
  expect(code, `mosquitto_pub ${args.join(' ')} failed: ${child.stderr}`).toBe(0);
}

describe.skipIf(missing.length > 0)('mosquitto_pub / mosquitto_sub', () => {
  it.each(['mqttv311', 'mqttv5'])('delivers QoS 2 messages exactly once and in order (%s)', async (version) => {
    const root = `e2e/mosq/${version}/qos2`;
    const sub = await subscribe(`${root}/#`, ['-V', version, '-q', '2', '-C', '50', '-F', '%q %t %p']);
    // -l: one message per line of standard input, over one connection
    const lines = Array.from({ length: 50 }, (_, i) => `reading ${i}`);
    await publish(['-V', version, '-q', '2', '-t', `${root}/a`, '-l'], lines.join('\n') + '\n');
    const { code } = await sub.finished(10_000);
    expect(code).toBe(0);
    expect(sub.lines.filter((l) => l !== '')).toEqual(lines.map((l) => `2 ${root}/a ${l}`));
  });

  it('downgrades to the subscription QoS', async () => {
    const sub = await subscribe('e2e/mosq/down', ['-q', '1', '-C', '1', '-F', '%q %p']);
    await publish(['-q', '2', '-t', 'e2e/mosq/down', '-m', 'x']);
    await sub.finished();
    expect(sub.lines[0]).toBe('1 x');
  });

  it('keeps a retained message (-r) for later subscribers and clears it with -r -n', async () => {
    const topic = `e2e/mosq/retained/${seq}`;
    await publish(['-r', '-q', '1', '-t', topic, '-m', 'kept value']);
    const first = await run(SUB, [...hostArgs(), '-t', topic, '-C', '1', '-W', '5', '-F', '%r %t %p']);
    expect(first.code).toBe(0);
    expect(first.stdout.trim()).toBe(`1 ${topic} kept value`);

    await publish(['-r', '-q', '1', '-t', topic, '-n']); // [MQTT-5-3.3.1-6] empty retained payload clears
    const after = await subscribe(topic, ['-C', '1', '-F', '%r %p']);
    await publish(['-q', '1', '-t', topic, '-m', 'marker']);
    await after.finished();
    expect(after.lines[0]).toBe('0 marker');
  });

  it('publishes the will (--will-topic ...) when the client process is killed', async () => {
    const root = `e2e/mosq/will/${seq}`;
    const watcher = await subscribe(`${root}/#`, ['-q', '1', '-C', '1', '-F', '%t %q %r %p']);
    // the will carrier is itself a mosquitto_sub; SIGKILL drops its socket without DISCONNECT
    const carrier = await subscribe(`${root}/unused`, ['--will-topic', `${root}/status`, '--will-payload', 'sensor lost', '--will-qos', '1']);
    carrier.kill('SIGKILL');
    await watcher.finished();
    expect(watcher.lines[0]).toBe(`${root}/status 1 0 sensor lost`);
  });

  it('publishes a retained will (--will-retain) that later subscribers still see', async () => {
    const topic = `e2e/mosq/will-retained/${seq}`;
    const carrier = await subscribe(`${topic}/unused`, ['-V', 'mqttv5', '--will-topic', topic, '--will-payload', 'offline', '--will-retain', '--will-qos', '1']);
    carrier.kill('SIGKILL');
    await waitFor(() => broker.server.broker.retained.size > 0 && carrier.proc.signalCode !== null, 'the carrier to die');
    const late = await run(SUB, [...hostArgs(), '-t', topic, '-C', '1', '-W', '5', '-F', '%r %p']);
    expect(late.code).toBe(0);
    expect(late.stdout.trim()).toBe('1 offline');
  });

  it('does not publish the will after a normal exit (-C reached: DISCONNECT sent)', async () => {
    const root = `e2e/mosq/nowill/${seq}`;
    const watcher = await subscribe(`${root}/#`, ['-q', '1', '-C', '1', '-F', '%t %p']);
    const carrier = await subscribe(`${root}/trigger`, ['-C', '1', '--will-topic', `${root}/status`, '--will-payload', 'wrongly sent']);
    await publish(['-t', `${root}/trigger`, '-m', 'go']); // carrier gets its one message and disconnects cleanly
    await carrier.finished();
    await watcher.finished();
    // the watcher's single message is the trigger itself, not the will
    expect(watcher.lines[0]).toBe(`${root}/trigger go`);
    await publish(['-q', '1', '-t', `${root}/marker`, '-m', 'm']);
    const again = await subscribe(`${root}/#`, ['-q', '1', '-C', '1', '-W', '2', '-F', '%t %p']);
    await publish(['-q', '1', '-t', `${root}/marker`, '-m', 'after']);
    await again.finished();
    expect(again.lines[0]).toBe(`${root}/marker after`);
  });

  it('queues QoS 1 messages for a persistent session (-c) while mosquitto_sub is gone', async () => {
    const id = `mosq-persist-${++seq}`;
    const topic = `e2e/mosq/persist/${seq}`;
    const first = new Child(SUB, [...hostArgs(), '-c', '-i', id, '-q', '1', '-t', topic]);
    children.push(first);
    await waitForSubscription(broker, topic, id);
    first.kill('SIGKILL');
    await first.exited;
    await waitFor(() => !broker.server.broker.clients().some((c) => c.clientId === id), 'the session to go offline');
    await publish(['-q', '1', '-t', topic, '-l'], 'one\ntwo\nthree\n');
    const again = new Child(SUB, [...hostArgs(), '-c', '-i', id, '-q', '1', '-t', topic, '-C', '3', '-W', '5']);
    children.push(again);
    const { code } = await again.finished();
    expect(code, again.stderr).toBe(0);
    expect(again.lines.filter((l) => l !== '')).toEqual(['one', 'two', 'three']);
  });

  it('marks retained messages with retain-as-published for v5 subscribers that ask', async () => {
    const topic = `e2e/mosq/rap/${++seq}`;
    const sub = await subscribe(topic, ['-V', '5', '--retain-as-published', '-C', '2', '-F', '%r %p']);
    await publish(['-V', '5', '-t', topic, '-m', 'flagged', '-r']);
    await publish(['-V', '5', '-t', topic, '-m', 'plain']);
    await sub.finished();
    // [MQTT-5-3.3.1-13] with Retain As Published the live message keeps its RETAIN flag
    expect(sub.lines.filter((l) => l !== '')).toEqual(['1 flagged', '0 plain']);
    await publish(['-t', topic, '-r', '-n']);
  });

  it('forwards MQTT 5 publish properties (-D publish ...) to a v5 subscriber (-F)', async () => {
    const topic = `e2e/mosq/v5/props/${seq}`;
    const sub = await subscribe(topic, ['-V', '5', '-q', '1', '-C', '1', '-F', '%t|%p|%P|%C|%R|%D|%F|%E']);
    await publish([
      '-V', '5', '-q', '1', '-t', topic, '-m', '{"t": 21.5}',
      '-D', 'publish', 'user-property', 'site', 'plant 7',
      '-D', 'publish', 'user-property', 'unit', 'C',
      '-D', 'publish', 'content-type', 'application/json',
      '-D', 'publish', 'response-topic', 'e2e/mosq/v5/reply',
      '-D', 'publish', 'correlation-data', 'req-17',
      '-D', 'publish', 'payload-format-indicator', '1',
      '-D', 'publish', 'message-expiry-interval', '3600',
    ]);
    await sub.finished();
    const [t, p, props, ct, rt, cd, pfi, expiry] = sub.lines[0]!.split('|');
    expect({ t, p, props, ct, rt, cd, pfi }).toEqual({
      t: topic,
      p: '{"t": 21.5}',
      props: 'site:plant 7 unit:C',
      ct: 'application/json',
      rt: 'e2e/mosq/v5/reply',
      cd: 'req-17',
      pfi: '1',
    });
    // [MQTT-5-3.3.2-6] forwarded expiry is what is left of it
    expect(Number(expiry)).toBeGreaterThan(3590);
    expect(Number(expiry)).toBeLessThanOrEqual(3600);
  });

  it('tags deliveries with the subscription identifier (-D subscribe subscription-identifier)', async () => {
    const sub = await subscribe('e2e/mosq/v5/subid/+', ['-V', '5', '-C', '1', '-F', '%S %t', '-D', 'subscribe', 'subscription-identifier', '42']);
    await publish(['-V', '5', '-t', 'e2e/mosq/v5/subid/x', '-m', 'y']);
    await sub.finished();
    expect(sub.lines[0]).toBe('42 e2e/mosq/v5/subid/x');
  });

  it('drops the v5 properties a 3.1.1 subscriber cannot receive but delivers the message', async () => {
    const topic = `e2e/mosq/v5to311/${seq}`;
    const sub = await subscribe(topic, ['-V', 'mqttv311', '-C', '1', '-F', '%t %p']);
    await publish(['-V', '5', '-t', topic, '-m', 'hello', '-D', 'publish', 'user-property', 'k', 'v']);
    await sub.finished();
    expect(sub.lines[0]).toBe(`${topic} hello`);
  });

  it('answers a v5 request: response topic and correlation data make the round trip', async () => {
    const base = `e2e/mosq/v5/rpc/${seq}`;
    // the "requester" waits for a reply carrying its correlation data
    const requester = await subscribe(`${base}/reply`, ['-V', '5', '-C', '1', '-F', '%p %D']);
    const responder = await subscribe(`${base}/request`, ['-V', '5', '-C', '1', '-F', '%R %D %p']);
    await publish(['-V', '5', '-t', `${base}/request`, '-m', 'ping', '-D', 'publish', 'response-topic', `${base}/reply`, '-D', 'publish', 'correlation-data', 'c-9']);
    await responder.finished();
    const [replyTo, correlation, body] = responder.lines[0]!.split(' ');
    expect(replyTo).toBe(`${base}/reply`);
    await publish(['-V', '5', '-t', replyTo!, '-m', `pong-${body}`, '-D', 'publish', 'correlation-data', correlation!]);
    await requester.finished();
    expect(requester.lines[0]).toBe('pong-ping c-9');
  });
});
