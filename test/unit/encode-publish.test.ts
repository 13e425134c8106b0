import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import { encodePublish, measurePublish, writePublishAt, type PublishFields } from '../../src/mqtt/encode-publish.js';

// any text, and ASCII around the 64-character boundary of the encoder's copy loop
const text = fc.oneof(fc.string({ unit: 'grapheme', maxLength: 40 }), fc.string({ unit: 'grapheme-ascii', minLength: 55, maxLength: 75 }), fc.string({ unit: 'grapheme-ascii', maxLength: 130 }));
const properties = fc.record(
  {
    payloadFormatIndicator: fc.boolean(),
    messageExpiryInterval: fc.integer({ min: 0, max: 0xffffffff }),
    topicAlias: fc.integer({ min: 1, max: 65535 }),
    responseTopic: text.filter((s) => s.length > 0),
    correlationData: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
    userProperties: fc.dictionary(text.filter((s) => s.length > 0), fc.oneof(text, fc.array(text, { minLength: 1, maxLength: 3 })), { minKeys: 1, maxKeys: 3 }),
    subscriptionIdentifier: fc.oneof(fc.integer({ min: 1, max: 268435455 }), fc.array(fc.integer({ min: 1, max: 268435455 }), { minLength: 1, maxLength: 3 })),
    contentType: text,
  },
  { requiredKeys: [] },
);

const publish = fc.record({
  topic: text.filter((s) => s.length > 0),
  payload: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  qos: fc.constantFrom(0 as const, 1 as const, 2 as const),
  retain: fc.boolean(),
  dup: fc.boolean(),
  messageId: fc.integer({ min: 1, max: 65535 }),
  properties,
});

describe('encodePublish', () => {
  it('is byte-identical to mqtt-packet generate() for v3.1.1 and v5', () => {
    fc.assert(
      fc.property(publish, fc.constantFrom(4 as const, 5 as const), (p, version) => {
        const fields: PublishFields = { ...p, ...(p.qos === 0 ? { messageId: undefined } : {}) } as PublishFields;
        if (p.qos === 0) delete fields.messageId;
        const expected = mqttPacket.generate({ cmd: 'publish', ...fields }, { protocolVersion: version });
        expect(encodePublish(fields, version).toString('hex')).toBe(expected.toString('hex'));
      }),
      { numRuns: 2000 },
    );
  });

  it('round-trips through the mqtt-packet parser, including a multi-byte Remaining Length', () => {
    const payload = Buffer.alloc(200_000, 7);
    const bytes = encodePublish({ topic: 'big/one', payload, qos: 1, retain: true, dup: false, messageId: 9, properties: { contentType: 'x' } }, 5);
    const parser = mqttPacket.parser({ protocolVersion: 5 });
    const got: mqttPacket.Packet[] = [];
    parser.on('packet', (pk) => got.push(pk));
    parser.parse(bytes);
    expect(got).toHaveLength(1);
    const pk = got[0] as mqttPacket.IPublishPacket;
    expect(pk.topic).toBe('big/one');
    expect(pk.messageId).toBe(9);
    expect(pk.retain).toBe(true);
    expect((pk.payload as Buffer).equals(payload)).toBe(true);
    expect(pk.properties?.contentType).toBe('x');
  });
});

describe('measurePublish + writePublishAt (in place)', () => {
  it('write at an offset of a larger buffer what encodePublish returns, and nothing outside it', () => {
    fc.assert(
      fc.property(publish, fc.constantFrom(4 as const, 5 as const), fc.integer({ min: 0, max: 40 }), (p, version, at) => {
        const fields: PublishFields = { ...p } as PublishFields;
        if (p.qos === 0) delete fields.messageId;
        const expected = encodePublish(fields, version);
        const size = measurePublish(fields, version);
        expect(size).toBe(expected.length);
        const buf = Buffer.alloc(at + size + 8, 0xee);
        expect(writePublishAt(buf, at, fields, version)).toBe(at + size);
        expect(buf.subarray(at, at + size).equals(expected)).toBe(true);
        expect(buf.subarray(0, at).every((b) => b === 0xee)).toBe(true);
        expect(buf.subarray(at + size).every((b) => b === 0xee)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});
