import { describe, expect, it } from 'vitest';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { checkPropertyBlocks } from '../../src/mqtt/properties.js';

/** A whole frame: the fixed header's first byte, then the Remaining Length (short) and the body. */
function frame(first: number, body: number[]): Buffer {
  if (body.length > 127) throw new Error('test frames stay short');
  return Buffer.from([first, body.length, ...body]);
}
const str = (s: string): number[] => [0, Buffer.byteLength(s), ...Buffer.from(s)];
/** v5 PUBLISH QoS 0 on topic "a" with these property bytes and payload. */
const publish = (props: number[], payload: number[] = [0x68, 0x69]): Buffer => frame(0x30, [...str('a'), props.length, ...props, ...payload]);
/** v5 CONNECT (clean start) with these properties, client id "c" and optionally a will. */
function connect(props: number[], will?: number[]): Buffer {
  const flags = 0x02 | (will ? 0x04 : 0);
  const body = [...str('MQTT'), 5, flags, 0, 60, props.length, ...props, ...str('c')];
  if (will) body.push(will.length, ...will, ...str('w/t'), ...str('x'));
  return frame(0x10, body);
}
const v5 = (p: Packet): Buffer => mqttPacket.generate(p, { protocolVersion: 5 });

// [name, frame, expected reason code (undefined: accepted), part of the reason]
const table: [string, Buffer, number | undefined, string?][] = [
  ['PUBLISH without properties', publish([]), undefined],
  ['PUBLISH with every property a client may send', v5({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'), qos: 1, messageId: 7, retain: true, dup: false, properties: { payloadFormatIndicator: true, messageExpiryInterval: 9, topicAlias: 3, responseTopic: 'r/t', correlationData: Buffer.from([1, 2]), userProperties: { k: ['v', 'w'], z: '' }, contentType: 'text/plain' } }), undefined],
  ['payload format indicator 2 [MQTT-5-3.3.2.3.2]', publish([0x01, 2]), 0x82, 'not 0 or 1'],
  ['message expiry interval cut short by its block', publish([0x02, 0, 0, 0], []), 0x81, 'cut short'],
  ['a property running past its block into the payload', frame(0x30, [...str('a'), 2, 0x02, 0, 0, 0, 1]), 0x81, 'cut short'],
  ['properties running past the packet', frame(0x30, [...str('a'), 20, 0x01, 1]), 0x81, 'run past'],
  ['property length not a Variable Byte Integer', frame(0x30, [...str('a'), 0x80, 0x80, 0x80, 0x80, 0x01]), 0x81, 'Variable Byte Integer'],
  ['content type cut short', publish([0x03, 0, 5, 0x61], []), 0x81, 'content type cut short'],
  ['content type not UTF-8', publish([0x03, 0, 2, 0xc3, 0x28]), 0x81, 'not valid UTF-8'],
  ['content type holding U+0000', publish([0x03, 0, 1, 0]), 0x81, 'U+0000'],
  ['response topic cut short (mqtt-packet reads null)', publish([0x08, 0, 9, 0x61], []), 0x81, 'response topic'],
  ['correlation data cut short', publish([0x09, 0, 200], []), 0x81, 'correlation data'],
  ['session expiry interval in a PUBLISH', publish([0x11, 0, 0, 0, 1]), 0x81, 'not valid in PUBLISH'],
  ['an unknown property identifier', publish([0x7f, 0]), 0x81, 'property 0x7f'],
  ['property identifier 0', publish([0x00]), 0x81, 'property 0x00'],
  ['assigned client identifier (server only) in a PUBLISH', publish([0x12, ...str('x')]), 0x81],
  ['topic alias twice', publish([0x23, 0, 1, 0x23, 0, 2]), 0x82, 'topic alias more than once'],
  ['content type twice', publish([0x03, ...str('a'), 0x03, ...str('b')]), 0x82, 'more than once'],
  ['user property twice (allowed)', publish([0x26, ...str('k'), ...str('v'), 0x26, ...str('k'), ...str('w')]), undefined],
  ['user property value cut short', publish([0x26, ...str('k'), 0, 9, 0x61], []), 0x81, 'user property cut short'],
  ['user property name not UTF-8', publish([0x26, 0, 1, 0xff, ...str('v')]), 0x81, 'user property'],
  ['QoS 1 PUBLISH: properties after the packet identifier', frame(0x32, [...str('a'), 0, 1, 2, 0x01, 1]), undefined],
  ['QoS 1 PUBLISH: a bad property after the packet identifier', frame(0x32, [...str('a'), 0, 1, 2, 0x01, 7]), 0x82],
  ['SUBSCRIBE with a subscription identifier', frame(0x82, [0, 1, 2, 0x0b, 5, ...str('t'), 0]), undefined],
  ['SUBSCRIBE with subscription identifier 0', frame(0x82, [0, 1, 2, 0x0b, 0, ...str('t'), 0]), 0x82, 'is 0'],
  ['SUBSCRIBE: subscription identifier not a Variable Byte Integer', frame(0x82, [0, 1, 5, 0x0b, 0x80, 0x80, 0x80, 0x80, ...str('t'), 0]), 0x81],
  ['SUBSCRIBE with two subscription identifiers', frame(0x82, [0, 1, 4, 0x0b, 1, 0x0b, 2, ...str('t'), 0]), 0x82],
  ['SUBSCRIBE with a topic alias', frame(0x82, [0, 1, 3, 0x23, 0, 1, ...str('t'), 0]), 0x81],
  ['UNSUBSCRIBE with a user property', frame(0xa2, [0, 1, 7, 0x26, ...str('k'), ...str('v'), ...str('t')]), undefined],
  ['UNSUBSCRIBE with a reason string', frame(0xa2, [0, 1, 4, 0x1f, ...str('r'), ...str('t')]), 0x81],
  ['CONNECT with receive maximum, packet size, alias maximum, request flags', v5({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 10, clientId: 'c', properties: { sessionExpiryInterval: 60, receiveMaximum: 10, maximumPacketSize: 1000, topicAliasMaximum: 5, requestProblemInformation: true, requestResponseInformation: false, userProperties: { a: 'b' }, authenticationMethod: 'm', authenticationData: Buffer.from([1]) } }), undefined],
  ['CONNECT with a will and will properties', v5({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 10, clientId: 'c', will: { topic: 'w', payload: Buffer.from('x'), qos: 1, retain: false, properties: { willDelayInterval: 5, payloadFormatIndicator: true, messageExpiryInterval: 9, contentType: 'c', responseTopic: 'r', correlationData: Buffer.from([1]), userProperties: { a: 'b' } } } } as Packet), undefined],
  ['CONNECT: receive maximum 0 [MQTT-5-3.1.2.11.3]', connect([0x21, 0, 0]), 0x82, 'receive maximum is 0'],
  ['CONNECT: maximum packet size 0', connect([0x27, 0, 0, 0, 0]), 0x82, 'maximum packet size is 0'],
  ['CONNECT: request problem information 2', connect([0x17, 2]), 0x82],
  ['CONNECT: topic alias (a PUBLISH property)', connect([0x23, 0, 1]), 0x81, 'not valid in CONNECT'],
  ['CONNECT: will delay interval among the CONNECT properties', connect([0x18, 0, 0, 0, 1]), 0x81],
  ['CONNECT: session expiry interval among the will properties', connect([], [0x11, 0, 0, 0, 1]), 0x81, 'will property 0x11'],
  ['CONNECT: will content type not UTF-8', connect([], [0x03, 0, 1, 0xfe]), 0x81, 'will content type'],
  ['CONNECT: authentication method cut short', connect([0x15, 0, 40, 0x61]), 0x81],
  ['PUBACK with a reason code and a reason string', frame(0x40, [0, 1, 0x10, 4, 0x1f, ...str('r')]), undefined],
  ['PUBACK with a reason code only', frame(0x40, [0, 1, 0x10]), undefined],
  ['PUBACK: bytes after its properties', frame(0x40, [0, 1, 0x10, 0, 0x99]), 0x81, 'after the properties'],
  ['PUBREL with session expiry interval', frame(0x62, [0, 1, 0, 5, 0x11, 0, 0, 0, 1]), 0x81],
  ['DISCONNECT with session expiry interval and reason string', frame(0xe0, [0, 9, 0x11, 0, 0, 0, 1, 0x1f, ...str('b')]), undefined],
  ['DISCONNECT with a topic alias', frame(0xe0, [0, 3, 0x23, 0, 1]), 0x81],
  ['AUTH with method and data', frame(0xf0, [0x18, 8, 0x15, ...str('m'), 0x16, 0, 1, 7]), undefined],
  ['AUTH with a payload format indicator', frame(0xf0, [0x18, 2, 0x01, 1]), 0x81],
];

describe('checkPropertyBlocks: every property block of a v5 packet read strictly', () => {
  it.each(table)('%s', (_name, bytes, expected, reasonPart) => {
    const problem = checkPropertyBlocks(bytes);
    expect(problem?.reasonCode).toBe(expected);
    if (reasonPart !== undefined) expect(problem?.reason).toContain(reasonPart);
  });

  it('the accepted frames of the table are ones mqtt-packet decodes too (the table is made of real packets)', () => {
    for (const [name, bytes, expected] of table) {
      if (expected !== undefined) continue;
      const parser = mqttPacket.parser({ protocolVersion: 5 });
      const got: Packet[] = [];
      parser.on('packet', (p: Packet) => got.push(p));
      let error: Error | undefined;
      parser.on('error', (e: Error) => (error = e));
      parser.parse(bytes);
      expect(error, name).toBeUndefined();
      expect(got, name).toHaveLength(1);
    }
  });
});
