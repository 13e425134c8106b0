/**
 * UTF-8 Encoded Strings in a decoded packet: [MQTT-5-1.5.4-1] they must be well-formed UTF-8 and
 * [MQTT-5-1.5.4-2] must not contain U+0000; a packet breaking either is malformed.
 *
 * mqtt-packet and decode-fast decode strings leniently: ill-formed bytes become U+FFFD. So a
 * string is only looked at closely when it holds U+FFFD: re-encoded, a string decoded from
 * well-formed bytes appears in the packet's bytes as it is; one decoded from ill-formed bytes
 * does not (its U+FFFD re-encodes to EF BF BD where the packet had something else). Strings
 * without U+FFFD cost one `includes` each.
 *
 * Topic names and filters are left out of the U+0000 check: topic validation refuses U+0000
 * there with its own reason codes (0x90 for a PUBLISH, 0x8F per subscription).
 */
import { isUtf8 } from 'node:buffer';
import type { Packet } from 'mqtt-packet';

const REPLACEMENT = '\uFFFD';
const NUL = '\u0000';

/** The Topic Name bytes of a whole PUBLISH frame: after the fixed header, a two-byte length and the name. */
export function publishTopicBytes(frame: Buffer): Buffer {
  let pos = 1;
  while (pos < 4 && (frame[pos]! & 0x80) !== 0) pos++; // Remaining Length: 1 to 4 bytes
  pos++;
  const length = frame.readUInt16BE(pos);
  return frame.subarray(pos + 2, pos + 2 + length);
}

/** A string decoded from bytes that were not well-formed UTF-8. */
function illFormed(s: string, frame: Buffer): boolean {
  return s.includes(REPLACEMENT) && !frame.includes(Buffer.from(s, 'utf8'));
}

function badString(s: unknown, frame: Buffer, nulAllowed = false): boolean {
  if (typeof s !== 'string') return false;
  return (!nulAllowed && s.includes(NUL)) || illFormed(s, frame);
}

/** The properties' strings: user property names and values, reason strings, content types... */
function badProperties(properties: Record<string, unknown> | undefined, frame: Buffer): string | undefined {
  if (!properties) return undefined;
  for (const name in properties) {
    const value = properties[name];
    if (name === 'userProperties' && value !== null && typeof value === 'object') {
      const pairs = value as Record<string, string | string[]>;
      for (const key in pairs) {
        if (badString(key, frame)) return 'user property name';
        const v = pairs[key];
        if (Array.isArray(v) ? v.some((x) => badString(x, frame)) : badString(v, frame)) return 'user property value';
      }
    } else if (badString(value, frame)) return name;
  }
  return undefined;
}

/**
 * The first UTF-8 Encoded String of `packet` (decoded from `frame`) that is not well-formed or
 * holds U+0000, by field name; undefined when all are fine.
 */
export function malformedString(packet: Packet, frame: Buffer): string | undefined {
  switch (packet.cmd) {
    case 'publish':
      // the topic's bytes are at a known place: checked exactly
      if (packet.topic.includes(REPLACEMENT) && !isUtf8(publishTopicBytes(frame))) return 'topic name';
      return badProperties(packet.properties as Record<string, unknown> | undefined, frame);
    case 'connect': {
      if (badString(packet.clientId, frame)) return 'client identifier';
      if (badString(packet.username, frame)) return 'user name';
      const will = packet.will;
      if (will) {
        if (illFormed(will.topic, frame)) return 'will topic';
        const bad = badProperties(will.properties as Record<string, unknown> | undefined, frame);
        if (bad) return `will ${bad}`;
      }
      return badProperties(packet.properties as Record<string, unknown> | undefined, frame);
    }
    case 'subscribe':
      for (const s of packet.subscriptions) if (illFormed(s.topic, frame)) return 'topic filter';
      return badProperties(packet.properties as Record<string, unknown> | undefined, frame);
    case 'unsubscribe':
      for (const f of packet.unsubscriptions) if (illFormed(f, frame)) return 'topic filter';
      return badProperties(packet.properties as Record<string, unknown> | undefined, frame);
    default:
      return badProperties((packet as { properties?: Record<string, unknown> }).properties, frame);
  }
}
