import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, testConfig } from '../../src/config/load.js';
import { SETTINGS } from '../../src/config/schema.js';

const dir = mkdtempSync(join(tmpdir(), 'edb-config-'));
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('loadConfig', () => {
  it('uses the defaults of the settings table', () => {
    const c = loadConfig({});
    for (const [name, spec] of Object.entries(SETTINGS)) expect(c[name as keyof typeof SETTINGS]).toBe(spec.default);
    expect(c.sections).toEqual({});
  });

  it('reads YAML files', () => {
    const c = loadConfig({ EDB_CONFIG: file('a.yaml', 'mqttPort: 1999\nmaxInflight: 10\nallowAnonymous: false\nlogLevel: warn\n') });
    expect(c.mqttPort).toBe(1999);
    expect(c.maxInflight).toBe(10);
    expect(c.allowAnonymous).toBe(false);
    expect(c.logLevel).toBe('warn');
  });

  it('reads JSON files and keeps file-only sections', () => {
    const c = loadConfig({ EDB_CONFIG: file('a.json', JSON.stringify({ maxPacketSize: 4096, acl: [{ user: 'u' }] })) });
    expect(c.maxPacketSize).toBe(4096);
    expect(c.sections).toEqual({ acl: [{ user: 'u' }] });
  });

  it('environment variables override the file', () => {
    const path = file('b.yaml', 'mqttPort: 1999\nmaxInflight: 10\n');
    const c = loadConfig({ EDB_CONFIG: path, EDB_MQTT_PORT: '2001', EDB_ALLOW_ANONYMOUS: 'no' });
    expect(c.mqttPort).toBe(2001);
    expect(c.maxInflight).toBe(10); // from the file
    expect(c.allowAnonymous).toBe(false);
  });

  it('accepts port 0 (pick a free port)', () => {
    expect(loadConfig({ EDB_MQTT_PORT: '0' }).mqttPort).toBe(0);
  });

  it.each([
    [{ EDB_MQTT_PORT: 'abc' }, 'EDB_MQTT_PORT=abc: not a whole number; use a port from 0 to 65535 (0 picks a free port, -1 turns the listener off)'],
    [{ EDB_MQTT_PORT: '70000' }, 'EDB_MQTT_PORT=70000: out of range; use a port from 0 to 65535'],
    [{ EDB_MAX_INFLIGHT: '0' }, 'EDB_MAX_INFLIGHT=0: out of range; use a whole number from 1 to 65535'],
    [{ EDB_MAX_SUBSCRIPTIONS: '-1' }, 'EDB_MAX_SUBSCRIPTIONS=-1: out of range; use a whole number, at least 0'],
    [{ EDB_ALLOW_ANONYMOUS: 'maybe' }, 'EDB_ALLOW_ANONYMOUS=maybe: not a yes/no value; use true or false (also accepted: 1, yes, on / 0, no, off)'],
    [{ EDB_LOG_LEVEL: 'loud' }, 'EDB_LOG_LEVEL=loud: not an allowed value; use one of trace, debug, info, warn, error, fatal, silent'],
    [{ EDB_WS_ENGINE: 'uws2' }, 'EDB_WS_ENGINE=uws2: not an allowed value; use one of auto, uws, ws, did you mean "uws"?'],
  ])('an invalid environment setting names the variable: %j', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it('an invalid file setting names the key and the file', () => {
    const path = file('bad.yaml', 'maxPacketSize: 10\n');
    expect(() => loadConfig({ EDB_CONFIG: path })).toThrow(`maxPacketSize (in ${path}): out of range; use a whole number from 64 to 268435455`);
    const typo = file('typo.yaml', 'mqttPrt: 10\n');
    expect(() => loadConfig({ EDB_CONFIG: typo })).toThrow(`unknown setting "mqttPrt" in the config file ${typo}; did you mean "mqttPort"?`);
    const wrongType = file('type.json', JSON.stringify({ allowAnonymous: 'maybe' }));
    expect(() => loadConfig({ EDB_CONFIG: wrongType })).toThrow(`allowAnonymous: maybe (in ${wrongType}): not a yes/no value; use true or false`);
    const list = file('list-value.json', JSON.stringify({ logLevel: ['info'] }));
    expect(() => loadConfig({ EDB_CONFIG: list })).toThrow(`logLevel (in ${list}): not valid; use one of trace, debug, info`);
    // the words the environment takes mean the same in a file
    expect(loadConfig({ EDB_CONFIG: file('words.yaml', 'allowAnonymous: "no"\nmqttPort: "1884"\n') })).toMatchObject({ allowAnonymous: false, mqttPort: 1884 });
  });

  it('a missing or malformed file is a ConfigError naming it', () => {
    expect(() => loadConfig({ EDB_CONFIG: join(dir, 'missing.yaml') })).toThrow(/EDB_CONFIG=.*missing\.yaml: cannot read the config file/);
    const list = file('list.yaml', '- a\n- b\n');
    expect(() => loadConfig({ EDB_CONFIG: list })).toThrow(/expected a mapping of settings/);
    const broken = file('broken.json', '{"mqttPort": ');
    expect(() => loadConfig({ EDB_CONFIG: broken })).toThrow(ConfigError);
  });
});

describe('testConfig', () => {
  it('uses free ports, turns off optional listeners and logs, and applies overrides', () => {
    const c = testConfig({ maxInflight: 3 });
    expect(c.mqttPort).toBe(0);
    expect(c.httpPort).toBe(-1);
    expect(c.wsPort).toBe(-1);
    expect(c.logLevel).toBe('silent');
    expect(c.maxInflight).toBe(3);
    expect(c.sections).toEqual({});
  });
});
