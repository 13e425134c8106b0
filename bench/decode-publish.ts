/**
 * Decoding cost of one state-store request, the v5 PUBLISH of the round-trip benchmark
 * (QoS 1; responseTopic ~100 chars, 8-byte correlationData, one `__ts` user property, a
 * ~40-byte payload): the hand-written decoder against mqtt-packet. Prints ns per decode,
 * median of several alternating runs, and the ratio.
 *
 *   npm run build && node dist/bench/decode-publish.js
 */
import mqttPacket from 'mqtt-packet';
import { decodeFast } from '../src/mqtt/decode-fast.js';
import { decodePacket } from '../src/mqtt/decode.js';
import { INVOKE_TOPIC } from '../src/state/protocol.js';

const clientId = 'bench-client-0001';
const packet = mqttPacket.generate(
  {
    cmd: 'publish',
    topic: INVOKE_TOPIC,
    payload: Buffer.from('*3\r\n$3\r\nSET\r\n$8\r\nkey-0001\r\n$6\r\nvalue1\r\n'),
    qos: 1,
    messageId: 0x7e7e,
    retain: false,
    dup: false,
    properties: {
      responseTopic: `clients/${clientId}/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response`,
      correlationData: Buffer.from('0123abcd'),
      userProperties: { __ts: `${String(Date.now()).padStart(15, '0')}:00000:${clientId}` },
    },
  },
  { protocolVersion: 5 },
);
// a packet inside a bigger socket chunk, as the framing hands it over
const chunk = Buffer.concat([Buffer.alloc(17), packet, Buffer.alloc(23)]);
const bytes = chunk.subarray(17, 17 + packet.length);
if (decodeFast(bytes, 5) === undefined) throw new Error('the fast path does not take this packet');

let sink = 0;
function nsPerDecode(decode: (b: Buffer, v: 5) => mqttPacket.Packet | undefined, n: number): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink += decode(bytes, 5)!.length!;
  return Number(process.hrtime.bigint() - t0) / n;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

const runs = Number(process.argv[2] ?? 9);
const fast: number[] = [];
const slow: number[] = [];
nsPerDecode(decodeFast, 200_000); // warm-up: both optimised before timing
nsPerDecode(decodePacket, 50_000);
for (let r = 0; r < runs; r++) {
  fast.push(nsPerDecode(decodeFast, 500_000));
  slow.push(nsPerDecode(decodePacket, 100_000));
}
const f = median(fast);
const s = median(slow);
console.log(`packet: ${packet.length} bytes; ${runs} runs (Node ${process.version})`);
console.log(`decodeFast   ${f.toFixed(0)} ns/decode  (runs: ${fast.map((x) => x.toFixed(0)).join(' ')})`);
console.log(`decodePacket ${s.toFixed(0)} ns/decode  (runs: ${slow.map((x) => x.toFixed(0)).join(' ')})`);
console.log(`ratio: decodeFast is ${(s / f).toFixed(1)}x faster`);
if (sink === 0) throw new Error('nothing decoded'); // keeps the results alive
