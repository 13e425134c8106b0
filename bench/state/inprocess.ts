// The broker's own cost per state-store request, without sockets: a client over an
// in-memory Connection sends SET/GET requests (QoS 1, with response topic, correlation
// data and __ts) and acknowledges the answers; every packet goes through the real broker
// (parse, auth and rules hooks, the state store, routing, delivery, encoding).
//   npm run build && node dist/bench/state/inprocess.js       (REQUESTS=200000)
import mqttPacket from 'mqtt-packet';
import { startEdb } from '../../src/server.js';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import type { Connection, ConnectionEvents } from '../../src/transport/connection.js';
import { encodeRequest } from '../../src/state/resp.js';
import { INVOKE_TOPIC } from '../../src/state/protocol.js';
import { createStateStoreService } from '../../src/state/service.js';
import type { BrokerApi } from '../../src/broker/api.js';

const N = Number(process.env['REQUESTS'] ?? 200_000);
const opts = { protocolVersion: 5 as const };
const server = await startEdb(testConfig({ mqttPort: -1, httpPort: -1, rulesPort: -1 }), silentLogger());

let written = 0;
let lastPubId = -1;
const conn: Connection = {
  transport: 'tcp',
  remoteAddress: '127.0.0.1:1',
  write(data: Uint8Array) {
    written++;
    // the answer PUBLISH (QoS 1): remember its packet id to acknowledge it
    const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let i = 0;
    while (i < b.length) {
      let len = 0;
      let mult = 1;
      let j = i + 1;
      for (;;) {
        const x = b[j++]!;
        len += (x & 0x7f) * mult;
        mult *= 128;
        if (!(x & 0x80)) break;
      }
      if (b[i]! >> 4 === 3) {
        const topicLen = b.readUInt16BE(j);
        lastPubId = b.readUInt16BE(j + 2 + topicLen);
      }
      i = j + len;
    }
    return true;
  },
  bufferedAmount: () => 0,
  pause() {},
  resume() {},
  close() {},
  destroy() {},
};
const events: ConnectionEvents = server.broker.acceptor.accept(conn);
const clientId = 'inproc';
const responseTopic = `clients/${clientId}/response`;
events.onData(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId, keepalive: 0 }, opts));
events.onData(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: responseTopic, qos: 1 }] }, opts));
await new Promise((r) => setTimeout(r, 50));

const key = Buffer.from('bench:0000000001');
const value = Buffer.alloc(100, 0x76);
const requests = [encodeRequest(['SET', key, value]), encodeRequest(['GET', key])].map((payload) =>
  mqttPacket.generate({ cmd: 'publish', topic: INVOKE_TOPIC, payload, qos: 1, messageId: 7, retain: false, dup: false, properties: { responseTopic, correlationData: Buffer.from('corr'), userProperties: { __ts: `${String(Date.now()).padStart(15, '0')}:00000:${clientId}` } } }, opts),
);

function run(n: number): number {
  const t = performance.now();
  for (let i = 0; i < n; i++) {
    events.onData(requests[i & 1]!);
    if (lastPubId < 0) throw new Error('no answer');
    events.onData(Buffer.from([0x40, 0x02, lastPubId >> 8, lastPubId & 0xff]));
    lastPubId = -1;
  }
  return ((performance.now() - t) / n) * 1000;
}

run(20_000); // warm-up
const broker = run(N);

// the state service alone, for comparison
let hook: ((m: unknown, c: unknown) => unknown) | undefined;
const fake = { addHooks: (h: { onPublish: typeof hook }) => (hook = h.onPublish), publish() {}, disconnectClient: () => false, maySubscribe: () => true } as unknown as BrokerApi;
const svc = createStateStoreService(fake, testConfig(), silentLogger());
const client = { clientId, protocolVersion: 5 };
const msgs = [encodeRequest(['SET', key, value]), encodeRequest(['GET', key])].map((payload) => ({ topic: INVOKE_TOPIC, payload, qos: 1, retain: false, properties: { responseTopic, correlationData: Buffer.from('corr'), userProperties: { __ts: `${String(Date.now()).padStart(15, '0')}:00000:${clientId}` } } }));
for (let i = 0; i < 20_000; i++) hook!(msgs[i & 1], client);
let t = performance.now();
for (let i = 0; i < N; i++) hook!(msgs[i & 1], client);
const service = ((performance.now() - t) / N) * 1000;
await svc.close();
await server.stop();
t = 0;
console.log(`per state-store request (SET/GET alternating), ${N.toLocaleString('en')} requests, no sockets:`);
console.log(`  through the broker: ${broker.toFixed(1)} µs   (request PUBLISH in, PUBACK out, answer PUBLISH out, PUBACK in; ${written} writes)`);
console.log(`  state service alone: ${service.toFixed(1)} µs   (RESP, HLC, table, answer)`);
