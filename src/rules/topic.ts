/** MQTT topic names and filters as fr_script uses them (MQTT 5.0 section 4.7). */
import { encodable, hasControlCharacter } from '../topics/validate.js';

const CONTROL = 'contains no control characters (U+0000-U+001F, U+007F-U+009F)';
const LONE_SURROGATE = 'is not valid Unicode (a lone surrogate)';

/** Why a topic filter is invalid, or undefined when it is valid. */
export function topicFilterProblem(filter: string): string | undefined {
  if (filter.length === 0) return 'a topic filter has at least one character'; // [MQTT-4.7.3-1]
  if (Buffer.byteLength(filter) > 65535) return 'a topic filter is at most 65535 bytes';
  if (hasControlCharacter(filter)) return `a topic filter ${CONTROL}`; // [MQTT-4.7.3-2], [MQTT-5-1.5.4]
  if (!encodable(filter)) return `a topic filter ${LONE_SURROGATE}`;
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    // [MQTT-4.7.1-2] '#' alone, last; [MQTT-4.7.1-3] '+' alone in its level
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) return `'#' must be a whole level and the last one (level ${i + 1})`;
    if (level.includes('+') && level !== '+') return `'+' must be a whole level (level ${i + 1})`;
  }
  if (filter.startsWith('$share/')) return 'shared subscriptions are not topic filters for rules';
  return undefined;
}

/** Why a string cannot be (part of) a topic name, or undefined. */
export function topicNameProblem(topic: string): string | undefined {
  if (topic.includes('+') || topic.includes('#')) return 'a topic name has no wildcards'; // [MQTT-3.3.2-2]
  if (hasControlCharacter(topic)) return `a topic name ${CONTROL}`;
  if (!encodable(topic)) return `a topic name ${LONE_SURROGATE}`;
  if (Buffer.byteLength(topic) > 65535) return 'a topic name is at most 65535 bytes';
  return undefined;
}

/** Does `topic` match `filter`? The plain reference (the engine walks a trie): the broker's own. */
export { topicMatches } from '../topics/validate.js';
