/**
 * Eclipse Paho for Python (paho-mqtt 1.6, Debian python3-paho-mqtt): the classic subscriber /
 * publisher pair from the Edge Data Broker docs (test/fixtures/paho/), unchanged but for host
 * and port, against a real broker on a free port.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Child, executable, startBroker, waitFor, type RunningBroker } from './helpers.js';

const PYTHON = '/usr/bin/python3';
const script = (name: string): string => fileURLToPath(new URL(`../fixtures/paho/${name}`, import.meta.url));

function pahoMissing(): string | undefined {
  if (!executable(PYTHON)) return `${PYTHON} not installed`;
  const probe = spawnSync(PYTHON, ['-c', 'import paho.mqtt.client, paho.mqtt; print(paho.mqtt.__version__)'], { encoding: 'utf8' });
  if (probe.status !== 0) return `paho-mqtt cannot be imported by ${PYTHON} (apt-get install python3-paho-mqtt): ${probe.stderr.trim()}`;
  return undefined;
}
const missing = pahoMissing();
if (missing) console.warn(`SKIPPING paho tests: ${missing}`);

let broker: RunningBroker;
const children: Child[] = [];

beforeAll(async () => {
  if (!missing) broker = await startBroker();
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await broker?.stop();
});

/** python -u: unbuffered stdout, so the scripts stay exactly as in the docs. */
function python(name: string, args: string[], env?: NodeJS.ProcessEnv): Child {
  const child = new Child(PYTHON, ['-u', script(name), ...args], env);
  children.push(child);
  return child;
}

describe.skipIf(missing !== undefined)('paho-mqtt (Python) docs examples', () => {
  it('the subscriber receives every JSON reading the publisher sends', async () => {
    const topic = 'devices/DeviceName/data';
    const sub = python('subscriber.py', ['127.0.0.1', String(broker.port), 'devices/#']);
    await sub.waitForLines(1);
    expect(sub.lines[0]).toBe('Connected with result code 0');
    // on_connect subscribes; wait until the broker holds it before publishing
    await waitFor(() => broker.server.broker.subscriptions().some((s) => s.filter === 'devices/#' && s.online), 'the paho subscription');

    const count = 25;
    const pub = python('publisher.py', ['127.0.0.1', String(broker.port), String(count), topic]);
    const { code } = await pub.finished(20_000);
    expect(code, pub.stderr).toBe(0);
    const sent = pub.lines.filter((l) => l.startsWith('Published ')).map((l) => l.slice('Published '.length));
    expect(sent).toHaveLength(count);
    for (const body of sent) {
      const reading = JSON.parse(body) as { name: string; 'raw-data': number };
      expect(reading.name).toBe('DeviceName');
      expect(typeof reading['raw-data']).toBe('number');
    }

    await sub.waitForLines(1 + count);
    expect(sub.lines.slice(1)).toEqual(sent.map((body) => `${topic} ${body}`));
    // a loop_forever() subscriber keeps running until stopped
    expect(sub.proc.exitCode).toBeNull();
    sub.kill('SIGTERM');
    await sub.exited;
  });

  it('the scripts take host and port from the environment too', async () => {
    const env = { MQTT_HOST: '127.0.0.1', MQTT_PORT: String(broker.port) };
    const sub = python('subscriber.py', [], { ...env, MQTT_TOPIC: 'devices/env/#' });
    await sub.waitForLines(1);
    expect(sub.lines[0]).toBe('Connected with result code 0');
    await waitFor(() => broker.server.broker.subscriptions().some((s) => s.filter === 'devices/env/#' && s.online), 'the paho subscription');
    const pub = python('publisher.py', [], { ...env, COUNT: '5', MQTT_TOPIC: 'devices/env/DeviceName' });
    expect((await pub.finished(20_000)).code, pub.stderr).toBe(0);
    await sub.waitForLines(6);
    expect(sub.lines.slice(1).map((l) => l.split(' ')[0])).toEqual(Array(5).fill('devices/env/DeviceName'));
    sub.kill('SIGTERM');
  });
});
