/**
 * Splits a byte stream into whole MQTT packets by their fixed header, before any parsing,
 * so an oversized packet is refused from its header alone (never buffered) and the
 * reader can stop between two packets when flow control pauses the connection.
 */

export const FRAME_INCOMPLETE = -1;
export const FRAME_MALFORMED = -2;

/**
 * Length in bytes of the packet starting at `offset`, FRAME_INCOMPLETE when more bytes are
 * needed to know, FRAME_MALFORMED for a Remaining Length over 4 bytes [MQTT-5-1.5.5].
 * `remaining` receives the Remaining Length.
 */
export function frameLength(buf: Buffer, offset: number, out: { remaining: number }): number {
  let multiplier = 1;
  let value = 0;
  let pos = offset + 1;
  for (let i = 0; i < 4; i++) {
    if (pos >= buf.length) return FRAME_INCOMPLETE;
    const byte = buf[pos++]!;
    value += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) {
      out.remaining = value;
      return pos - offset + value;
    }
    multiplier *= 128;
  }
  return FRAME_MALFORMED;
}
