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
    [{ EDB_MQTT_PORT: 'abc' }, /EDB_MQTT_PORT=abc: expected a whole number/],
    [{ EDB_MQTT_PORT: '70000' }, /EDB_MQTT_PORT=70000: must be <= 65535/],
    [{ EDB_MAX_INFLIGHT: '0' }, /EDB_MAX_INFLIGHT=0: must be >= 1/],
    [{ EDB_ALLOW_ANONYMOUS: 'maybe' }, /EDB_ALLOW_ANONYMOUS=maybe: expected true or false/],
    [{ EDB_LOG_LEVEL: 'loud' }, /EDB_LOG_LEVEL=loud: must be equal to one of the allowed values/],
  ])('an invalid environment setting names the variable: %j', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it('an invalid file setting names the key and the file', () => {
    const path = file('bad.yaml', 'maxPacketSize: 10\n');
    expect(() => loadConfig({ EDB_CONFIG: path })).toThrow(`maxPacketSize (in ${path}): must be >= 64`);
    const typo = file('typo.yaml', 'mqttPrt: 10\n');
    expect(() => loadConfig({ EDB_CONFIG: typo })).toThrow('unknown setting "mqttPrt" in the config file');
    const wrongType = file('type.json', JSON.stringify({ allowAnonymous: 'yes' }));
    expect(() => loadConfig({ EDB_CONFIG: wrongType })).toThrow(`allowAnonymous (in ${wrongType}): must be boolean`);
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
