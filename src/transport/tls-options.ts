/**
 * TLS settings shared by the MQTTS (node:tls) and WSS listeners, and the client
 * certificate identity they hand to the auth hook.
 *
 * With EDB_TLS_CA set, client certificates are required and verified against that CA;
 * the verified certificate's subject becomes Connection.certificateSubject (e.g.
 * "CN=device-1,O=Acme") and its fields Connection.certificateFields.
 */
import { readFileSync } from 'node:fs';
import type { SecureContextOptions, TLSSocket, PeerCertificate } from 'node:tls';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../config/load.js';

export type TlsServerOptions = SecureContextOptions & {
  requestCert: boolean;
  rejectUnauthorized: boolean;
  /** Paths, for engines that read files themselves (uWebSockets.js SSLApp). */
  files: { cert: string; key: string; ca?: string };
};

function readPem(setting: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`${setting}=${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * The TLS options for MQTTS and WSS, or undefined when TLS is off (no certificate and key).
 * Throws ConfigError when only one of certificate and key is set, or a file cannot be read.
 */
export function loadTlsOptions(config: Pick<Config, 'tlsCert' | 'tlsKey' | 'tlsCa'>): TlsServerOptions | undefined {
  const { tlsCert, tlsKey, tlsCa } = config;
  if (!tlsCert && !tlsKey) {
    if (tlsCa) throw new ConfigError('EDB_TLS_CA is set but EDB_TLS_CERT and EDB_TLS_KEY are not: TLS needs a certificate and key');
    return undefined;
  }
  if (!tlsCert || !tlsKey) throw new ConfigError('EDB_TLS_CERT and EDB_TLS_KEY must be set together');
  const options: TlsServerOptions = {
    cert: readPem('EDB_TLS_CERT', tlsCert),
    key: readPem('EDB_TLS_KEY', tlsKey),
    requestCert: false,
    rejectUnauthorized: false,
    files: { cert: tlsCert, key: tlsKey },
  };
  if (tlsCa) {
    options.ca = readPem('EDB_TLS_CA', tlsCa);
    options.requestCert = true;
    options.rejectUnauthorized = true;
    options.files.ca = tlsCa;
  }
  return options;
}

export interface CertificateIdentity {
  certificateSubject?: string;
  certificateFields?: Readonly<Record<string, string>>;
}

/** RFC 4514 escaping of one attribute value. */
function escapeDnValue(value: string): string {
  let out = value.replace(/[\\,+"<>;=]/g, (c) => `\\${c}`);
  if (out.startsWith(' ') || out.startsWith('#')) out = `\\${out}`;
  if (out.endsWith(' ') && out.length > 1) out = `${out.slice(0, -1)}\\ `;
  return out;
}

/**
 * Subject of a peer certificate as an RFC 4514 string ("CN=device-1,OU=line-2,O=Acme",
 * the same as `openssl x509 -noout -subject -nameopt RFC2253`) and as fields. Node lists
 * the subject's attributes in certificate order (C first); RFC 4514 writes them last RDN
 * first. A repeated attribute (node gives an array) is written as "OU=a+OU=b" in the
 * string and "a,b" in the field map. Returns {} for an empty subject.
 */
export function subjectIdentity(subject: PeerCertificate['subject'] | undefined): CertificateIdentity {
  if (!subject || typeof subject !== 'object') return {};
  const fields: Record<string, string> = {};
  const parts: string[] = [];
  const keys = Object.keys(subject).reverse();
  for (const key of keys) {
    const raw = (subject as unknown as Record<string, string | string[] | undefined>)[key];
    if (raw === undefined) continue;
    const values = Array.isArray(raw) ? raw : [raw];
    fields[key] = values.join(',');
    parts.push(values.map((v) => `${key}=${escapeDnValue(v)}`).join('+'));
  }
  if (parts.length === 0) return {};
  return { certificateSubject: parts.join(','), certificateFields: Object.freeze(fields) };
}

/**
 * Identity from a TLS socket's verified client certificate, or {} when the peer sent none
 * or it did not verify (with rejectUnauthorized the handshake already failed then).
 */
export function certificateIdentity(socket: TLSSocket): CertificateIdentity {
  if (!socket.authorized) return {};
  const cert = socket.getPeerCertificate(false);
  if (!cert || Object.keys(cert).length === 0) return {};
  return subjectIdentity(cert.subject);
}
