// The state store answers only on a response topic the requester may subscribe to
// (shared/specs/state-store.md, Requests), with a real ACL file and MQTT.js clients: a
// client must not be able to make the broker publish into another client's topics.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { startEdb, type EdbServer } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { encodeRequest } from '../../src/state/resp.js';
import { INVOKE_TOPIC } from '../../src/state/protocol.js';

const ACL = `
topic write ${INVOKE_TOPIC}
pattern readwrite clients/%c/#
`;

let server: EdbServer;
const clients: MqttClient[] = [];

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'edb-state-acl-'));
  const aclFile = join(dir, 'acl.conf');
  writeFileSync(aclFile, ACL);
  server = await startEdb(testConfig({ aclFile, allowAnonymous: true }), silentLogger());
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
  await server.stop();
});

async function connect(clientId: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync({ port: server.port('mqtt'), protocolVersion: 5, clientId, reconnectPeriod: 0 });
  clients.push(c);
  return c;
}

function request(c: MqttClient, parts: string[], responseTopic: string, id: string): Promise<void> {
  return c.publishAsync(INVOKE_TOPIC, encodeRequest(parts), {
    qos: 1,
    properties: { responseTopic, correlationData: Buffer.from(id), userProperties: { __ts: `${String(Date.now()).padStart(15, '0')}:00000:x` } },
  }).then(() => undefined);
}

describe('state store response topic and the ACL', () => {
  it('drops a request answered on a topic the client may not subscribe to, and answers on its own', async () => {
    const victim = await connect('victim');
    const victimGot: string[] = [];
    victim.on('message', (_t, payload) => victimGot.push(payload.toString()));
    await victim.subscribeAsync('clients/victim/#', { qos: 1 });

    const nosy = await connect('nosy');
    const nosyGot: string[] = [];
    nosy.on('message', (_t, payload, packet) => nosyGot.push(`${packet.properties?.correlationData?.toString()} ${payload.toString()}`));
    await nosy.subscribeAsync('clients/nosy/#', { qos: 1 });

    // the ACL lets nosy publish the request, but not listen on the victim's topics
    await request(nosy, ['SET', 'k', 'planted'], 'clients/victim/response', 'into-victim');
    // then its own response topic: answered; the ping through the store orders the two
    await request(nosy, ['GET', 'k'], 'clients/nosy/response', 'own');
    await expect.poll(() => nosyGot, { timeout: 5000 }).toEqual(['own $-1\r\n']);
    expect(victimGot).toEqual([]);
    expect(server.stateStore.metrics().errors['response topic not authorized']).toBe(1);
  });
});
