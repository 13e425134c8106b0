// Strict deep equality: prototypes (mqtt-packet's userProperties has none), Buffer contents,
// value types. Not vitest's toStrictEqual: it compares `constructor` members, and 'constructor'
// is a user property name like any other.
import { deepStrictEqual } from 'node:assert/strict';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import { decodeFast } from '../../src/mqtt/decode-fast.js';
import { decodePacket } from '../../src/mqtt/decode.js';

/** Fields both decoders must agree on. */
function view(p: mqttPacket.Packet): Record<string, unknown> {
  const q = p as mqttPacket.IPublishPacket;
  return p.cmd === 'publish'
    ? { cmd: q.cmd, topic: q.topic, payload: Buffer.from(q.payload as Buffer).toString('hex'), qos: q.qos, retain: q.retain, dup: q.dup, messageId: q.qos > 0 ? q.messageId : undefined, length: q.length, properties: q.properties }
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

/** Strings as clients send them: empty, ASCII, any code point (lone surrogates included), long. */
const text = fc.oneof(
  fc.constant(''),
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  // long, but within a two-byte length prefix (else mqtt-packet.generate writes garbage)
  fc.string({ unit: 'grapheme', minLength: 200, maxLength: 2000 }).filter((s) => Buffer.byteLength(s) <= 0xffff),
);

/**
 * User properties as mqtt-packet takes them: names from a small set so that they repeat,
 * some of them names of Object.prototype members.
 */
const userProperties = fc
  .array(fc.tuple(fc.oneof(fc.constantFrom('__ts', 'k', '', 'toString', 'constructor'), text), text), { minLength: 1, maxLength: 6 })
  .map((pairs) => {
    const out: Record<string, string | string[]> = Object.create(null);
    for (const [name, value] of pairs) {
      const earlier = out[name];
      out[name] = earlier === undefined ? value : Array.isArray(earlier) ? [...earlier, value] : [earlier, value];
    }
    return out;
  });

/** A random subset of the properties a PUBLISH carries, each at most once (user properties aside). */
const publishProperties = fc.record(
  {
    payloadFormatIndicator: fc.boolean(),
    messageExpiryInterval: fc.oneof(fc.constantFrom(0, 0xffffffff), fc.nat()),
    contentType: text,
    responseTopic: text,
    correlationData: fc.oneof(fc.constant(Buffer.alloc(0)), fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a))),
    topicAlias: fc.integer({ min: 0, max: 65535 }),
    subscriptionIdentifier: fc.oneof(fc.constantFrom(1, 127, 128, 16383, 16384, 268435455), fc.integer({ min: 1, max: 268435455 })),
    userProperties,
  },
  { requiredKeys: [] },
);

type PublishFields = typeof publish extends fc.Arbitrary<infer T> ? T : never;

/** A v5 PUBLISH with properties, as mqtt-packet generates it. */
function v5Publish(p: PublishFields, properties: Record<string, unknown>): Buffer {
  const fields = p.qos === 0 ? { ...p, messageId: undefined } : p;
  return mqttPacket.generate({ cmd: 'publish', ...fields, properties } as mqttPacket.IPublishPacket, { protocolVersion: 5 });
}

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

  it('on v5 PUBLISH with the properties a PUBLISH carries, down to their types and shapes', () => {
    fc.assert(
      fc.property(publish, publishProperties, (p, properties) => {
        const bytes = v5Publish(p, properties);
        const fast = decodeFast(bytes, 5);
        // fast-check likes to try '__proto__' as a name: left to mqtt-packet (a test below)
        // (no `return expect(...)`: fast-check reads a returned false as a failure)
        if (properties.userProperties && Object.hasOwn(properties.userProperties, '__proto__')) {
          expect(fast).toBeUndefined();
          return;
        }
        expect(fast).toBeDefined();
        deepStrictEqual(view(fast!), view(decodePacket(bytes, 5)));
      }),
      { numRuns: 1500 },
    );
  });

  it('whenever it answers for damaged v5 PUBLISH bytes, it answers what mqtt-packet answers', () => {
    // Overwrite a few bytes after the fixed header (the framing fixes the remaining length):
    // cut strings, unknown ids, lengths past the block or the packet, bad UTF-8.
    const damage = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 });
    let answered = 0;
    fc.assert(
      fc.property(publish, publishProperties, damage, (p, properties, edits) => {
        const bytes = v5Publish(p, properties);
        let header = 1;
        while (bytes[header]! & 0x80) header++;
        header++;
        if (bytes.length === header) return;
        for (const [at, value] of edits) bytes[header + (at % (bytes.length - header))] = value;
        const fast = decodeFast(bytes, 5);
        if (fast === undefined) return;
        answered++;
        deepStrictEqual(view(fast), view(decodePacket(bytes, 5)));
      }),
      { numRuns: 3000 },
    );
    expect(answered).toBeGreaterThan(300); // the property above was not vacuous
  });

  it('leaves malformed or unusual v5 property blocks to mqtt-packet', () => {
    const base = mqttPacket.generate({ cmd: 'publish', topic: 'a', payload: Buffer.from('xy'), qos: 0, retain: false, dup: false }, { protocolVersion: 5 });
    /** A v5 QoS 0 PUBLISH on topic 'a' whose variable header ends with `props`, then payload 'xy'. */
    const withBlock = (props: number[]) => Buffer.from([0x30, 3 + props.length + 2, 0x00, 0x01, 0x61, ...props, 0x78, 0x79]);
    expect(withBlock([0x00])).toEqual(base);
    const cases: Record<string, number[]> = {
      'unknown property id': [0x02, 0x7f, 0x00],
      'property id 0': [0x02, 0x00, 0x00],
      'a property PUBLISH does not carry (session expiry)': [0x05, 0x11, 0, 0, 0, 1],
      'repeated content type': [0x07, 0x03, 0x00, 0x01, 0x63, 0x03, 0x00, 0x00],
      'payload format indicator 2': [0x02, 0x01, 0x02],
      'string cut by the end of the block': [0x04, 0x03, 0x00, 0x03, 0x63],
      'string length past the packet': [0x04, 0x08, 0x00, 0x40, 0x63],
      'user property value cut': [0x06, 0x26, 0x00, 0x01, 0x6b, 0x00, 0x05],
      'message expiry cut by the block': [0x03, 0x02, 0x00, 0x00],
      'block length past the packet': [0x20, 0x01, 0x01],
      'block length longer than four bytes': [0x80, 0x80, 0x80, 0x80, 0x00],
      'subscription identifier longer than four bytes': [0x06, 0x0b, 0x80, 0x80, 0x80, 0x80, 0x01],
    };
    for (const [what, props] of Object.entries(cases)) {
      const bytes = withBlock(props);
      expect(decodeFast(bytes, 5), what).toBeUndefined();
    }
    // and mqtt-packet still decides: it refuses some, reads others leniently
    expect(() => decodePacket(withBlock(cases['unknown property id']!), 5)).toThrow(/Unknown property/);
    expect(() => decodePacket(withBlock(cases['property id 0']!), 5)).toThrow(/property code type/);
    expect((decodePacket(withBlock(cases['repeated content type']!), 5) as mqttPacket.IPublishPacket).properties?.contentType).toEqual(['c', '']);
  });

  it('reads a user property like mqtt-packet: an empty first value is overwritten, not collected', () => {
    // name 'k' three times with values '', 'x', 'y'
    const pair = (v: number[]) => [0x26, 0x00, 0x01, 0x6b, 0x00, v.length, ...v];
    const props = [...pair([]), ...pair([0x78]), ...pair([0x79])];
    const bytes = Buffer.from([0x30, 3 + 1 + props.length, 0x00, 0x01, 0x61, props.length, ...props]);
    const fast = decodeFast(bytes, 5) as mqttPacket.IPublishPacket;
    expect(fast.properties!.userProperties).toStrictEqual(Object.assign(Object.create(null), { k: ['x', 'y'] }));
    deepStrictEqual(view(fast), view(decodePacket(bytes, 5)));
  });

  it('leaves a user property named __proto__ to mqtt-packet', () => {
    const userProperties = Object.defineProperty({}, '__proto__', { value: 'v', enumerable: true });
    const bytes = mqttPacket.generate({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { userProperties } }, { protocolVersion: 5 });
    expect(decodeFast(bytes, 5)).toBeUndefined();
    const slow = decodePacket(bytes, 5) as mqttPacket.IPublishPacket;
    expect(Object.getOwnPropertyDescriptor(slow.properties!.userProperties, '__proto__')?.value).toBe('v');
  });

  it('keeps a non-minimal property length like mqtt-packet: an empty block, no properties', () => {
    const bytes = Buffer.from([0x30, 0x06, 0x00, 0x01, 0x61, 0x80, 0x00, 0x7a]);
    const fast = decodeFast(bytes, 5) as mqttPacket.IPublishPacket;
    expect(fast).toBeDefined();
    expect('properties' in fast).toBe(false);
    deepStrictEqual(view(fast), view(decodePacket(bytes, 5)));
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

  it('leaves everything else to mqtt-packet: ack reason codes, bad flags, QoS 3, other packets', () => {
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
    const v5 = mqttPacket.generate({ cmd: 'publish', topic: 't', payload: Buffer.from('abc'), qos: 0, retain: false, dup: false, properties: { correlationData: Buffer.from('id') } }, { protocolVersion: 5 });
    const q = decodeFast(v5, 5) as mqttPacket.IPublishPacket;
    v5.fill(0);
    expect([(q.payload as Buffer).toString(), q.properties!.correlationData!.toString()]).toEqual(['abc', 'id']);
  });
});

describe('decodeFast topic cache', () => {
  it('gives the topic of every PUBLISH from a small repeating set, including topics that differ in one byte, of one length, or collide in the cache', () => {
    // more topics than the cache has slots, many of one length: collisions and evictions happen
    const topics: string[] = [];
    for (let i = 0; i < 600; i++) topics.push(`s/${String(i).padStart(3, '0')}`);
    topics.push('ü/x', 'u/x', 'a'.repeat(96), 'a'.repeat(95) + 'b', 'a'.repeat(97), '\uFFFD', 'x/\u00e9');
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: topics.length - 1 }), { minLength: 50, maxLength: 400 }), (picks) => {
        for (const k of picks) {
          const topic = topics[k]!;
          const bytes = mqttPacket.generate({ cmd: 'publish', topic, payload: Buffer.from('p'), qos: 0, retain: false, dup: false });
          const p = decodeFast(bytes, 4) as mqttPacket.IPublishPacket;
          expect(p.topic).toBe(topic);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('hands a repeated topic out as the same string', () => {
    const bytes = mqttPacket.generate({ cmd: 'publish', topic: 'plant/line1/temp', payload: Buffer.from('1'), qos: 0, retain: false, dup: false });
    const a = (decodeFast(bytes, 4) as mqttPacket.IPublishPacket).topic;
    const b = (decodeFast(Buffer.from(bytes), 4) as mqttPacket.IPublishPacket).topic;
    expect(b).toBe(a);
    expect(b).toBe('plant/line1/temp');
  });
});
