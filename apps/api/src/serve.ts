import { createServer, STATUS_CODES, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import type { StreamLimit } from './events/stream-limit';

/** How long close() waits for requests in progress before it cuts their connections. */
const CLOSE_GRACE_MS = 5_000;

export interface Listening {
  server: Server;
  port: number;
  url: string;
  /**
   * Stops accepting connections, ends every event stream at once (its client reconnects to
   * another replica and resumes), and resolves once the other requests in progress are done,
   * cutting any still open after CLOSE_GRACE_MS.
   */
  close(): Promise<void>;
}

/**
 * Answers a request Node's HTTP parser refuses before Express sees it (headers over Node's
 * 16 KiB limit, a byte no header may hold, a request line that is not HTTP, Content-Length
 * and Transfer-Encoding together) in the API's one error shape. Node's own answer was a bare
 * 400 or 431 with no body. As Node does, only a connection that has had nothing written to it
 * gets an answer; on one whose earlier response went out, the client is told by the close.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex & { bytesWritten?: number }): void {
  if (error.code === 'ECONNRESET' || !socket.writable || (socket.bytesWritten ?? 0) > 0) {
    socket.destroy();
    return;
  }
  const [status, code, message] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'headers_too_large', 'the request headers are larger than the 16 KiB the server accepts']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request_timeout', 'the request was not received in time']
        : [400, 'bad_request', 'the request is not valid HTTP'];
  const body = JSON.stringify({ error: { code, message, details: null } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export async function serve(app: Express, port: number, options: { host?: string; streams: StreamLimit }): Promise<Listening> {
  const server = createServer(app);
  server.on('clientError', answerClientError);
  let closing = false;
  // Node keeps a connection alive after close() if a response was in progress on it, and
  // serves its next request: while closing, each one is let go as soon as its response is
  // done, so that close() need not wait out the keep-alive timeout and the client's next
  // request (an EventSource reconnect included) opens a new connection, to a replica still
  // listening. Node's own handler has run by then, so the connection counts as idle.
  server.on('request', (_req, res) =>
    res.once('finish', () => {
      if (closing) server.closeIdleConnections();
    }),
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, options.host ?? '0.0.0.0', () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    server,
    port: actual,
    url: `http://127.0.0.1:${actual}`,
    close: () =>
      new Promise<void>((resolve) => {
        closing = true;
        // A last resort for a request that hangs (a client that stopped reading included).
        const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS).unref();
        server.close(() => {
          clearTimeout(cut);
          resolve();
        });
        options.streams.close();
      }),
  };
}
