/**
 * Where the auth rules come from: EDB_PASSWORD_FILE and the config file's `users` section for
 * passwords, EDB_ACL_FILE and the config file's `acl` section for the ACL, combined into one
 * set of rules (the files win over the config file).
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { loadAclFile, loadAclFileSync, mergeAcl, parseAclSection, type AclDocument } from './acl.js';
import { PasswordFile, parseHash, type PasswordHash } from './password-file.js';

export interface AuthRules {
  /** null: no password source configured at all. */
  passwords: PasswordFile | null;
  /** null: no ACL configured, everything allowed. */
  acl: AclDocument | null;
}

const USERS_SECTION_ERROR = 'users (config file): expected a mapping of user name to a hash written by `edb passwd`';

function usersFromSection(section: unknown): Map<string, PasswordHash> {
  const users = new Map<string, PasswordHash>();
  if (section === undefined || section === null) return users;
  if (typeof section !== 'object' || Array.isArray(section)) throw new ConfigError(USERS_SECTION_ERROR);
  for (const [user, hash] of Object.entries(section as Record<string, unknown>)) {
    if (typeof hash !== 'string') throw new ConfigError(`${USERS_SECTION_ERROR} (users.${user})`);
    try {
      users.set(user, parseHash(hash));
    } catch (err) {
      throw new ConfigError(`users.${user} (config file): ${(err as Error).message}`);
    }
  }
  return users;
}

function aclFromSection(section: unknown): AclDocument | null {
  if (section === undefined || section === null) return null;
  return parseAclSection(section);
}

function combine(fileUsers: PasswordFile | null, sectionUsers: Map<string, PasswordHash>, fileAcl: AclDocument | null, sectionAcl: AclDocument | null): AuthRules {
  let passwords: PasswordFile | null = null;
  if (fileUsers || sectionUsers.size > 0) {
    passwords = new PasswordFile();
    for (const [u, h] of sectionUsers) passwords.users.set(u, h);
    // the password file wins over the config file for a user named in both
    if (fileUsers) for (const [u, h] of fileUsers.users) passwords.users.set(u, h);
  }
  const acl = fileAcl && sectionAcl ? mergeAcl(fileAcl, sectionAcl) : (fileAcl ?? sectionAcl);
  return { passwords, acl };
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${path}: cannot read the ${what}: ${(err as Error).message}`);
  }
}

/** At start-up: read synchronously, so that a bad file stops the start with a clear message (a ConfigError). */
export function loadAuthRulesSync(config: Config): AuthRules {
  try {
    const fileUsers = config.passwordFile ? PasswordFile.parse(readText(config.passwordFile, 'password file'), config.passwordFile) : null;
    const fileAcl = config.aclFile ? loadAclFileSync(config.aclFile) : null;
    return combine(fileUsers, usersFromSection(config.sections['users']), fileAcl, aclFromSection(config.sections['acl']));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError((err as Error).message);
  }
}

/** On reload: the files and the config file's sections read again; throws when one no longer parses. */
export async function loadAuthRules(config: Config, sections: Record<string, unknown>): Promise<AuthRules> {
  const fileUsers = config.passwordFile ? await PasswordFile.load(config.passwordFile) : null;
  const fileAcl = config.aclFile ? await loadAclFile(config.aclFile) : null;
  return combine(fileUsers, usersFromSection(sections['users']), fileAcl, aclFromSection(sections['acl']));
}

/** A one-line summary of the rules for the log. */
export function describeAuthRules(rules: AuthRules, config: Config): Record<string, unknown> {
  return {
    users: rules.passwords?.users.size ?? 0,
    acl: rules.acl ? { anonymousRules: rules.acl.anonymous.length, users: rules.acl.users.size, patterns: rules.acl.patterns.length } : 'off',
    allowAnonymous: config.allowAnonymous,
  };
}
