import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';

export interface Listening {
  server: Server;
  port: number;
  url: string;
  /** Stops accepting connections and waits for open requests (event streams are ended). */
  close(): Promise<void>;
}

export async function serve(app: Express, port: number, host = '0.0.0.0'): Promise<Listening> {
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    server,
    port: actual,
    url: `http://127.0.0.1:${actual}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // Long-lived responses (event streams) would hold close() forever.
        setTimeout(() => server.closeAllConnections(), 5_000).unref();
      }),
  };
}
