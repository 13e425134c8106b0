/**
 * Decoding one whole MQTT packet with mqtt-packet, sharing one parser per protocol version
 * across every connection. The broker frames the byte stream itself (broker/framing.ts),
 * so the parser only ever sees complete packets and holds no state between calls; a
 * parser per connection (an EventEmitter and a BufferList each) would cost memory for
 * every idle client and time for every packet.
 */
import mqttPacket from 'mqtt-packet';
import type { Packet, Parser } from 'mqtt-packet';

// mqtt-packet's generate() builds, on its first call, a cache of 65,536 two-byte Buffers (one
// per packet identifier): about 6 MB of heap that stays for the life of the process, while the
// broker encodes PUBLISH and acks itself (encode-publish.ts) and generates only the rare other
// packets with mqtt-packet. Its identifiers are written on the fly instead. (One module instance
// is shared by every importer, so this holds for outbound.ts too.)
mqttPacket.writeToStream.cacheNumbers = false;

type Version = 3 | 4 | 5;

let decoded: Packet | undefined;
let failure: Error | undefined;

function makeParser(protocolVersion: Version): Parser {
  const p = mqttPacket.parser({ protocolVersion });
  p.on('packet', (packet: Packet) => {
    decoded = packet;
  });
  p.on('error', (err: Error) => {
    failure = err;
  });
  return p;
}

const parsers: Record<Version, Parser> = { 3: makeParser(3), 4: makeParser(4), 5: makeParser(5) };

/**
 * Decode exactly one packet (`bytes` holds it whole) for a connection speaking
 * `protocolVersion` (4 before CONNECT: CONNECT says its own version). Throws the
 * parser's error for a malformed packet. Only the parser's public API is used: parse()
 * returns the bytes it has not consumed, which must be none.
 */
export function decodePacket(bytes: Buffer, protocolVersion: Version): Packet {
  const parser = parsers[protocolVersion];
  decoded = undefined;
  failure = undefined;
  const left = parser.parse(bytes);
  const packet = decoded as Packet | undefined;
  const error = failure as Error | undefined;
  decoded = undefined;
  failure = undefined;
  if (error || !packet || left > 0) {
    // After an error (or when the framing said "whole packet" and the parser disagrees) the
    // parser is mid-packet: replace it, so no state leaks to the next client.
    parsers[protocolVersion] = makeParser(protocolVersion);
    throw error ?? new Error('malformed packet');
  }
  // a CONNECT makes the parser read what follows with the CONNECT's own settings (its protocol
  // version): the next connection gets a fresh parser (one per CONNECT, never per PUBLISH)
  if (packet.cmd === 'connect') parsers[protocolVersion] = makeParser(protocolVersion);
  return packet;
}
