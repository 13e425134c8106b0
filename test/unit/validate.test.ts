/**
 * Raw bytes of packets as a client sends them, and what the broker's reading and checks make
 * of each (the model: mochi-mqtt packets/tpackets.go): the packet kind, or the reason code it
 * is refused with. Each row goes through readPacket, then the check of its packet kind, as
 * the connection and the handlers do.
 */
import { describe, expect, it } from 'vitest';
import type { Packet } from 'mqtt-packet';
import { RC } from '../../src/mqtt/reason-codes.js';
import { PacketProblem, checkConnect, checkPublish, checkSubscribe, checkUnsubscribe, packetIdProblem, readPacket } from '../../src/mqtt/validate.js';

/** Our Topic Alias Maximum in these rows. */
const ALIAS_MAX = 10;

interface Row {
  name: string;
  version: 3 | 4 | 5;
  /** the packet, hex; spaces only for reading */
  hex: string;
  /** the packet kind it is read as, or the reason code it is refused with */
  expect: string | number;
}

const ROWS: Row[] = [
  // CONNECT
  { name: 'CONNECT 3.1.1', version: 4, hex: '10 0d 0004 4d515454 04 02 0000 0001 61', expect: 'connect' },
  { name: 'CONNECT 5.0', version: 4, hex: '10 0e 0004 4d515454 05 02 0000 00 0001 61', expect: 'connect' },
  { name: 'CONNECT 3.1 (MQIsdp, level 3)', version: 4, hex: '10 0f 0006 4d5149736470 03 02 0000 0001 61', expect: 'connect' },
  { name: 'CONNECT level 6', version: 4, hex: '10 0d 0004 4d515454 06 02 0000 0001 61', expect: RC.UNSUPPORTED_PROTOCOL_VERSION },
  { name: 'CONNECT level 2', version: 4, hex: '10 0d 0004 4d515454 02 02 0000 0001 61', expect: RC.UNSUPPORTED_PROTOCOL_VERSION },
  { name: 'CONNECT with another protocol name', version: 4, hex: '10 0d 0004 4d515458 04 02 0000 0001 61', expect: RC.MALFORMED_PACKET },
  { name: 'CONNECT reserved flag set [MQTT-5-3.1.2-3]', version: 4, hex: '10 0d 0004 4d515454 04 03 0000 0001 61', expect: RC.MALFORMED_PACKET },
  { name: 'CONNECT 3.1.1 password without user name [MQTT-3.1.1-3.1.2-22]', version: 4, hex: '10 10 0004 4d515454 04 42 0000 0001 61 0001 70', expect: RC.MALFORMED_PACKET },
  { name: 'CONNECT 3.1.1 no client id, clean session 0 [MQTT-3.1.1-3.1.3-8]', version: 4, hex: '10 0c 0004 4d515454 04 00 0000 0000', expect: RC.CLIENT_IDENTIFIER_NOT_VALID },
  { name: 'CONNECT 3.1.1 no client id, clean session 1', version: 4, hex: '10 0c 0004 4d515454 04 02 0000 0000', expect: 'connect' },
  { name: 'CONNECT 3.1.1 will topic with a wildcard', version: 4, hex: '10 13 0004 4d515454 04 06 0000 0001 61 0001 23 0001 78', expect: RC.TOPIC_NAME_INVALID },
  { name: 'CONNECT 3.1.1 will', version: 4, hex: '10 13 0004 4d515454 04 06 0000 0001 61 0001 77 0001 78', expect: 'connect' },
  { name: 'CONNECT 5.0 Receive Maximum 0', version: 4, hex: '10 11 0004 4d515454 05 02 0000 03 210000 0001 61', expect: RC.PROTOCOL_ERROR },
  { name: 'CONNECT 5.0 authentication method', version: 4, hex: '10 12 0004 4d515454 05 02 0000 04 15000178 0001 61', expect: RC.BAD_AUTHENTICATION_METHOD },
  { name: 'CONNECT 5.0 Session Expiry Interval twice', version: 4, hex: '10 18 0004 4d515454 05 02 0000 0a 1100000001 1100000002 0001 61', expect: RC.PROTOCOL_ERROR },
  { name: 'CONNECT client id not UTF-8', version: 4, hex: '10 0d 0004 4d515454 04 02 0000 0001 ff', expect: RC.MALFORMED_PACKET },

  // PUBLISH
  { name: 'PUBLISH QoS 0', version: 4, hex: '30 07 0003 612f62 6869', expect: 'publish' },
  { name: 'PUBLISH QoS 1', version: 4, hex: '32 09 0003 612f62 0007 6869', expect: 'publish' },
  { name: 'PUBLISH QoS 3', version: 4, hex: '36 09 0003 612f62 0007 6869', expect: RC.MALFORMED_PACKET },
  { name: 'PUBLISH QoS 1 cut short in its packet identifier', version: 4, hex: '32 06 0003 612f62 00', expect: RC.MALFORMED_PACKET },
  { name: 'PUBLISH QoS 1 packet identifier 0', version: 4, hex: '32 09 0003 612f62 0000 6869', expect: RC.PROTOCOL_ERROR },
  { name: 'PUBLISH topic with a wildcard', version: 4, hex: '30 07 0003 612f2b 6869', expect: RC.TOPIC_NAME_INVALID },
  { name: 'PUBLISH empty topic (3.1.1)', version: 4, hex: '30 04 0000 6869', expect: RC.TOPIC_NAME_INVALID },
  { name: 'PUBLISH topic holding U+0000 [MQTT-5-4.7.3-2]', version: 4, hex: '30 07 0003 610062 6869', expect: RC.TOPIC_NAME_INVALID },
  { name: 'PUBLISH topic not UTF-8', version: 4, hex: '30 07 0003 61ff62 6869', expect: RC.MALFORMED_PACKET },
  { name: 'PUBLISH topic with a control character', version: 4, hex: '30 07 0003 610162 6869', expect: RC.TOPIC_NAME_INVALID },
  { name: 'PUBLISH 5.0 no properties', version: 5, hex: '30 04 0001 61 00', expect: 'publish' },
  { name: 'PUBLISH 5.0 Subscription Identifier [MQTT-5-3.3.4-6]', version: 5, hex: '30 06 0001 61 02 0b03', expect: RC.PROTOCOL_ERROR },
  { name: 'PUBLISH 5.0 Topic Alias 0', version: 5, hex: '30 07 0001 61 03 230000', expect: RC.TOPIC_ALIAS_INVALID },
  { name: 'PUBLISH 5.0 Topic Alias over our maximum', version: 5, hex: '30 07 0001 61 03 23000b', expect: RC.TOPIC_ALIAS_INVALID },
  { name: 'PUBLISH 5.0 empty topic with a Topic Alias', version: 5, hex: '30 06 0000 03 230001', expect: 'publish' },
  { name: 'PUBLISH 5.0 empty topic without a Topic Alias', version: 5, hex: '30 03 0000 00', expect: RC.TOPIC_NAME_INVALID },
  { name: 'PUBLISH 5.0 user property', version: 5, hex: '30 0d 0001 61 07 2600016b000176 6869', expect: 'publish' },
  { name: 'PUBLISH 5.0 control character in a user property name [MQTT-5-1.5.4]', version: 5, hex: '30 0d 0001 61 07 26000101000176 6869', expect: RC.MALFORMED_PACKET },
  { name: 'PUBLISH 5.0 control character in a user property value', version: 5, hex: '30 0e 0001 61 08 2600016b0002c29f 6869', expect: RC.MALFORMED_PACKET },
  { name: 'PUBLISH 5.0 control character in the content type', version: 5, hex: '30 0a 0001 61 04 0300011f 6869', expect: RC.MALFORMED_PACKET },
  { name: 'CONNECT 5.0 will with a user property', version: 4, hex: '10 1c 0004 4d515454 05 06 0000 00 0001 61 07 2600016b000176 0001 77 0001 78', expect: 'connect' },
  { name: 'CONNECT 5.0 control character in a will user property', version: 4, hex: '10 1c 0004 4d515454 05 06 0000 00 0001 61 07 26000101000176 0001 77 0001 78', expect: RC.MALFORMED_PACKET },
  { name: 'PUBLISH 5.0 Content Type twice', version: 5, hex: '30 0b 0001 61 07 03000163 030000', expect: RC.PROTOCOL_ERROR },
  { name: 'PUBLISH 5.0 Response Topic with a wildcard', version: 5, hex: '30 08 0001 61 04 0800012b', expect: RC.PROTOCOL_ERROR },
  { name: 'PUBLISH 5.0 property block past the packet', version: 5, hex: '30 05 0001 61 09 01', expect: RC.MALFORMED_PACKET },

  // SUBSCRIBE / UNSUBSCRIBE
  { name: 'SUBSCRIBE', version: 4, hex: '82 08 0001 0003 612f2b 01', expect: 'subscribe' },
  { name: 'SUBSCRIBE packet identifier 0', version: 4, hex: '82 08 0000 0003 612f2b 01', expect: RC.PROTOCOL_ERROR },
  { name: 'SUBSCRIBE with flags 0000 [MQTT-5-3.8.1-1]', version: 4, hex: '80 08 0001 0003 612f2b 01', expect: RC.MALFORMED_PACKET },
  { name: 'SUBSCRIBE control character in a filter (3.1.1)', version: 4, hex: '82 07 0001 0002 6101 01', expect: RC.MALFORMED_PACKET },
  { name: 'SUBSCRIBE 5.0', version: 5, hex: '82 09 0001 00 0003 612f2b 01', expect: 'subscribe' },
  { name: 'SUBSCRIBE 5.0 No Local on a shared subscription [MQTT-5-3.8.3-4]', version: 5, hex: '82 10 0001 00 000a 2473686172652f672f78 05', expect: RC.PROTOCOL_ERROR },
  { name: 'SUBSCRIBE 5.0 No Local on a plain subscription', version: 5, hex: '82 09 0001 00 0003 612f2b 05', expect: 'subscribe' },
  { name: 'UNSUBSCRIBE', version: 4, hex: 'a2 07 0002 0003 612f2b', expect: 'unsubscribe' },
  { name: 'UNSUBSCRIBE packet identifier 0', version: 4, hex: 'a2 07 0000 0003 612f2b', expect: RC.PROTOCOL_ERROR },

  // acks and the rest
  { name: 'PUBACK', version: 4, hex: '40 02 0007', expect: 'puback' },
  { name: 'PUBACK 5.0 with a reason code', version: 5, hex: '40 03 0007 10', expect: 'puback' },
  { name: 'PUBACK packet identifier 0', version: 4, hex: '40 02 0000', expect: RC.PROTOCOL_ERROR },
  { name: 'PUBREL', version: 4, hex: '62 02 0007', expect: 'pubrel' },
  { name: 'PINGREQ', version: 4, hex: 'c0 00', expect: 'pingreq' },
  { name: 'DISCONNECT 5.0 with a reason code', version: 5, hex: 'e0 01 04', expect: 'disconnect' },
];

/** What the connection and the handlers make of one packet: its kind, or the code it is refused with. */
function verdict(bytes: Buffer, version: 3 | 4 | 5): string | number {
  const packet: Packet | PacketProblem = readPacket(bytes, version);
  if (packet instanceof PacketProblem) return packet.reasonCode;
  let problem: PacketProblem | undefined = packetIdProblem(packet);
  if (!problem) {
    if (packet.cmd === 'connect') problem = checkConnect(packet, bytes);
    else if (packet.cmd === 'publish') problem = checkPublish(packet, version, ALIAS_MAX);
    else if (packet.cmd === 'subscribe') problem = checkSubscribe(packet, version);
    else if (packet.cmd === 'unsubscribe') problem = checkUnsubscribe(packet, version);
  }
  return problem ? problem.reasonCode : packet.cmd;
}

describe('packets from raw bytes', () => {
  for (const row of ROWS) {
    it(`${row.name} (v${row.version}): ${typeof row.expect === 'number' ? `0x${row.expect.toString(16)}` : row.expect}`, () => {
      const bytes = Buffer.from(row.hex.replace(/ /g, ''), 'hex');
      // the rows are whole packets: their Remaining Length adds up
      expect(bytes[1]! + 2, 'remaining length of the row').toBe(bytes.length);
      expect(verdict(bytes, row.version)).toBe(row.expect);
    });
  }

  it('reads a packet after one that failed (no parser state carries over)', () => {
    expect(verdict(Buffer.from('32060003612f6200', 'hex'), 4)).toBe(RC.MALFORMED_PACKET);
    // a CONNECT one byte short of its Remaining Length
    expect(verdict(Buffer.from('100d00044d515454040200000001', 'hex'), 4)).toBe(RC.MALFORMED_PACKET);
    expect(verdict(Buffer.from('30070003612f626869', 'hex'), 4)).toBe('publish');
  });

  it('a 5.0 CONNECT does not change how the next client is read', () => {
    expect(verdict(Buffer.from('100e00044d5154540502000000000161', 'hex'), 4)).toBe('connect');
    // read as 3.1.1: a PUBLISH without a property block
    const p = readPacket(Buffer.from('30070003612f626869', 'hex'), 4);
    expect(p instanceof PacketProblem ? p : { topic: (p as { topic: string }).topic, payload: (p as { payload: Buffer }).payload.toString() }).toEqual({ topic: 'a/b', payload: 'hi' });
  });
});
