/**
 * Decoding one whole MQTT packet with mqtt-packet, sharing one parser per protocol version
 * across every connection. The broker frames the byte stream itself (broker/framing.ts),
 * so the parser only ever sees complete packets and holds no state between calls; a
 * parser per connection (an EventEmitter and a BufferList each) would cost memory for
 * every idle client and time for every packet.
 */
import mqttPacket from 'mqtt-packet';
import type { Packet, Parser } from 'mqtt-packet';

type Version = 3 | 4 | 5;

/** The parser fields we look at; mqtt-packet keeps them public on the instance. */
interface ParserState {
  settings: { protocolVersion: Version };
  _list: { length: number };
  _stateCounter: number;
}

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
 * parser's error for a malformed packet.
 */
export function decodePacket(bytes: Buffer, protocolVersion: Version): Packet {
  const parser = parsers[protocolVersion];
  const state = parser as unknown as ParserState;
  decoded = undefined;
  failure = undefined;
  parser.parse(bytes);
  // CONNECT replaces the parser's settings with the packet: put the shared ones back
  state.settings = { protocolVersion };
  const packet = decoded as Packet | undefined;
  const error = failure as Error | undefined;
  decoded = undefined;
  failure = undefined;
  if (error || !packet || state._list.length > 0 || state._stateCounter !== 0) {
    // After an error (or when the framing said "whole packet" and the parser disagrees) the
    // parser's cursor is not reliably reset: replace it, so no state leaks to the next client.
    parsers[protocolVersion] = makeParser(protocolVersion);
    throw error ?? new Error('malformed packet');
  }
  return packet;
}

/** What is wrong with a decoded packet's properties: the reason code to answer and why. */
export interface PropertyProblem {
  reasonCode: 0x81 | 0x82;
  reason: string;
}

function checkProperties(props: Record<string, unknown>, where: string): PropertyProblem | undefined {
  for (const name in props) {
    const value = props[name];
    // a String or Binary Data cut short by its packet: mqtt-packet gives null, and a retained
    // message holding it would break the encoder for every later subscriber
    if (value === null || value === undefined) return { reasonCode: 0x81, reason: `${where}${name} cut short` };
    if (name === 'userProperties') {
      for (const key in value as Record<string, unknown>) {
        const v = (value as Record<string, unknown>)[key];
        const values = Array.isArray(v) ? v : [v];
        if (values.some((x) => typeof x !== 'string')) return { reasonCode: 0x81, reason: `${where}user property ${JSON.stringify(key)} cut short` };
      }
    } else if (Array.isArray(value)) {
      // "It is a Protocol Error to include the <property> more than once" (every property of a
      // client's packets but User Property); mqtt-packet gives an array instead of refusing it
      return { reasonCode: 0x82, reason: `${where}${name} more than once` };
    }
  }
  return undefined;
}

/**
 * Properties mqtt-packet let through that the broker must refuse (decode-fast leaves every such
 * packet to mqtt-packet): a property given twice where only User Property may repeat (0x82),
 * and a string or binary value cut short, which mqtt-packet reads as null (0x81).
 */
export function propertyProblem(packet: Packet): PropertyProblem | undefined {
  const props = (packet as { properties?: Record<string, unknown> }).properties;
  const problem = props ? checkProperties(props, '') : undefined;
  if (problem) return problem;
  const will = (packet as { will?: { properties?: Record<string, unknown> } }).will?.properties;
  return will ? checkProperties(will, 'will ') : undefined;
}
