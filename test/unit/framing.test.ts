import { describe, expect, it } from 'vitest';
import mqttPacket from 'mqtt-packet';
import { FRAME_INCOMPLETE, FRAME_MALFORMED, frameLength } from '../../src/broker/framing.js';
import { publishTopicBytes } from '../../src/mqtt/strings.js';

describe('frameLength', () => {
  it.each([
    [[0xc0, 0x00], 2, 0],
    [[0x30, 0x7f], 2 + 127, 127],
    [[0x30, 0x80, 0x01], 3 + 128, 128],
    [[0x30, 0xff, 0x7f], 3 + 16383, 16383],
    [[0x30, 0x80, 0x80, 0x01], 4 + 16384, 16384],
    [[0x30, 0xff, 0xff, 0xff, 0x7f], 5 + 268435455, 268435455],
  ])('%j -> %i bytes', (bytes, total, remaining) => {
    const out = { remaining: -1 };
    expect(frameLength(Buffer.from(bytes), 0, out)).toBe(total);
    expect(out.remaining).toBe(remaining);
  });

  it('needs more bytes for a header cut short', () => {
    const out = { remaining: 0 };
    expect(frameLength(Buffer.from([0x30]), 0, out)).toBe(FRAME_INCOMPLETE);
    expect(frameLength(Buffer.from([0x30, 0x80]), 0, out)).toBe(FRAME_INCOMPLETE);
  });

  it('refuses a Remaining Length over four bytes [MQTT-5-1.5.5]', () => {
    expect(frameLength(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), 0, { remaining: 0 })).toBe(FRAME_MALFORMED);
  });

  it('reads at an offset', () => {
    const buf = Buffer.from([0xd0, 0x00, 0x30, 0x02, 0x00, 0x00]);
    expect(frameLength(buf, 2, { remaining: 0 })).toBe(4);
  });
});

describe('publishTopicBytes', () => {
  it.each([
    ['a/b', 10],
    ['caf\u00e9/\u6e29', 200],
    ['t', 20_000], // 3-byte Remaining Length
  ])('%j with a %i-byte payload', (topic, size) => {
    for (const protocolVersion of [4, 5] as const) {
      const frame = mqttPacket.generate({ cmd: 'publish', topic, payload: Buffer.alloc(size), qos: 1, messageId: 1, retain: false, dup: false }, { protocolVersion });
      expect(publishTopicBytes(frame)).toEqual(Buffer.from(topic, 'utf8'));
    }
  });
});
