/**
 * Matching topic names against topic filters (MQTT section 4.7), for the ACL and as the
 * reference the subscription trie (trie.ts, the fast path) is tested against, and whether one
 * filter is contained in another (SUBSCRIBE authorization). Filters and topics as arrays of
 * levels are split once by the caller.
 */

/** Does `topic` match `filter`? */
export function topicMatches(filter: string, topic: string): boolean {
  return matchLevels(filter.split('/'), topic.split('/'));
}

/** Whether a topic name (no wildcards) matches the filter, both given as levels. */
export function matchLevels(filter: readonly string[], topic: readonly string[]): boolean {
  // [MQTT-5-4.7.2-1] a filter starting with a wildcard does not match a topic starting with '$'
  if (topic.length > 0 && topic[0]!.startsWith('$') && (filter[0] === '+' || filter[0] === '#')) return false;
  const n = filter.length;
  for (let i = 0; i < n; i++) {
    const f = filter[i]!;
    if (f === '#') return true; // [MQTT-5-4.7.1-2] '#' also matches the parent level: "a/#" matches "a"
    if (i >= topic.length) return false;
    if (f !== '+' && f !== topic[i]) return false;
  }
  return topic.length === n;
}

/**
 * Whether every topic matched by `inner` is also matched by `outer` (both filters, as levels).
 * "a/+/c" is within "a/#" and "a/+/+"; "a/#" is within "#" but not within "a/+".
 */
export function filterWithin(inner: readonly string[], outer: readonly string[]): boolean {
  if (inner.length > 0 && inner[0]!.startsWith('$') && (outer[0] === '+' || outer[0] === '#')) return false;
  const n = outer.length;
  for (let i = 0; i < n; i++) {
    const o = outer[i]!;
    if (o === '#') return true;
    if (i >= inner.length) return false;
    const s = inner[i]!;
    if (s === '#') return false; // inner covers deeper levels and the parent; outer does not
    if (o === '+') continue;
    if (s === '+' || s !== o) return false;
  }
  // outer ended; inner "x/#" still matches "x" (outer) but also "x/y" (not outer)
  return inner.length === n;
}
