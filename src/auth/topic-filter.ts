/**
 * MQTT topic filter helpers for the ACL: matching a topic name against a filter, and
 * deciding whether one filter is contained in another (for SUBSCRIBE authorization).
 * Filters and topics are handled as arrays of levels, split once.
 */

/** Whether `filter` is a syntactically valid topic filter. [MQTT-4.7.1-2] [MQTT-4.7.1-3] */
export function validFilter(filter: string): boolean {
  if (filter.length === 0 || filter.length > 65535 || filter.includes('\0')) return false;
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    if (level === '#') {
      if (i !== levels.length - 1) return false;
    } else if (level === '+') {
      continue;
    } else if (level.includes('#') || level.includes('+')) {
      return false;
    }
  }
  return true;
}

/** Whether a topic name (no wildcards) matches the filter, both given as levels. */
export function matchLevels(filter: readonly string[], topic: readonly string[]): boolean {
  // [MQTT-4.7.2-1] a filter starting with a wildcard does not match a topic starting with '$'
  if (topic.length > 0 && topic[0]!.startsWith('$') && (filter[0] === '+' || filter[0] === '#')) return false;
  const n = filter.length;
  for (let i = 0; i < n; i++) {
    const f = filter[i]!;
    if (f === '#') return true; // [MQTT-4.7.1-2] '#' also matches the parent level: "a/#" matches "a"
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
  if (inner.length === n) return true;
  // outer ended; inner "x/#" still matches "x" (outer) but also "x/y" (not outer)
  return false;
}

/** `$share/<group>/<filter>` -> { group, filter }, or undefined for an ordinary filter. */
export function parseSharedFilter(filter: string): { group: string; filter: string } | undefined {
  if (!filter.startsWith('$share/')) return undefined;
  const slash = filter.indexOf('/', 7);
  if (slash < 0) return undefined;
  return { group: filter.slice(7, slash), filter: filter.slice(slash + 1) };
}
