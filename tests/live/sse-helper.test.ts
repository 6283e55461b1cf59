import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSse } from '../helpers/sse';

// tests/helpers/sse.ts itself: a wait pending when the stream ends fails at once, saying the
// stream ended and what it received. It learnt of the end only after it had been told (the
// flag was set a tick after the waiters ran), so it waited out its timeout and said "timed out".

let url: string;
let close: () => Promise<void>;
// The response of the stream the server holds open, for the test to end or cut.
const open: ServerResponse[] = [];

beforeAll(async () => {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(`id: 1-0\nevent: snapshot\ndata: ${JSON.stringify({ status: 'processing' })}\n\n`);
    open.push(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`;
  close = () => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
});
afterAll(() => close?.());

/** Opens a stream, and the server's end of it once its first event arrived. */
async function streamWithItsResponse() {
  const stream = await openSse(url);
  await stream.waitFor((events) => events.length === 1, 10_000);
  return { stream, res: open.shift()! };
}

describe('the SSE test client', () => {
  // Well under the wait's own timeout: a wait that outlasted the end would fail the test by time.
  it('fails a pending wait at once when the server ends the stream, with what it received', { timeout: 20_000 }, async () => {
    const { stream, res } = await streamWithItsResponse();
    const pending = stream.waitFor((events) => events.some((e) => e.event === 'batch.completed'), 60_000);
    res.end();
    await expect(pending).rejects.toThrow('stream ended (the server ended it) before the condition; received 1 event(s): snapshot');
    await stream.ended;
    // A wait begun after the end fails at once too.
    await expect(stream.waitFor(() => false, 60_000)).rejects.toThrow(/^stream ended \(the server ended it\)/);
  });

  it('fails a pending wait at once when the connection is cut, saying so', { timeout: 20_000 }, async () => {
    const { stream, res } = await streamWithItsResponse();
    const pending = stream.waitFor(() => false, 60_000);
    res.destroy();
    await expect(pending).rejects.toThrow(/^stream ended \(cut: .+\) before the condition; received 1 event\(s\): snapshot$/);
    await expect(stream.ended).rejects.toThrow();
  });

  it('fails a pending wait when the test closes the stream', { timeout: 20_000 }, async () => {
    const { stream } = await streamWithItsResponse();
    const pending = stream.waitFor(() => false, 60_000);
    stream.close();
    await expect(pending).rejects.toThrow('stream ended (closed by the test) before the condition; received 1 event(s): snapshot');
    await stream.ended;
  });

  it('still says "timed out" for a stream that stays open', async () => {
    const { stream } = await streamWithItsResponse();
    await expect(stream.waitFor(() => false, 200)).rejects.toThrow('timed out after 200 ms, the stream still open; received 1 event(s): snapshot');
    stream.close();
  });
});
