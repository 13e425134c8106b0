/**
 * What `edb start` checks before it opens anything, and all that `edb start --check`
 * does: the TLS files and that the key belongs to the certificate, the password and ACL
 * files, the rules document of EDB_RULES_FILE, and that the data and backup folders can
 * be written. Each problem is one line naming the setting or file and what to do:
 * a ConfigError (exit code 2) for a setting, an EnvironmentError (exit code 1) for the
 * machine (a folder the broker may not write).
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { ConfigError, EnvironmentError } from './config/load.js';
import type { Config } from './config/schema.js';
import { PasswordFile } from './auth/password-file.js';
import { loadAclFileSync } from './auth/acl.js';
import { parseStateStoreSection } from './state/authorization.js';
import { backupDir } from './persistence/backup.js';
import { parseDocumentText } from './rules/check.js';
import { RulesError } from './rules/errors.js';

/** Node's words for a file error: "no such file (ENOENT)". */
export function fileProblem(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const words: Record<string, string> = {
    ENOENT: 'no such file or folder',
    EACCES: 'permission denied',
    EPERM: 'permission denied',
    EISDIR: 'it is a folder, not a file',
    ENOTDIR: 'a part of the path is a file, not a folder',
    EROFS: 'the file system is read-only',
    ENOSPC: 'no space left on the device',
    EEXIST: 'a file of that name is in the way',
  };
  return code && words[code] ? `${words[code]} (${code})` : (err as Error).message;
}

function readSettingFile(setting: string, path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const hint =
      code === 'ENOENT' ? `check the path, or unset ${setting}` : code === 'EACCES' || code === 'EPERM' ? `let the user running edb read it` : `give a readable ${what}`;
    throw new ConfigError(`${setting}=${path}: cannot read the ${what}: ${fileProblem(err)}; ${hint}`);
  }
}

function pemProblem(err: unknown): string {
  const e = err as { code?: string; message?: string };
  if (e.code === 'ERR_MISSING_PASSPHRASE') return 'the key is encrypted; give the broker an unencrypted key (openssl pkey -in KEY -out KEY.plain)';
  return `not a PEM file the broker can read (${e.code ?? e.message})`;
}

/** TLS: both files or neither, each readable and PEM, and the key is the certificate's. */
export function checkTls(config: Pick<Config, 'tlsCert' | 'tlsKey' | 'tlsCa'>): void {
  const { tlsCert, tlsKey, tlsCa } = config;
  if (!tlsCert && !tlsKey) {
    if (tlsCa) throw new ConfigError(`EDB_TLS_CA is set but EDB_TLS_CERT and EDB_TLS_KEY are not; set both to turn TLS on, or unset EDB_TLS_CA`);
    return;
  }
  if (!tlsCert) throw new ConfigError(`EDB_TLS_KEY is set but EDB_TLS_CERT is not; TLS needs both: set EDB_TLS_CERT to the PEM certificate, or unset EDB_TLS_KEY`);
  if (!tlsKey) throw new ConfigError(`EDB_TLS_CERT is set but EDB_TLS_KEY is not; TLS needs both: set EDB_TLS_KEY to the PEM private key, or unset EDB_TLS_CERT`);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(readSettingFile('EDB_TLS_CERT', tlsCert, 'certificate'));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`EDB_TLS_CERT=${tlsCert}: ${pemProblem(err)}; give a PEM certificate ("-----BEGIN CERTIFICATE-----")`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(readSettingFile('EDB_TLS_KEY', tlsKey, 'private key'));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`EDB_TLS_KEY=${tlsKey}: ${pemProblem(err)}; give a PEM private key ("-----BEGIN PRIVATE KEY-----")`);
  }
  if (!cert.checkPrivateKey(key)) {
    throw new ConfigError(`EDB_TLS_KEY=${tlsKey} is not the private key of EDB_TLS_CERT=${tlsCert}; give the key the certificate was made for`);
  }
  if (tlsCa) {
    const ca = readSettingFile('EDB_TLS_CA', tlsCa, 'CA certificate');
    try {
      new X509Certificate(ca);
    } catch (err) {
      throw new ConfigError(`EDB_TLS_CA=${tlsCa}: ${pemProblem(err)}; give the PEM certificate of the CA that signs the client certificates`);
    }
  }
}

/**
 * mkdir -p, one level at a time (Node's recursive mkdirSync loops forever on some paths,
 * such as under /proc, instead of failing).
 */
function makeFolders(dir: string): void {
  const missing: string[] = [];
  let at = dir;
  while (!statSync(at, { throwIfNoEntry: false })) {
    missing.unshift(at);
    const parent = dirname(at);
    if (parent === at) break;
    at = parent;
  }
  for (const d of missing) mkdirSync(d);
}

/** A folder the broker writes: created if missing, and tried with a small file. */
function checkWritableFolder(setting: string, dir: string): void {
  const absolute = resolve(dir);
  try {
    const stat = statSync(absolute, { throwIfNoEntry: false });
    if (stat && !stat.isDirectory()) {
      throw new ConfigError(`${setting}=${dir}: ${absolute} is a file, not a folder; set ${setting} to a folder`);
    }
    makeFolders(absolute);
    const probe = join(absolute, `.edb-write-check-${process.pid}`);
    writeFileSync(probe, '');
    rmSync(probe, { force: true });
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new EnvironmentError(
      `${setting}=${dir}: the broker cannot write to ${absolute}: ${fileProblem(err)}; give the user running edb write access to it, or set ${setting} to a folder it may write`,
    );
  }
}

/** The rules document of EDB_RULES_FILE: readable, JSON, and a valid fr_script document. */
export function checkRulesFile(path: string): void {
  const text = readSettingFile('EDB_RULES_FILE', path, 'rules document').toString('utf8');
  try {
    parseDocumentText(text);
  } catch (err) {
    if (err instanceof RulesError) throw new ConfigError(`EDB_RULES_FILE=${path}: ${err.message}; fix the document (docs/rules.md describes it)`);
    throw err;
  }
}

/** The password file, the ACL file and the config file sections the broker reads at start. */
function checkAuthFiles(config: Config): void {
  if (config.passwordFile) {
    const text = readSettingFile('EDB_PASSWORD_FILE', config.passwordFile, 'password file').toString('utf8');
    try {
      PasswordFile.parse(text, config.passwordFile);
    } catch (err) {
      throw new ConfigError(`EDB_PASSWORD_FILE: ${(err as Error).message}; fix the line, or write the user again with edb passwd`);
    }
  }
  if (config.aclFile) {
    readSettingFile('EDB_ACL_FILE', config.aclFile, 'ACL file');
    try {
      loadAclFileSync(config.aclFile);
    } catch (err) {
      throw new ConfigError(`EDB_ACL_FILE: ${(err as Error).message}`);
    }
  }
  try {
    parseStateStoreSection(config.sections['stateStore']);
  } catch (err) {
    throw new ConfigError(`EDB_CONFIG: ${(err as Error).message}; see docs/state-store.md for the stateStore section`);
  }
}

/** The setting of each listener's port, by listener name. */
const PORT_SETTINGS: Record<string, { setting: string; key: keyof Config; tls?: boolean }> = {
  mqtt: { setting: 'EDB_MQTT_PORT', key: 'mqttPort' },
  mqtts: { setting: 'EDB_MQTTS_PORT', key: 'mqttsPort', tls: true },
  ws: { setting: 'EDB_WS_PORT', key: 'wsPort' },
  wss: { setting: 'EDB_WSS_PORT', key: 'wssPort', tls: true },
  http: { setting: 'EDB_HTTP_PORT', key: 'httpPort' },
  rules: { setting: 'EDB_RULES_PORT', key: 'rulesPort' },
};

/** Two listeners on one port would make the second fail: say so before opening anything. */
function checkPorts(config: Config): void {
  const tls = Boolean(config.tlsCert && config.tlsKey);
  const seen = new Map<number, string>();
  for (const { setting, key, tls: needsTls } of Object.values(PORT_SETTINGS)) {
    const port = config[key] as number;
    if (port <= 0 || (needsTls && !tls)) continue;
    const other = seen.get(port);
    if (other) throw new ConfigError(`${setting}=${port} is also the port of ${other}; give each listener its own port (0 picks a free one, -1 turns a listener off)`);
    seen.set(port, setting);
  }
}

/** Why binding host:port fails, found by trying it: "EADDRINUSE", "EACCES", ... or undefined. */
function bindProblem(host: string, port: number): Promise<string | undefined> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
    server.listen({ host, port, exclusive: true }, () => server.close(() => done(undefined)));
  });
}

/**
 * A listener that could not bind, as one line for the operator: a port in use or a port
 * that needs privileges is the environment (EnvironmentError); a bind address that is
 * not this machine's is a setting (ConfigError). Other errors are returned as they are.
 */
export async function explainListenError(err: unknown, config: Config): Promise<Error> {
  const m = /^(\w+): cannot listen on (.*?):(\d+)(?!\d)/.exec((err as Error).message ?? '');
  const known = m ? PORT_SETTINGS[m[1]!] : undefined;
  if (!m || !known) return err as Error;
  const host = m[2]!;
  const port = Number(m[3]);
  const code = /\b(EADDRINUSE|EACCES|EADDRNOTAVAIL|ENOTFOUND|EAI_AGAIN)\b/.exec((err as Error).message)?.[1] ?? (await bindProblem(host, port));
  const setting = known.setting;
  switch (code) {
    case 'EADDRINUSE':
      return new EnvironmentError(
        `port ${port} (${setting}) is already in use on ${host}; stop the program using it (ss -ltnp shows it), or set ${setting} to another port (0 picks a free one, -1 turns the listener off)`,
      );
    case 'EACCES':
    case 'EPERM':
      return new EnvironmentError(`port ${port} (${setting}) needs privileges on this machine (${code}); use a port above 1023, or give node the CAP_NET_BIND_SERVICE capability`);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConfigError(`EDB_HOST=${config.host}: not an address of this machine (${code}); use 0.0.0.0 for every interface, or one of this machine's addresses`);
    default:
      return new EnvironmentError(`${setting}=${port}: cannot listen on ${host}:${port}: ${code ?? (err as Error).message}`);
  }
}

/** EDB_HOST is an address of this machine: tried by binding a free port on it for a moment. */
export async function checkAddress(config: Config): Promise<void> {
  const code = await bindProblem(config.host, 0);
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    throw new ConfigError(`EDB_HOST=${config.host}: not an address of this machine (${code}); use 0.0.0.0 for every interface, or one of this machine's addresses`);
  }
}

/**
 * Every check that needs no listener and changes nothing (but for a probe file in the
 * folders, removed at once). Throws ConfigError or EnvironmentError for the first problem.
 */
export function checkStartup(config: Config): void {
  checkPorts(config);
  checkTls(config);
  checkAuthFiles(config);
  if (config.rulesFile) checkRulesFile(config.rulesFile);
  checkWritableFolder('EDB_DATA_DIR', config.dataDir);
  if (config.backupEnabled) checkWritableFolder(config.backupDir ? 'EDB_BACKUP_DIR' : 'EDB_DATA_DIR', backupDir(config));
}
