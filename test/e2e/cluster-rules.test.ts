/**
 * The rules document cluster-wide (issue 12): one nats-server with JetStream, two broker
 * nodes. An upload on one node (POST /rules) becomes the active document on the other with
 * the same version (ETag); the filter then runs on the node where a message arrives, and
 * its output is published once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt, { type MqttClient } from 'mqtt';
import { startBroker, until, delay, type TestBroker } from '../helpers/broker.js';
import { startNats, type NatsCluster } from '../helpers/nats.js';

const FIRE = JSON.stringify({
  filters: [{ topic: 'house/#', subtopic: 'alert/', statements: [{ condition: '$inside.temperature >= 45', new_payload: 'fire_danger' }] }],
  rules: [],
});

let nats: NatsCluster;
const nodes: TestBroker[] = [];
const open: MqttClient[] = [];

beforeAll(async () => {
  nats = await startNats(1);
  for (const name of ['r1', 'r2']) nodes.push(await startBroker({ clusterNats: nats.urls, nodeName: name, clusterName: 'rules', clusterReplicas: 1, httpPort: 0 }));
  await until(() => nodes.every((n) => n.server.cluster!.status().jetstream.rules === 'ready' && n.server.cluster!.status().nodes.length === 2), 30_000, 'rules buckets ready');
});

afterAll(async () => {
  await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
  for (const n of nodes) await n.stop();
  await nats?.stop();
});

const http = (n: TestBroker) => `http://127.0.0.1:${n.server.port('http')}`;

async function etagOf(n: TestBroker): Promise<string | null> {
  return (await fetch(`${http(n)}/rules`)).headers.get('etag');
}

describe('cluster: rules document', () => {
  it('activates an upload on one node on every node, with one version', async () => {
    const res = await fetch(`${http(nodes[0]!)}/rules`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: FIRE });
    expect(res.status).toBe(200);
    const etag = res.headers.get('etag');
    expect(etag).toBeTruthy();
    await until(() => nodes[1]!.server.cluster!.status().jetstream.rulesEtag !== undefined, 60_000, 'etag known');
    const deadline = Date.now() + 90_000;
    while ((await etagOf(nodes[1]!)) !== etag) {
      if (Date.now() > deadline) throw new Error('r2 did not activate the document');
      await delay(200);
    }
    expect(await etagOf(nodes[0]!)).toBe(etag);
    // the filter runs where the message arrives (r2), and its output is published once
    const sub = await mqtt.connectAsync(nodes[0]!.url, { protocolVersion: 5, clientId: 'rules-sub', reconnectPeriod: 0 });
    open.push(sub);
    const got: string[] = [];
    sub.on('message', (t, p) => got.push(`${t} ${p.toString()}`));
    await sub.subscribeAsync('house/+/alert/', { qos: 1 });
    await until(() => nodes[1]!.server.cluster!.node.interest.plan('house/kitchen/alert/') !== undefined, 10_000, 'alert interest on r2');
    const pub = await mqtt.connectAsync(nodes[1]!.url, { protocolVersion: 5, clientId: 'rules-pub', reconnectPeriod: 0 });
    open.push(pub);
    await pub.publishAsync('house/kitchen', JSON.stringify({ inside: { temperature: 50 } }), { qos: 1 });
    await until(() => got.length >= 1, 10_000, 'rule output on r1');
    await delay(500);
    expect(got).toEqual(['house/kitchen/alert/ fire_danger']);
  });
});
