import { Agent, request } from 'node:http';

// A child process holding many Server-Sent Events connections to one batch's stream (run by
// bench/api.ts with `fork`, so the clients' parsing does not share the API's event loop).
//
// Parent → child: { type: 'sync', parent } any number of times, answered at once with
// { type: 'sync', parent, child } (this process's clock then), so the parent can measure the
// two clocks' offset: performance.timeOrigin comes from the wall clock at each process's
// start, and a parent that has run for minutes can be a millisecond or two off a new child.
// Then { type: 'start', url, token, clients }.
// Child → parent: { type: 'ready', connectMs } once every client has its snapshot, then for
// every `bench.ping` event with data.seq, once all clients have it: { type: 'arrived', seq,
// arrivals } with each client's arrival time (ms since the epoch, sub-millisecond, this
// process's clock).

interface Start {
  type: 'start';
  url: string;
  token: string;
  clients: number;
}

interface Sync {
  type: 'sync';
  parent: number;
}

const epochMs = () => performance.timeOrigin + performance.now();
const send = (message: unknown) => process.send?.(message);

process.on('message', (message: Start | Sync) => {
  if (message.type === 'sync') send({ type: 'sync', parent: message.parent, child: epochMs() });
  else start(message);
});

function start(message: Start): void {
  const agent = new Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
  const started = epochMs();
  let ready = 0;
  const arrivals = new Map<number, number[]>();

  for (let i = 0; i < message.clients; i += 1) {
    const req = request(message.url, { agent, headers: { Accept: 'text/event-stream', Authorization: `Bearer ${message.token}` } }, (res) => {
      if (res.statusCode !== 200) {
        send({ type: 'error', message: `client ${i}: stream answered ${res.statusCode}` });
        res.resume();
        return;
      }
      res.setEncoding('utf8');
      let buffer = '';
      let snapshot = false;
      res.on('data', (chunk: string) => {
        const at = epochMs();
        buffer += chunk;
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const type = /^event: (.+)$/m.exec(block)?.[1];
          if (type === 'snapshot' && !snapshot) {
            snapshot = true;
            ready += 1;
            if (ready === message.clients) send({ type: 'ready', connectMs: epochMs() - started });
          } else if (type === 'bench.ping') {
            const seq = (JSON.parse(/^data: (.+)$/m.exec(block)?.[1] ?? '{}') as { seq?: number }).seq ?? -1;
            let list = arrivals.get(seq);
            if (!list) arrivals.set(seq, (list = []));
            list.push(at);
            if (list.length === message.clients) {
              arrivals.delete(seq);
              send({ type: 'arrived', seq, arrivals: list });
            }
          }
        }
      });
    });
    req.on('error', (error) => send({ type: 'error', message: `client ${i}: ${error.message}` }));
    req.end();
  }
}

// The parent ends the clients by ending this process.
process.on('disconnect', () => process.exit(0));
