/**
 * Topic name and topic filter rules of MQTT 3.1.1 / 5.0 (section 4.7), and shared subscription
 * filters (5.0 section 4.8.2): the one place the broker, the ACL, the rules engine and the
 * state store take them from. Matching is in match.ts, the subscription trie in trie.ts.
 */

const MAX_TOPIC_BYTES = 65535;

/**
 * Control characters: U+0000 is never allowed [MQTT-5-4.7.3-2]; U+0001-U+001F and U+007F-U+009F
 * a receiver may treat as malformed [MQTT-5-1.5.4], and libmosquitto does: a client on it drops
 * the connection on the first such topic it receives. So the broker refuses them in topic names
 * and filters, as mosquitto's broker does, and never stores or forwards one.
 */
function isControl(c: number): boolean {
  return c < 0x20 || (c >= 0x7f && c <= 0x9f);
}

/** Does `s` hold a control character (see isControl)? */
export function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (isControl(s.charCodeAt(i))) return true;
  return false;
}

/**
 * A topic that can be sent at all: well-formed UTF-16 (a lone surrogate has no UTF-8 form
 * [MQTT-5-1.5.4-1]; only topics made inside the broker, by rules or the HTTP API, can hold one)
 * and at most 65,535 bytes of UTF-8 [MQTT-5-1.5.4], the most a two-byte length can say.
 */
export function encodable(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c > 0xdbff) return false; // a low surrogate alone
    const next = s.charCodeAt(i + 1);
    if (!(next >= 0xdc00 && next <= 0xdfff)) return false; // a high surrogate alone
    i++;
  }
  return s.length <= MAX_TOPIC_BYTES / 3 || Buffer.byteLength(s) <= MAX_TOPIC_BYTES;
}

/** [MQTT-5-4.7.3-1] at least one character; no control characters (above); names carry no wildcards [MQTT-5-3.3.2-2]. */
export function isValidTopicName(topic: string): boolean {
  // the topic checked last, when it is the same string again (decode-fast hands a publisher's
  // repeated topic out as one string): a pointer comparison instead of the scan
  if (topic === lastValidTopic) return true;
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > MAX_TOPIC_BYTES) return false;
  for (let i = 0; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    if (c === 0x23 /* # */ || c === 0x2b /* + */ || isControl(c)) return false;
  }
  if (!encodable(topic)) return false;
  lastValidTopic = topic;
  return true;
}

let lastValidTopic = '\u0000'; // never valid itself

/**
 * [MQTT-5-4.7.1-2] `#` only alone as the last level; [MQTT-5-4.7.1-3] `+` only alone in a level;
 * no control characters (see isControl).
 */
export function isValidTopicFilter(filter: string): boolean {
  if (typeof filter !== 'string' || filter.length === 0 || filter.length > MAX_TOPIC_BYTES) return false;
  if (hasControlCharacter(filter) || !encodable(filter)) return false;
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) return false;
    if (level.includes('+') && level !== '+') return false;
  }
  return true;
}

export interface SharedFilter {
  group: string;
  filter: string;
}

/**
 * `$share/{ShareName}/{filter}` [MQTT-5-4.8.2-1]: the share name has at least one character
 * and no `/`, `+` or `#` [MQTT-5-4.8.2-2]. Returns undefined for a non-shared filter and null
 * for a malformed shared one.
 */
export function parseSharedFilter(filter: string): SharedFilter | undefined | null {
  if (!filter.startsWith('$share/')) return undefined;
  const rest = filter.slice(7);
  const slash = rest.indexOf('/');
  if (slash <= 0) return null;
  const group = rest.slice(0, slash);
  const inner = rest.slice(slash + 1);
  if (group.includes('+') || group.includes('#')) return null;
  if (!isValidTopicFilter(inner)) return null;
  return { group, filter: inner };
}

const CONTROL = 'contains no control characters (U+0000-U+001F, U+007F-U+009F)';
const LONE_SURROGATE = 'is not valid Unicode (a lone surrogate)';

/**
 * Why `filter` is not a valid topic filter, or undefined when it is: the checks of
 * isValidTopicFilter, with a sentence a user can act on (rules documents, ACL files).
 */
export function topicFilterProblem(filter: string): string | undefined {
  if (filter.length === 0) return 'a topic filter has at least one character'; // [MQTT-5-4.7.3-1]
  if (Buffer.byteLength(filter) > MAX_TOPIC_BYTES) return 'a topic filter is at most 65535 bytes';
  if (hasControlCharacter(filter)) return `a topic filter ${CONTROL}`; // [MQTT-5-4.7.3-2], [MQTT-5-1.5.4]
  if (!encodable(filter)) return `a topic filter ${LONE_SURROGATE}`;
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    // [MQTT-5-4.7.1-2] '#' alone, last; [MQTT-5-4.7.1-3] '+' alone in its level
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) return `'#' must be a whole level and the last one (level ${i + 1})`;
    if (level.includes('+') && level !== '+') return `'+' must be a whole level (level ${i + 1})`;
  }
  return undefined;
}

/**
 * Why `topic` cannot be (part of) a topic name, or undefined: no wildcards [MQTT-5-3.3.2-2], no
 * control characters, valid Unicode, at most 65535 bytes. An empty string passes: it may be a
 * part (the rules engine builds topics from parts); a whole name needs isValidTopicName.
 */
export function topicNameProblem(topic: string): string | undefined {
  if (topic.includes('+') || topic.includes('#')) return 'a topic name has no wildcards'; // [MQTT-5-3.3.2-2]
  if (hasControlCharacter(topic)) return `a topic name ${CONTROL}`;
  if (!encodable(topic)) return `a topic name ${LONE_SURROGATE}`;
  if (Buffer.byteLength(topic) > MAX_TOPIC_BYTES) return 'a topic name is at most 65535 bytes';
  return undefined;
}
