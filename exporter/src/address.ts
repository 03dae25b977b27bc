/** LoaderAddress is where the loader serves gRPC, as a grpc-js target. */
export interface LoaderAddress {
  /** The target string for grpc-js: "unix:///abs/path" or "host:port". */
  target: string;
  /** "unix" or "tcp", for logs. */
  kind: 'unix' | 'tcp';
}

/**
 * parseLoaderAddress accepts "unix:///abs/path" (also "unix:/abs/path" or a
 * bare absolute path) and "host:port" (IPv6 hosts in brackets: "[::1]:50051").
 * It throws an Error that says what is wrong and what is expected.
 */
export function parseLoaderAddress(address: string): LoaderAddress {
  const expected = 'expected unix:///absolute/path or host:port';
  if (address.startsWith('unix:') || address.startsWith('/')) {
    const path = address.startsWith('unix://')
      ? address.slice('unix://'.length)
      : address.startsWith('unix:')
        ? address.slice('unix:'.length)
        : address;
    if (!path.startsWith('/') || path.length < 2) {
      throw new Error(
        `loader address ${JSON.stringify(address)}: socket path must be absolute; ${expected}`,
      );
    }
    return { target: `unix://${path}`, kind: 'unix' };
  }
  const { host, port } = splitHostPort(
    address,
    `loader address ${JSON.stringify(address)}: ${expected}`,
  );
  if (host === '')
    throw new Error(`loader address ${JSON.stringify(address)}: host missing; ${expected}`);
  return { target: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`, kind: 'tcp' };
}

/** ListenAddress is where the HTTP server listens. */
export interface ListenAddress {
  /** Host or IP to bind; "" means every interface. */
  host: string;
  /** TCP port; 0 picks a free one. */
  port: number;
}

/** parseListenAddress accepts "host:port", "[ipv6]:port" and ":port" (every interface). */
export function parseListenAddress(address: string): ListenAddress {
  return splitHostPort(
    address,
    `listen address ${JSON.stringify(address)}: expected HOST:PORT, [IPV6]:PORT or :PORT`,
  );
}

function splitHostPort(address: string, error: string): ListenAddress {
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(address);
  if (match === null) throw new Error(error);
  const port = Number(match[3]);
  if (port > 65535) throw new Error(`${error} (port out of range)`);
  return { host: match[1] ?? match[2] ?? '', port };
}
