import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import bcrypt from 'bcryptjs';
import { parse } from 'yaml';

/**
 * WebConfig protects /metrics the way Prometheus' own exporters do: the
 * same file format as the exporter-toolkit's --web.config.file (used by
 * node_exporter and friends), so an SRE reuses the file they have. Read once
 * at start; restart the exporter to change it.
 *
 *   tls_server_config:
 *     cert_file: server.pem          # relative paths: to this file's directory
 *     key_file: server-key.pem
 *     client_auth_type: RequireAndVerifyClientCert  # or NoClientCert (default), VerifyClientCertIfGiven
 *     client_ca_file: clients-ca.pem
 *     client_allowed_sans: [prometheus.example.org]
 *     min_version: TLS12             # or TLS13; max_version likewise
 *   http_server_config:
 *     headers: {Strict-Transport-Security: max-age=31536000}
 *   basic_auth_users:
 *     prometheus: $2y$10$...         # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\n')
 *
 * Settings the toolkit has and this exporter does not (cipher_suites,
 * curve_preferences, prefer_server_cipher_suites, http2, the other client
 * auth types) are refused by name rather than ignored.
 */
export interface WebConfig {
  tls?: {
    cert: Buffer;
    key: Buffer;
    clientCa?: Buffer;
    clientAuth: ClientAuthType;
    clientAllowedSans: string[];
    minVersion: 'TLSv1.2' | 'TLSv1.3';
    maxVersion?: 'TLSv1.2' | 'TLSv1.3';
  };
  /** User name → bcrypt hash; empty: no basic auth. */
  users: Map<string, string>;
  headers: Record<string, string>;
}

type ClientAuthType = 'NoClientCert' | 'RequireAndVerifyClientCert' | 'VerifyClientCertIfGiven';

const VERSIONS = { TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' } as const;

/** loadWebConfig reads and checks the file; errors name the file and the setting. */
export function loadWebConfig(file: string): WebConfig {
  const fail = (what: string): never => {
    throw new Error(`--web-config-file ${file}: ${what}`);
  };
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, 'utf8'));
  } catch (err) {
    return fail((err as Error).message);
  }
  const dir = path.dirname(file);
  const read = (key: string, value: unknown): Buffer => {
    if (typeof value !== 'string' || value === '') return fail(`${key} must be a file name`);
    try {
      return readFileSync(path.resolve(dir, value));
    } catch (err) {
      return fail(`${key}: ${(err as Error).message}`);
    }
  };
  const top = object(
    doc ?? {},
    'the file',
    ['tls_server_config', 'http_server_config', 'basic_auth_users'],
    fail,
  );
  const config: WebConfig = { users: new Map(), headers: {} };

  if (top.tls_server_config !== undefined && top.tls_server_config !== null) {
    const t = object(
      top.tls_server_config,
      'tls_server_config',
      [
        'cert_file',
        'key_file',
        'client_auth_type',
        'client_ca_file',
        'client_allowed_sans',
        'min_version',
        'max_version',
      ],
      fail,
    );
    const clientAuth = (t.client_auth_type ?? 'NoClientCert') as string;
    if (
      !['NoClientCert', 'RequireAndVerifyClientCert', 'VerifyClientCertIfGiven'].includes(
        clientAuth,
      )
    ) {
      fail(
        `tls_server_config.client_auth_type ${JSON.stringify(clientAuth)}: use NoClientCert, RequireAndVerifyClientCert or VerifyClientCertIfGiven (client certificates that are not verified authenticate nobody)`,
      );
    }
    if (clientAuth !== 'NoClientCert' && t.client_ca_file === undefined) {
      fail(`tls_server_config.client_auth_type ${clientAuth} needs client_ca_file`);
    }
    const sans = t.client_allowed_sans ?? [];
    if (!Array.isArray(sans) || !sans.every((s) => typeof s === 'string')) {
      fail('tls_server_config.client_allowed_sans must be a list of names');
    }
    if ((sans as string[]).length > 0 && clientAuth === 'NoClientCert') {
      fail('tls_server_config.client_allowed_sans needs client certificates (client_auth_type)');
    }
    const version = (key: string, v: unknown): 'TLSv1.2' | 'TLSv1.3' | undefined => {
      if (v === undefined) return undefined;
      const found = VERSIONS[v as keyof typeof VERSIONS];
      return found ?? fail(`tls_server_config.${key} ${JSON.stringify(v)}: use TLS12 or TLS13`);
    };
    config.tls = {
      cert: read('tls_server_config.cert_file', t.cert_file),
      key: read('tls_server_config.key_file', t.key_file),
      ...(t.client_ca_file !== undefined && {
        clientCa: read('tls_server_config.client_ca_file', t.client_ca_file),
      }),
      clientAuth: clientAuth as ClientAuthType,
      clientAllowedSans: sans as string[],
      minVersion: version('min_version', t.min_version) ?? 'TLSv1.2',
      ...(t.max_version !== undefined && { maxVersion: version('max_version', t.max_version) }),
    };
  }
  if (top.http_server_config !== undefined && top.http_server_config !== null) {
    const h = object(top.http_server_config, 'http_server_config', ['headers'], fail);
    const headers = object(h.headers ?? {}, 'http_server_config.headers', undefined, fail);
    for (const [k, v] of Object.entries(headers)) {
      if (typeof v !== 'string') fail(`http_server_config.headers.${k} must be a string`);
      config.headers[k] = v as string;
    }
  }
  if (top.basic_auth_users !== undefined && top.basic_auth_users !== null) {
    const users = object(top.basic_auth_users, 'basic_auth_users', undefined, fail);
    for (const [user, hash] of Object.entries(users)) {
      if (typeof hash !== 'string' || !/^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
        fail(`basic_auth_users.${user}: want a bcrypt hash ($2y$10$…), not a password`);
      }
      if (user.includes(':'))
        fail(`basic_auth_users: user name ${JSON.stringify(user)} contains ':'`);
      config.users.set(user, hash as string);
    }
  }
  return config;
}

/** object checks that value is a mapping with only the allowed keys (undefined: any). */
function object(
  value: unknown,
  where: string,
  allowed: string[] | undefined,
  fail: (what: string) => never,
): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return fail(`${where} must be a mapping`);
  }
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (allowed !== undefined && !allowed.includes(key)) {
      fail(
        `${where}: unknown or unsupported setting ${JSON.stringify(key)} (supported: ${allowed.join(', ')})`,
      );
    }
  }
  return record;
}

// A bcrypt hash compared for unknown users, so that a wrong user name costs
// as long as a wrong password and names cannot be probed by timing. Made on
// first use: an exporter without basic auth never pays for it.
let dummyHash: string | undefined;
// Successful checks are remembered (by a hash of user, password and bcrypt
// hash), so that a Prometheus scraping every 15 s does not pay ~50 ms of
// bcrypt each time; bounded, oldest forgotten first.
const CACHE_SIZE = 64;

/** Gate decides, per request, whether it may read the metrics. */
export class Gate {
  private readonly verified = new Set<string>();

  constructor(private readonly config: WebConfig | undefined) {}

  /**
   * check resolves to undefined when req may read /metrics, or to the status
   * and reason to answer with (401 asks for basic auth; 403 is a client
   * certificate that is not allowed).
   */
  async check(
    req: http.IncomingMessage,
  ): Promise<{ status: 401 | 403; reason: string } | undefined> {
    const config = this.config;
    if (config === undefined) return undefined;
    // VerifyClientCertIfGiven lets a handshake with an untrusted certificate
    // through (rejectUnauthorized is off); such a certificate is refused here.
    const socket = req.socket as Partial<TLSSocket>;
    if (config.tls?.clientAuth === 'VerifyClientCertIfGiven' && socket.authorized === false) {
      const given = socket.getPeerCertificate?.();
      if (given !== undefined && Object.keys(given).length > 0) {
        return { status: 403, reason: 'client certificate not trusted' };
      }
    }
    const sans = config.tls?.clientAllowedSans ?? [];
    if (sans.length > 0) {
      const cert = socket.getPeerCertificate?.();
      const names = (cert?.subjectaltname ?? '')
        .split(', ')
        .map((n) => n.replace(/^[A-Za-z ]+:/, ''));
      if (!names.some((n) => sans.includes(n))) {
        return { status: 403, reason: 'client certificate not in client_allowed_sans' };
      }
    }
    if (config.users.size === 0) return undefined;
    const header = req.headers.authorization ?? '';
    // RFC 7617: the scheme is case-insensitive; the credentials must be
    // exact base64 (Node would decode trailing junk leniently).
    const match = /^basic ([A-Za-z0-9+/]+={0,2})$/i.exec(header);
    if (match === null) return { status: 401, reason: 'basic auth required' };
    const raw = Buffer.from(match[1], 'base64');
    if (raw.toString('base64') !== match[1]) return { status: 401, reason: 'malformed basic auth' };
    const decoded = raw.toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return { status: 401, reason: 'malformed basic auth' };
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const hash = config.users.get(user);
    const key = createHash('sha256')
      .update(`${user}\0${password}\0${hash ?? ''}`)
      .digest('hex');
    // The key is a SHA-256 of the secret: looking it up leaks nothing useful.
    if (hash !== undefined && this.verified.has(key)) return undefined;
    dummyHash ??= bcrypt.hashSync('filewatcher-no-such-user', 10);
    const ok = await bcrypt.compare(password, hash ?? dummyHash);
    if (!ok || hash === undefined) return { status: 401, reason: 'wrong user name or password' };
    this.verified.add(key);
    if (this.verified.size > CACHE_SIZE)
      this.verified.delete(this.verified.values().next().value as string);
    return undefined;
  }
}
