import type { Server } from 'node:net';

/**
 * Bind a node:net / node:http / node:tls server and resolve with the bound port (the
 * configured one, or the free port the OS picked for 0). A bind error rejects with a
 * message naming the listener and the address, e.g. "mqtt: cannot listen on 0.0.0.0:1883:
 * listen EADDRINUSE ...".
 */
export function listenServer(server: Server, name: string, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(new Error(`${name}: cannot listen on ${host}:${port}: ${err.message}`));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}
