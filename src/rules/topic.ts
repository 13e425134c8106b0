/** MQTT topic names and filters as fr_script uses them: the broker's rules (topics/), and no shared subscriptions. */
import { topicFilterProblem as mqttFilterProblem } from '../topics/validate.js';

/** Why a topic filter is invalid for a rule, or undefined when it is valid. */
export function topicFilterProblem(filter: string): string | undefined {
  const problem = mqttFilterProblem(filter);
  if (problem !== undefined) return problem;
  if (filter.startsWith('$share/')) return 'shared subscriptions are not topic filters for rules';
  return undefined;
}

/** Why a string cannot be (part of) a topic name, or undefined. */
export { topicNameProblem } from '../topics/validate.js';

/** Does `topic` match `filter`? The plain reference (the engine walks a trie): the broker's own. */
export { topicMatches } from '../topics/match.js';
