import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import { decodeFast } from '../../src/mqtt/decode-fast.js';
import { decodePacket } from '../../src/mqtt/decode.js';

/** Fields both decoders must agree on. */
function view(p: mqttPacket.Packet): Record<string, unknown> {
  const q = p as mqttPacket.IPublishPacket;
  return p.cmd === 'publish'
    ? { cmd: q.cmd, topic: q.topic, payload: Buffer.from(q.payload as Buffer).toString('hex'), qos: q.qos, retain: q.retain, dup: q.dup, messageId: q.qos > 0 ? q.messageId : undefined, length: q.length }
    : { cmd: p.cmd, messageId: p.messageId, length: p.length };
}

const publish = fc.record({
  topic: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }),
  payload: fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a)),
  qos: fc.constantFrom(0 as const, 1 as const, 2 as const),
  retain: fc.boolean(),
  dup: fc.boolean(),
  messageId: fc.integer({ min: 1, max: 65535 }),
});

describe('decodeFast agrees with mqtt-packet', () => {
  it('on PUBLISH without properties, 3.1.1 and 5', () => {
    fc.assert(
      fc.property(publish, fc.constantFrom(4 as const, 5 as const), (p, version) => {
        const fields = p.qos === 0 ? { ...p, messageId: undefined } : p;
        const bytes = mqttPacket.generate({ cmd: 'publish', ...fields }, { protocolVersion: version });
        const fast = decodeFast(bytes, version);
        expect(fast).toBeDefined();
        expect(view(fast!)).toEqual(view(decodePacket(bytes, version)));
      }),
      { numRuns: 1500 },
    );
  });

  it('on acks with a bare packet identifier', () => {
    fc.assert(
      fc.property(fc.constantFrom('puback' as const, 'pubrec' as const, 'pubrel' as const, 'pubcomp' as const), fc.integer({ min: 0, max: 65535 }), fc.constantFrom(4 as const, 5 as const), (cmd, id, version) => {
        const bytes = mqttPacket.generate({ cmd, messageId: id }, { protocolVersion: version });
        const fast = decodeFast(bytes, version);
        expect(fast).toBeDefined();
        expect(view(fast!)).toEqual(view(decodePacket(bytes, version)));
      }),
    );
  });

  it('leaves everything else to mqtt-packet: properties, reason codes, bad flags, QoS 3, other packets', () => {
    const v5WithProps = mqttPacket.generate({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false, properties: { contentType: 'c' } }, { protocolVersion: 5 });
    expect(decodeFast(v5WithProps, 5)).toBeUndefined();
    const ackWithReason = mqttPacket.generate({ cmd: 'puback', messageId: 3, reasonCode: 0x10 }, { protocolVersion: 5 });
    expect(decodeFast(ackWithReason, 5)).toBeUndefined();
    expect(decodeFast(Buffer.from([0x60, 0x02, 0x00, 0x01]), 4)).toBeUndefined(); // PUBREL with flags 0000
    expect(decodeFast(Buffer.from([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]), 4)).toBeUndefined(); // QoS 3
    expect(decodeFast(Buffer.from([0x62, 0x00]), 4)).toBeUndefined(); // PUBREL without an id
    expect(decodeFast(Buffer.from([0x32, 0x03, 0x00, 0x01, 0x61]), 4)).toBeUndefined(); // QoS 1 cut before its id
    expect(decodeFast(Buffer.from([0xc0, 0x00]), 4)).toBeUndefined(); // PINGREQ
  });

  it('copies the payload out of the socket chunk', () => {
    const chunk = mqttPacket.generate({ cmd: 'publish', topic: 't', payload: Buffer.from('abc'), qos: 0, retain: false, dup: false }, { protocolVersion: 4 });
    const p = decodeFast(chunk, 4) as mqttPacket.IPublishPacket;
    chunk.fill(0);
    expect((p.payload as Buffer).toString()).toBe('abc');
  });
});
