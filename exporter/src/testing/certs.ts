import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** TestCa is a throwaway certificate authority made with openssl for one test run. */
export interface TestCa {
  /** The CA certificate, PEM. */
  cert: string;
  /** issue makes a certificate (leaf) signed by this CA and returns its files. */
  issue: (
    name: string,
    kind: 'server' | 'client',
    sans?: string[],
  ) => { cert: string; key: string };
}

/**
 * makeCa writes a new P-256 CA into dir. Server certificates are for
 * 127.0.0.1 and localhost; client certificates carry name as their CN and
 * sans as DNS subject alternative names.
 */
export function makeCa(dir: string, caName: string): TestCa {
  const file = (n: string): string => path.join(dir, n);
  const openssl = (...args: string[]): void => {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  const caKey = file(`${caName}-ca-key.pem`);
  const caCert = file(`${caName}-ca.pem`);
  openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', caKey);
  openssl(
    'req',
    '-x509',
    '-new',
    '-key',
    caKey,
    '-subj',
    `/CN=${caName} CA`,
    '-days',
    '1',
    '-out',
    caCert,
  );
  return {
    cert: caCert,
    issue: (name, kind, sans = []) => {
      const key = file(`${caName}-${name}-key.pem`);
      const csr = file(`${caName}-${name}.csr`);
      const cert = file(`${caName}-${name}.pem`);
      const ext = file(`${caName}-${name}.ext`);
      openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key);
      openssl('req', '-new', '-key', key, '-subj', `/CN=${name}`, '-out', csr);
      fs.writeFileSync(
        ext,
        kind === 'server'
          ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
          : `extendedKeyUsage=clientAuth\n${sans.length > 0 ? `subjectAltName=${sans.map((n) => `DNS:${n}`).join(',')}\n` : ''}`,
      );
      openssl(
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        caCert,
        '-CAkey',
        caKey,
        '-CAcreateserial',
        '-days',
        '1',
        '-extfile',
        ext,
        '-out',
        cert,
      );
      return { cert, key };
    },
  };
}
