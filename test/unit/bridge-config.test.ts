import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseBridge, parseBridges, parseTopicLine } from '../../src/config/bridges.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';

const dir = mkdtempSync(join(tmpdir(), 'edb-bridge-config-'));
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('topic lines', () => {
  it.each([
    ['*', { pattern: '#', direction: 'out', qos: 0, localPrefix: '', remotePrefix: '' }],
    ['* in', { pattern: '#', direction: 'in', qos: 0, localPrefix: '', remotePrefix: '' }],
    ['sensors/* out 1', { pattern: 'sensors/#', direction: 'out', qos: 1, localPrefix: '', remotePrefix: '' }],
    ['a/+/c both 2 local/ remote/', { pattern: 'a/+/c', direction: 'both', qos: 2, localPrefix: 'local/', remotePrefix: 'remote/' }],
    ['# OUT 1 "" site1/', { pattern: '#', direction: 'out', qos: 1, localPrefix: '', remotePrefix: 'site1/' }],
    ['  cmd/#   in   1   edge/  ', { pattern: 'cmd/#', direction: 'in', qos: 1, localPrefix: 'edge/', remotePrefix: '' }],
  ])('%s', (line, want) => {
    expect(parseTopicLine(line)).toMatchObject(want);
  });

  it.each([
    ['', /empty topic line/],
    ['a/#/b in', /not a topic filter/],
    ['a sideways', /direction "sideways": use in, out or both/],
    ['a in 3', /qos "3": use 0, 1 or 2/],
    ['a in 1 x/# y', /local prefix "x\/#" may not hold # or \+/],
    ['a in 1 x y/+', /remote prefix "y\/\+"/],
    ['a in 1 x y z', /too many words/],
    ['$share/g/a in', /shared subscription/],
  ])('refuses %j', (line, re) => {
    expect(() => parseTopicLine(line, 'br0', 'topics[0]')).toThrow(re);
    expect(() => parseTopicLine(line, 'br0', 'topics[0]')).toThrow(/^bridge br0: topics\[0\]: /);
  });
});

describe('a bridge', () => {
  it('gets defaults: v5, a persistent session, 1 s to 2 min back-off, verify on', () => {
    const b = parseBridge('br0', { url: 'broker.example:1883', topics: ['* in'] });
    expect(b).toMatchObject({
      name: 'br0',
      url: 'mqtt://broker.example:1883',
      protocolVersion: 5,
      clientId: 'edb-bridge-br0',
      cleanSession: false,
      keepAlive: 60,
      reconnectMinMs: 1000,
      reconnectMaxMs: 120_000,
      tls: { verify: true },
    });
  });

  it('reads every field, nested TLS included', () => {
    const b = parseBridge('cloud', {
      url: 'mqtts://cloud.example',
      topics: [{ pattern: 'up/#', direction: 'out', qos: 1, remotePrefix: 'site/' }, 'down/# in 2'],
      protocolVersion: '3.1.1',
      clientId: 'edge-7',
      username: 'u',
      password: 'p',
      keepAlive: 15,
      cleanSession: 'yes',
      tls: { ca: '/ca.pem', cert: '/c.pem', key: '/k.pem', serverName: 'cloud', verify: false },
      reconnectMin: '200ms',
      reconnectMax: '5s',
      maxOutgoingBufferedMessages: '100',
      maxOutgoingBufferedBytes: 4096,
      maxOutgoingBufferedAge: '1h',
      maxInflight: 10,
      localUsername: 'bridge',
    });
    expect(b.url).toBe('mqtts://cloud.example:8883');
    expect(b.topics.map((t) => [t.pattern, t.direction, t.qos, t.localPrefix, t.remotePrefix])).toEqual([
      ['up/#', 'out', 1, '', 'site/'],
      ['down/#', 'in', 2, '', ''],
    ]);
    expect(b).toMatchObject({ protocolVersion: 4, clientId: 'edge-7', username: 'u', password: 'p', keepAlive: 15, cleanSession: true });
    expect(b.tls).toEqual({ ca: '/ca.pem', cert: '/c.pem', key: '/k.pem', serverName: 'cloud', verify: false });
    expect(b).toMatchObject({ reconnectMinMs: 200, reconnectMaxMs: 5000, maxOutgoingBufferedMessages: 100, maxOutgoingBufferedBytes: 4096, maxOutgoingBufferedAgeMs: 3_600_000, maxInflight: 10, localUsername: 'bridge' });
  });

  it.each([
    [{}, /^bridge br0: url: missing/],
    [{ url: 'http://x:1' }, /^bridge br0: url: "http:\/\/x:1": the scheme must be mqtt:\/\/ or mqtts:\/\//],
    [{ url: 'x:1', keepAlive: 0 }, /^bridge br0: keepAlive: 0: at least 1/],
    [{ url: 'x:1', keepAlive: 'soon' }, /^bridge br0: keepAlive: "soon": not a whole number/],
    [{ url: 'x:1', protocolVersion: 3 }, /^bridge br0: protocolVersion: "3": use 3.1.1 or 5/],
    [{ url: 'x:1', reconnectMax: '10' }, /^bridge br0: reconnectMax: "10": give a unit/],
    [{ url: 'x:1', reconnectMin: '5s', reconnectMax: '1s' }, /^bridge br0: reconnectMax: 1000 ms is below reconnectMin/],
    [{ url: 'x:1', colour: 'red' }, /^bridge br0: colour: unknown field/],
    [{ url: 'mqtts://x', tls: { cert: '/c.pem' } }, /^bridge br0: tlsKey: a client certificate needs both/],
    [{ url: 'mqtt://x', tls: { ca: '/ca.pem' } }, /^bridge br0: url: mqtt:\/\/x:1883: TLS settings are given, so use mqtts:\/\//],
    [{ url: 'x:1', tls: { pin: 'x' } }, /^bridge br0: tls.pin: unknown field/],
    [{ url: 'x:1', password: 'p' }, /^bridge br0: password: a password needs a username/],
    [{ url: 'x:1', topics: 'a in' }, /^bridge br0: topics: expected a list/],
    [{ url: 'x:1', topics: [42] }, /^bridge br0: topics\[0\]: expected a topic line/],
    [{ url: 'x:1', maxOutgoingBufferedMessages: 0 }, /^bridge br0: maxOutgoingBufferedMessages: 0: at least 1/],
  ])('names the bridge and the field: %j', (raw, re) => {
    expect(() => parseBridge('br0', raw)).toThrow(re);
  });

  it('refuses a bad name', () => {
    expect(() => parseBridge('Br 0', { url: 'x:1' })).toThrow(/^bridge Br 0: name: /);
  });
});

describe('bridges from the environment (the VerneMQ shape)', () => {
  it('reads EDB_BRIDGE_BR0, its topic lines in number order, and its fields', () => {
    const [b, ...rest] = parseBridges(undefined, {
      EDB_BRIDGE_BR0: 'remote.example:1883',
      EDB_BRIDGE_BR0_TOPIC_2: 'cmd/# in 1',
      EDB_BRIDGE_BR0_TOPIC_1: '* out',
      EDB_BRIDGE_BR0_TOPIC_10: 'x both 2 l/ r/',
      EDB_BRIDGE_BR0_MAX_OUTGOING_BUFFERED_MESSAGES: '100',
      EDB_BRIDGE_BR0_USERNAME: 'edge',
      EDB_BRIDGE_BR0_PASSWORD: 'secret',
      EDB_BRIDGE_BR0_PROTOCOL_VERSION: '3.1.1',
      EDB_BRIDGE_BR0_CLEAN_SESSION: 'false',
      EDB_BRIDGE_BR0_TLS_VERIFY: 'true',
      EDB_BRIDGE_BR0_RECONNECT_MAX: '30s',
    });
    expect(rest).toEqual([]);
    expect(b!.name).toBe('br0');
    expect(b!.url).toBe('mqtt://remote.example:1883');
    expect(b!.topics.map((t) => t.line)).toEqual(['* out', 'cmd/# in 1', 'x both 2 l/ r/']);
    expect(b).toMatchObject({ maxOutgoingBufferedMessages: 100, username: 'edge', password: 'secret', protocolVersion: 4, cleanSession: false, reconnectMaxMs: 30_000 });
  });

  it('takes several bridges, names with underscores included', () => {
    const bs = parseBridges(undefined, { EDB_BRIDGE_BR0: 'a:1', EDB_BRIDGE_SITE_A: 'mqtts://b', EDB_BRIDGE_SITE_A_TOPIC_1: '# in', EDB_BRIDGE_BR0_TOPIC_1: '# out' });
    expect(bs.map((b) => [b.name, b.url, b.topics[0]!.direction])).toEqual([
      ['br0', 'mqtt://a:1', 'out'],
      ['site_a', 'mqtts://b:8883', 'in'],
    ]);
  });

  it('names the variable, the bridge and the field of a bad one', () => {
    expect(() => parseBridges(undefined, { EDB_BRIDGE_BR0: 'a:1', EDB_BRIDGE_BR0_TOPIC_1: 'x in 7' })).toThrow(/^bridge br0: topics\[0\]: "x in 7": qos "7"/);
    expect(() => parseBridges(undefined, { EDB_BRIDGE_BR0: 'a:1', EDB_BRIDGE_BR0_MAX_OUTGOING_BUFERED_MESSAGES: '100' })).toThrow(
      /^EDB_BRIDGE_BR0_MAX_OUTGOING_BUFERED_MESSAGES: bridge br0: unknown field MAX_OUTGOING_BUFERED_MESSAGES; did you mean MAX_OUTGOING_BUFFERED_MESSAGES\?/,
    );
    expect(() => parseBridges(undefined, { EDB_BRIDGE_BR1_TOPIC_1: '# in' })).toThrow(/^EDB_BRIDGE_BR1_TOPIC_1: there is no bridge br1; set EDB_BRIDGE_BR1=host:port/);
    expect(() => parseBridges(undefined, { EDB_BRIDGE_BR0: 'a:1', EDB_BRIDGE_BR0_KEEP_ALIVE: '0' })).toThrow(/^bridge br0: keepAlive: 0: at least 1/);
  });
});

describe('loadConfig with bridges', () => {
  it('reads the bridges: section of a YAML file and lets EDB_BRIDGE_* override it', () => {
    const path = file(
      'bridges.yaml',
      ['bridges:', '  br0:', '    url: mqtt://site.example:1883', '    topics: ["sensors/# out 1", "cmd/# in 1"]', '    keepAlive: 30', '  cloud:', '    url: mqtts://cloud.example', '    topics: ["* both"]', ''].join('\n'),
    );
    const c = loadConfig({ EDB_CONFIG: path, EDB_BRIDGE_BR0: 'other.example:1884' });
    expect(c.bridges.map((b) => [b.name, b.url, b.keepAlive, b.topics.length])).toEqual([
      ['br0', 'mqtt://other.example:1884', 30, 2],
      ['cloud', 'mqtts://cloud.example:8883', 60, 1],
    ]);
  });

  it('stops the start on a bad bridge with a ConfigError naming bridge and field', () => {
    const path = file('bad.yaml', 'bridges:\n  br0:\n    url: mqtt://x\n    topics: ["a in 1"]\n    keepAlive: -3\n');
    expect(() => loadConfig({ EDB_CONFIG: path })).toThrow(ConfigError);
    expect(() => loadConfig({ EDB_CONFIG: path })).toThrow(/^bridge br0: keepAlive: -3: at least 1/);
    expect(() => loadConfig({ EDB_BRIDGE_BR0: 'ftp://x' })).toThrow(ConfigError);
  });

  it('has no bridges by default', () => {
    expect(loadConfig({}).bridges).toEqual([]);
  });
});
