/**
 * What an operator meets off the happy path, through the real `edb` command (a child
 * process each time): every failure gives one line naming the setting or file and what
 * to do, and the exit code of the one table (src/cli/exit-codes.ts):
 * 0 done, 1 failed / environment, 2 usage or configuration, 3 broker unreachable.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { startEdb, type EdbServer } from '../../src/server.js';
import { EXIT_CODES_HELP } from '../../src/cli/exit-codes.js';
import { makeTestCertificates, type TestCertificates } from '../helpers/certs.js';
import { CLI } from '../helpers/process.js';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `edb ARGS` with only the given EDB_* settings (none inherited from the test's environment). */
function edb(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('EDB_') && v !== undefined) base[k] = v;
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...base, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A port nothing listens on (free a moment ago). */
async function closedPort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => s.once('listening', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const dir = mkdtempSync(join(tmpdir(), 'edb-operator-'));
const file = (name: string, text: string): string => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

let certs: TestCertificates;
let blocker: net.Server;
let busyPort: number;
let unreachable: number;

beforeAll(async () => {
  certs = makeTestCertificates();
  blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '0.0.0.0', r));
  busyPort = (blocker.address() as net.AddressInfo).port;
  unreachable = await closedPort();
});

afterAll(() => {
  blocker?.close();
});

/** Settings that keep a start from binding fixed ports or writing outside the test's folder. */
function quiet(extra: Record<string, string> = {}): Record<string, string> {
  return {
    EDB_MQTT_PORT: '0',
    EDB_WS_PORT: '-1',
    EDB_HTTP_PORT: '-1',
    EDB_RULES_PORT: '-1',
    EDB_MQTTS_PORT: '0',
    EDB_WSS_PORT: '-1',
    EDB_LOG_FORMAT: 'json',
    EDB_DATA_DIR: mkdtempSync(join(dir, 'data-')),
    ...extra,
  };
}

interface Case {
  name: string;
  args?: string[];
  env: () => Record<string, string>;
  code: number;
  /** The first line of stderr, exactly, or a pattern. */
  line: string | RegExp | (() => string);
}

const startCases: Case[] = [
  {
    name: 'a port that is not a number',
    env: () => quiet({ EDB_MQTT_PORT: 'abc' }),
    code: 2,
    line: 'edb start: EDB_MQTT_PORT=abc: not a whole number; use a port from 0 to 65535 (0 picks a free port, -1 turns the listener off)',
  },
  {
    name: 'a port out of range',
    env: () => quiet({ EDB_MQTT_PORT: '70000' }),
    code: 2,
    line: 'edb start: EDB_MQTT_PORT=70000: out of range; use a port from 0 to 65535 (0 picks a free port, -1 turns the listener off)',
  },
  {
    name: 'a number below its minimum',
    env: () => quiet({ EDB_MAX_INFLIGHT: '0' }),
    code: 2,
    line: 'edb start: EDB_MAX_INFLIGHT=0: out of range; use a whole number from 1 to 65535',
  },
  {
    name: 'a log level that does not exist: the allowed values are listed',
    env: () => quiet({ EDB_LOG_LEVEL: 'verbose' }),
    code: 2,
    line: 'edb start: EDB_LOG_LEVEL=verbose: not an allowed value; use one of trace, debug, info, warn, error, fatal, silent',
  },
  {
    name: 'a misspelt value: did you mean',
    env: () => quiet({ EDB_QUEUE_FULL_POLICY: 'disconect' }),
    code: 2,
    line: 'edb start: EDB_QUEUE_FULL_POLICY=disconect: not an allowed value; use one of drop, disconnect, did you mean "disconnect"?',
  },
  {
    name: 'a yes/no setting given another word: the accepted words are listed',
    env: () => quiet({ EDB_ALLOW_ANONYMOUS: 'nope' }),
    code: 2,
    line: 'edb start: EDB_ALLOW_ANONYMOUS=nope: not a yes/no value; use true or false (also accepted: 1, yes, on / 0, no, off)',
  },
  {
    name: 'EDB_TLS_CERT without EDB_TLS_KEY',
    env: () => quiet({ EDB_TLS_CERT: certs.serverCert }),
    code: 2,
    line: 'edb start: EDB_TLS_CERT is set but EDB_TLS_KEY is not; TLS needs both: set EDB_TLS_KEY to the PEM private key, or unset EDB_TLS_CERT',
  },
  {
    name: 'EDB_TLS_KEY without EDB_TLS_CERT',
    env: () => quiet({ EDB_TLS_KEY: certs.serverKey }),
    code: 2,
    line: 'edb start: EDB_TLS_KEY is set but EDB_TLS_CERT is not; TLS needs both: set EDB_TLS_CERT to the PEM certificate, or unset EDB_TLS_KEY',
  },
  {
    name: 'EDB_TLS_CA without a certificate and key',
    env: () => quiet({ EDB_TLS_CA: certs.caCert }),
    code: 2,
    line: 'edb start: EDB_TLS_CA is set but EDB_TLS_CERT and EDB_TLS_KEY are not; set both to turn TLS on, or unset EDB_TLS_CA',
  },
  {
    name: 'a certificate and a key that do not belong together',
    env: () => quiet({ EDB_TLS_CERT: certs.serverCert, EDB_TLS_KEY: certs.clientKey }),
    code: 2,
    line: () => `edb start: EDB_TLS_KEY=${certs.clientKey} is not the private key of EDB_TLS_CERT=${certs.serverCert}; give the key the certificate was made for`,
  },
  {
    name: 'a certificate file that is missing',
    env: () => quiet({ EDB_TLS_CERT: join(dir, 'missing.crt'), EDB_TLS_KEY: certs.serverKey }),
    code: 2,
    line: () => `edb start: EDB_TLS_CERT=${join(dir, 'missing.crt')}: cannot read the certificate: no such file or folder (ENOENT); check the path, or unset EDB_TLS_CERT`,
  },
  {
    name: 'a certificate file that is not PEM',
    env: () => quiet({ EDB_TLS_CERT: file('garbage.crt', 'not a certificate\n'), EDB_TLS_KEY: certs.serverKey }),
    code: 2,
    line: /^edb start: EDB_TLS_CERT=.*garbage\.crt: not a PEM file the broker can read \(ERR_OSSL_PEM_NO_START_LINE\); give a PEM certificate/,
  },
  {
    name: 'a key file that is not a key (the certificate given twice)',
    env: () => quiet({ EDB_TLS_CERT: certs.serverCert, EDB_TLS_KEY: certs.serverCert }),
    code: 2,
    line: /^edb start: EDB_TLS_KEY=.*: not a PEM file the broker can read \(.*\); give a PEM private key/,
  },
  {
    name: 'a rules file that is missing',
    env: () => quiet({ EDB_RULES_FILE: join(dir, 'missing.json') }),
    code: 2,
    line: () => `edb start: EDB_RULES_FILE=${join(dir, 'missing.json')}: cannot read the rules document: no such file or folder (ENOENT); check the path, or unset EDB_RULES_FILE`,
  },
  {
    name: 'a rules file with a misspelt key',
    env: () => quiet({ EDB_RULES_FILE: file('typo.json', JSON.stringify({ filters: [{ topic: 'a/#', subtopic: 'x/', statments: [] }] })) }),
    code: 2,
    line: /^edb start: EDB_RULES_FILE=.*typo\.json: filters\/0\/statments: unknown key "statments"; did you mean "statements"\?/,
  },
  {
    name: 'a config file that is missing',
    env: () => quiet({ EDB_CONFIG: join(dir, 'missing.yaml') }),
    code: 2,
    line: () => `edb start: EDB_CONFIG=${join(dir, 'missing.yaml')}: cannot read the config file: no such file (ENOENT); check the path, or unset EDB_CONFIG`,
  },
  {
    name: 'a config file that is not YAML',
    env: () => quiet({ EDB_CONFIG: file('bad.yaml', 'a: [\n') }),
    code: 2,
    line: /^edb start: EDB_CONFIG=.*bad\.yaml: not valid YAML: .*; fix the file$/,
  },
  {
    name: 'a config file with a misspelt setting',
    env: () => quiet({ EDB_CONFIG: file('typo.yaml', 'mqttport: 1883\n') }),
    code: 2,
    line: /^edb start: unknown setting "mqttport" in the config file .*typo\.yaml; did you mean "mqttPort"\?$/,
  },
  {
    name: 'a password file that is missing',
    env: () => quiet({ EDB_PASSWORD_FILE: join(dir, 'missing.passwd') }),
    code: 2,
    line: () => `edb start: EDB_PASSWORD_FILE=${join(dir, 'missing.passwd')}: cannot read the password file: no such file or folder (ENOENT); check the path, or unset EDB_PASSWORD_FILE`,
  },
  {
    name: 'a password file with a bad line',
    env: () => quiet({ EDB_PASSWORD_FILE: file('bad.passwd', 'alice\n') }),
    code: 2,
    line: /^edb start: EDB_PASSWORD_FILE: .*bad\.passwd:1: expected user:hash; fix the line, or write the user again with edb passwd$/,
  },
  {
    name: 'an ACL file that is missing',
    env: () => quiet({ EDB_ACL_FILE: join(dir, 'missing.acl') }),
    code: 2,
    line: () => `edb start: EDB_ACL_FILE=${join(dir, 'missing.acl')}: cannot read the ACL file: no such file or folder (ENOENT); check the path, or unset EDB_ACL_FILE`,
  },
  {
    name: 'two listeners on one port',
    env: () => quiet({ EDB_MQTT_PORT: '18830', EDB_WS_PORT: '18830' }),
    code: 2,
    line: 'edb start: EDB_WS_PORT=18830 is also the port of EDB_MQTT_PORT; give each listener its own port (0 picks a free one, -1 turns a listener off)',
  },
  {
    name: 'a bind address that is not this machine',
    env: () => quiet({ EDB_HOST: '192.0.2.1' }),
    code: 2,
    line: "edb start: EDB_HOST=192.0.2.1: not an address of this machine (EADDRNOTAVAIL); use 0.0.0.0 for every interface, or one of this machine's addresses",
  },
  {
    name: 'a data folder that is a file',
    env: () => quiet({ EDB_DATA_DIR: file('a-file', '') }),
    code: 2,
    line: () => `edb start: EDB_DATA_DIR=${join(dir, 'a-file')}: ${join(dir, 'a-file')} is a file, not a folder; set EDB_DATA_DIR to a folder`,
  },
  // the environment: exit code 1
  {
    name: 'the MQTT port in use by another program',
    env: () => quiet({ EDB_MQTT_PORT: String(busyPort) }),
    code: 1,
    line: () =>
      `edb start: port ${busyPort} (EDB_MQTT_PORT) is already in use on 0.0.0.0; stop the program using it (ss -ltnp shows it), or set EDB_MQTT_PORT to another port (0 picks a free one, -1 turns the listener off)`,
  },
  {
    name: 'the HTTP port in use by another program',
    env: () => quiet({ EDB_HTTP_PORT: String(busyPort) }),
    code: 1,
    line: () =>
      `edb start: port ${busyPort} (EDB_HTTP_PORT) is already in use on 0.0.0.0; stop the program using it (ss -ltnp shows it), or set EDB_HTTP_PORT to another port (0 picks a free one, -1 turns the listener off)`,
  },
  {
    name: 'the rules API port in use by another program',
    env: () => quiet({ EDB_RULES_PORT: String(busyPort) }),
    code: 1,
    line: () =>
      `edb start: port ${busyPort} (EDB_RULES_PORT) is already in use on 0.0.0.0; stop the program using it (ss -ltnp shows it), or set EDB_RULES_PORT to another port (0 picks a free one, -1 turns the listener off)`,
  },
  {
    name: 'a data folder the broker cannot write (its parent is a file)',
    env: () => quiet({ EDB_DATA_DIR: join(file('not-a-folder', ''), 'data') }),
    code: 1,
    line: () =>
      `edb start: EDB_DATA_DIR=${join(dir, 'not-a-folder', 'data')}: the broker cannot write to ${join(dir, 'not-a-folder', 'data')}: a part of the path is a file, not a folder (ENOTDIR); give the user running edb write access to it, or set EDB_DATA_DIR to a folder it may write`,
  },
  {
    name: 'a backup folder the broker cannot write',
    env: () => quiet({ EDB_BACKUP_DIR: join(file('not-a-folder-2', ''), 'backup') }),
    code: 1,
    line: /^edb start: EDB_BACKUP_DIR=.*not-a-folder-2\/backup: the broker cannot write to .*: a part of the path is a file, not a folder \(ENOTDIR\);/,
  },
];

function expectLine(r: Result, line: Case['line']): void {
  const first = r.stderr.split('\n')[0]!;
  if (line instanceof RegExp) expect(first).toMatch(line);
  else expect(first).toBe(typeof line === 'function' ? line() : line);
}

// each case is its own process and needs nothing of the others: run a few at once
describe.concurrent('edb start: each failure is one line and its exit code', () => {
  it.each(startCases)(
    '$name',
    async (c) => {
      const r = await edb(['start'], c.env());
      expectLine(r, c.line);
      expect(r.code).toBe(c.code);
      // one line, and no stack trace (that is for EDB_LOG_LEVEL=debug)
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    },
    90_000,
  );

  // --check opens no port, so a port in use is found only by a real start
  it.each(startCases.filter((c) => !/in use/.test(c.name)))(
    '--check: $name',
    async (c) => {
      const r = await edb(['start', '--check'], c.env());
      expectLine(r, c.line);
      expect(r.code).toBe(c.code);
    },
    90_000,
  );

  it('--check on a good configuration says what it checked, exits 0 and opens nothing (the port in use is not tried)', async () => {
    const rules = file('good-rules.json', readFileSync('test/fixtures/house-filters.json', 'utf8'));
    const env = quiet({ EDB_MQTT_PORT: String(busyPort), EDB_TLS_CERT: certs.serverCert, EDB_TLS_KEY: certs.serverKey, EDB_RULES_FILE: rules });
    const r = await edb(['start', '--check'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      `edb start: configuration OK: settings (no config file), TLS certificate and key, rules document ${rules}, data folder ${env['EDB_DATA_DIR']} and backup folder writable (ports are not tried)\n`,
    );
  });

  it('EDB_LOG_LEVEL=debug prints the stack trace after the same line', async () => {
    const r = await edb(['start'], quiet({ EDB_LOG_LEVEL: 'debug', EDB_TLS_CERT: certs.serverCert }));
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe('edb start: EDB_TLS_CERT is set but EDB_TLS_KEY is not; TLS needs both: set EDB_TLS_KEY to the PEM private key, or unset EDB_TLS_CERT');
    expect(r.stderr).toMatch(/\n\s+at .*startup-check/);
  }, 90_000);
});

describe('every command: the exit code table', () => {
  let server: EdbServer;
  let http: string;
  let rulesUrl: string;
  let mqttUrl: string;

  beforeAll(async () => {
    // (the broker is in this process; each command is a process of its own)
    server = await startEdb(testConfig({ host: '127.0.0.1', httpPort: 0, rulesPort: 0 }), silentLogger());
    http = `http://127.0.0.1:${server.port('http')}`;
    rulesUrl = `http://127.0.0.1:${server.port('rules')}`;
    mqttUrl = `mqtt://127.0.0.1:${server.port('mqtt')}`;
  });

  afterAll(async () => {
    await server?.stop();
  });

  const cases: { name: string; args: () => string[]; code: number; line?: string | RegExp | (() => string); stdin?: string }[] = [
    // edb itself
    { name: 'edb --help', args: () => ['--help'], code: 0 },
    { name: 'edb (no command)', args: () => [], code: 2 },
    { name: 'edb bogus', args: () => ['bogus'], code: 2, line: "edb: unknown command 'bogus'" },
    { name: 'edb start --bogus', args: () => ['start', '--bogus'], code: 2, line: "edb: unknown option '--bogus'" },
    // edb state
    { name: 'state set', args: () => ['state', '--url', mqttUrl, 'set', 'ops:k', 'v'], code: 0 },
    { name: 'state get of a key that exists', args: () => ['state', '--url', mqttUrl, 'get', 'ops:k'], code: 0 },
    { name: 'state get of an absent key', args: () => ['state', '--url', mqttUrl, 'get', 'ops:absent'], code: 1, line: '(nil)' },
    { name: 'state set --nx of a key that exists', args: () => ['state', '--url', mqttUrl, 'set', 'ops:k', 'w', '--nx'], code: 1 },
    { name: 'state del of an absent key', args: () => ['state', '--url', mqttUrl, 'del', 'ops:absent'], code: 1 },
    { name: 'state get without a key', args: () => ['state', 'get'], code: 2, line: "edb: missing required argument 'key'" },
    { name: 'state with a bad option value', args: () => ['state', '--url', mqttUrl, 'set', 'k', 'v', '--px', 'soon'], code: 2, line: 'edb state: --px must be a whole number of milliseconds, at least 1' },
    { name: 'state with a URL that is not one', args: () => ['state', '--url', 'localhost:1883', 'get', 'k'], code: 2, line: 'edb state: --url localhost:1883: not a broker URL; write mqtt://HOST:PORT, mqtts://, ws:// or wss://' },
    {
      name: 'state with a CA file that is missing',
      args: () => ['state', '--ca', join(dir, 'missing-ca.pem'), 'get', 'k'],
      code: 2,
      line: () => `edb state: --ca ${join(dir, 'missing-ca.pem')}: cannot read it: no such file (ENOENT)`,
    },
    {
      name: 'state with the broker down',
      args: () => ['state', '--url', `mqtt://127.0.0.1:${unreachable}`, 'get', 'k'],
      code: 3,
      line: () => `edb state: cannot reach the broker at mqtt://127.0.0.1:${unreachable}: connection refused (ECONNREFUSED); is it running? set --url`,
    },
    // edb rules
    { name: 'rules get', args: () => ['rules', '--url', rulesUrl, 'get'], code: 0 },
    { name: 'rules set of a good document', args: () => ['rules', '--url', rulesUrl, 'set', 'test/fixtures/house-filters.json'], code: 0 },
    {
      name: 'rules set of a document the broker refuses',
      args: () => ['rules', '--url', rulesUrl, 'set', file('refused.json', JSON.stringify({ filters: [{ topic: 'a/#', subtopic: 'x/', statments: [] }] }))],
      code: 1,
      line: 'edb rules: the broker refused the request (HTTP 422): filters/0/statments: unknown key "statments"; did you mean "statements"?',
    },
    {
      name: 'rules set of a file that is missing',
      args: () => ['rules', '--url', rulesUrl, 'set', '/nonexistent.json'],
      code: 2,
      line: 'edb rules: cannot read /nonexistent.json: no such file (ENOENT); give the path of a JSON rules document, or - for standard input',
    },
    { name: 'rules without a subcommand argument', args: () => ['rules', 'set'], code: 2, line: "edb: missing required argument 'file'" },
    {
      name: 'rules with the broker down',
      args: () => ['rules', '--url', `http://127.0.0.1:${unreachable}`, 'get'],
      code: 3,
      line: () => `edb rules: cannot reach the rules API at http://127.0.0.1:${unreachable}/: connection refused (ECONNREFUSED); is the broker running? set --url or EDB_RULES_PORT`,
    },
    // edb clients / subscriptions
    { name: 'clients', args: () => ['clients', '--url', http], code: 0 },
    { name: 'subscriptions', args: () => ['subscriptions', '--url', http], code: 0 },
    { name: 'clients with a bad option', args: () => ['clients', '--bogus'], code: 2, line: "edb: unknown option '--bogus'" },
    { name: 'clients at a URL that is not the API', args: () => ['clients', '--url', `${rulesUrl}/nothing`], code: 1, line: /^edb clients: the broker refused the request \(HTTP 404\)/ },
    {
      name: 'clients with the broker down',
      args: () => ['clients', '--url', `http://127.0.0.1:${unreachable}`],
      code: 3,
      line: () => `edb clients: cannot reach the broker's HTTP API at http://127.0.0.1:${unreachable}/api/clients: connection refused (ECONNREFUSED); is it running? set --url or EDB_HTTP_PORT`,
    },
    {
      name: 'subscriptions with the broker down',
      args: () => ['subscriptions', '--url', `http://127.0.0.1:${unreachable}`],
      code: 3,
      line: () => `edb subscriptions: cannot reach the broker's HTTP API at http://127.0.0.1:${unreachable}/api/subscriptions: connection refused (ECONNREFUSED); is it running? set --url or EDB_HTTP_PORT`,
    },
    // edb passwd
    { name: 'passwd adds a user', args: () => ['passwd', join(dir, 'users.passwd'), 'alice', '--password', 'pw!1'], code: 0 },
    { name: 'passwd deletes a user who is not there', args: () => ['passwd', join(dir, 'users.passwd'), 'bob', '--delete'], code: 1, line: () => `edb passwd: user "bob" is not in ${join(dir, 'users.passwd')}` },
    { name: 'passwd with a bad user name', args: () => ['passwd', join(dir, 'users.passwd'), 'a:b', '--password', 'x'], code: 2, line: `edb passwd: user name "a:b" may not be empty or contain ':' or line breaks` },
    { name: 'passwd without a user', args: () => ['passwd', join(dir, 'users.passwd')], code: 2, line: "edb: missing required argument 'user'" },
    {
      name: 'passwd into a folder that does not exist',
      args: () => ['passwd', join(dir, 'no-such-folder', 'users.passwd'), 'alice', '--password', 'x'],
      code: 1,
      line: () => `edb passwd: cannot write ${join(dir, 'no-such-folder', 'users.passwd')}: no such file (ENOENT); check that its folder exists and can be written`,
    },
    // edb token
    { name: 'token create', args: () => ['token', 'create', '--role', 'viewer', '--file', join(dir, 'tokens.json')], code: 0 },
    { name: 'token list', args: () => ['token', 'list', '--file', join(dir, 'tokens.json')], code: 0 },
    { name: 'token create with a role that does not exist', args: () => ['token', 'create', '--role', 'boss', '--file', join(dir, 'tokens.json')], code: 2, line: 'edb token: --role boss: not a role; use one of viewer, operator, admin' },
    { name: 'token create without a role', args: () => ['token', 'create', '--file', join(dir, 'tokens.json')], code: 2, line: "edb: required option '-r, --role <role>' not specified" },
    { name: 'token revoke of a token that is not there', args: () => ['token', 'revoke', 'nope', '--file', join(dir, 'tokens.json')], code: 1, line: () => `edb token: no token "nope" in ${join(dir, 'tokens.json')} (see edb token list)` },
  ];

  // (a generous timeout: `rules set` starts the rules compiler, seconds on a loaded machine)
  it.each(cases)(
    '$name → exit $code',
    async (c) => {
      const r = await edb(c.args());
      if (c.line !== undefined) expectLine(r, c.line);
      expect(r.code).toBe(c.code);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    },
    120_000,
  );

  it('edb --help prints the exit code table, and docs/operations.md shows the same one', async () => {
    const r = await edb(['--help']);
    expect(r.stdout).toContain(EXIT_CODES_HELP);
    const docs = readFileSync('docs/operations.md', 'utf8');
    expect(docs).toContain(EXIT_CODES_HELP);
  });
});
