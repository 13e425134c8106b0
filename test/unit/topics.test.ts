import { describe, expect, it } from 'vitest';
import { isValidTopicFilter, isValidTopicName, parseSharedFilter } from '../../src/topics/validate.js';
import { topicMatches } from '../../src/topics/match.js';

describe('topic names [MQTT-5-4.7.3]', () => {
  it.each([
    ['a', true],
    ['a/b/c', true],
    ['/', true],
    ['/a', true],
    ['a/', true],
    ['a//b', true],
    ['$SYS/broker', true],
    ['caf\u00e9/\u6e29\u5ea6', true],
    ['', false], // [MQTT-5-4.7.3-1]
    ['a/+', false], // [MQTT-5-3.3.2-2] no wildcards in a topic name
    ['a/#', false],
    ['+', false],
    ['a+b', false],
    ['a\u0000b', false], // [MQTT-5-4.7.3-2]
    ['x'.repeat(65535), true],
    ['x'.repeat(65536), false],
  ])('%j -> %s', (topic, valid) => {
    expect(isValidTopicName(topic)).toBe(valid);
  });
});

describe('topic filters [MQTT-5-4.7.1]', () => {
  it.each([
    ['a', true],
    ['#', true],
    ['+', true],
    ['a/#', true],
    ['a/+/c', true],
    ['+/+', true],
    ['/+', true],
    ['+/', true],
    ['$SYS/#', true],
    ['a//#', true],
    ['', false],
    ['a/#/c', false], // [MQTT-5-4.7.1-2] # only last
    ['a#', false],
    ['a/b#', false],
    ['#/', false],
    ['a+', false], // [MQTT-5-4.7.1-3] + alone in its level
    ['a/+b/c', false],
    ['++', false],
    ['a/\u0000', false],
  ])('%j -> %s', (filter, valid) => {
    expect(isValidTopicFilter(filter)).toBe(valid);
  });
});

describe('matching [MQTT-5-4.7]', () => {
  it.each([
    // filter, topic, matches
    ['a/b', 'a/b', true],
    ['a/b', 'a/c', false],
    ['a/b', 'a/b/c', false],
    ['a/b/c', 'a/b', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a/', true], // + matches an empty level
    ['a/+', 'a', false],
    ['a/+', 'a/b/c', false],
    ['+/+', '/x', true],
    ['+', '/x', false],
    ['/+', '/x', true],
    ['+/b/+', 'a/b/c', true],
    ['a/#', 'a', true], // '#' also matches the parent level
    ['a/#', 'a/b', true],
    ['a/#', 'a/b/c/d', true],
    ['a/#', 'ab', false],
    ['a/#', 'b/a', false],
    ['#', 'a', true],
    ['#', '/', true],
    ['#', 'a/b/c', true],
    ['a/+/#', 'a/b', true],
    ['a/+/#', 'a', false],
    ['A/b', 'a/b', false], // case sensitive
    // [MQTT-5-4.7.2-1] leading wildcards do not match $-topics
    ['#', '$SYS/broker/uptime', false],
    ['+/broker/uptime', '$SYS/broker/uptime', false],
    ['+', '$SYS', false],
    ['$SYS/#', '$SYS/broker/uptime', true],
    ['$SYS/+/uptime', '$SYS/broker/uptime', true],
    ['$SYS/#', '$SYS', true],
    ['a/#', 'a/$b', true], // $ only matters in the first level
    ['+/$b', 'a/$b', true],
  ])('%j ~ %j -> %s', (filter, topic, expected) => {
    expect(topicMatches(filter, topic)).toBe(expected);
  });
});

describe('shared subscriptions [MQTT-5-4.8.2]', () => {
  it.each([
    ['$share/g/a/b', { group: 'g', filter: 'a/b' }],
    ['$share/group-1/#', { group: 'group-1', filter: '#' }],
    ['$share/g/+/x', { group: 'g', filter: '+/x' }],
    ['$share/g//a', { group: 'g', filter: '/a' }],
  ])('%j parses', (input, expected) => {
    expect(parseSharedFilter(input)).toEqual(expected);
  });

  it.each([
    '$share/g', // no filter
    '$share/g/', // empty filter
    '$share//a', // empty share name [MQTT-5-4.8.2-1]
    '$share/g+/a', // wildcard in share name [MQTT-5-4.8.2-2]
    '$share/#/a',
    '$share/g/a/#/b', // invalid inner filter
  ])('%j is a malformed shared filter', (input) => {
    expect(parseSharedFilter(input)).toBeNull();
  });

  it.each(['a/b', '$SYS/#', '$sharex/g/a', 'share/g/a', '$Share/g/a'])('%j is not shared', (input) => {
    expect(parseSharedFilter(input)).toBeUndefined();
  });
});
