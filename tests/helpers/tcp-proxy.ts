import { createServer, connect, type Socket } from 'node:net';

export interface TcpProxy {
  /** The proxy's address, as a redis:// URL. */
  url: string;
  /**
   * Stops passing on what clients send (on open connections and on new ones, which it still
   * accepts): to a client the server looks connected but silent, as behind a stalled network
   * or a load balancer whose backend is gone.
   */
  hold(): void;
  /**
   * Holds only connections opened from now on: those open already go on working. A client
   * whose connection is dropped (CLIENT KILL) then reconnects to a silent server, its others not.
   */
  holdNew(): void;
  /** Passes on what was held, in order, and forwards normally again. */
  release(): void;
  /** Drops every open connection at once; what they had held is thrown away with them. */
  cut(): void;
  /**
   * Drops every open connection and refuses new ones (each is closed as it is accepted) until
   * `accept`: for PostgreSQL, a server that has gone away, so nothing can be read back.
   */
  refuse(): void;
  /** Takes new connections again after `refuse`. */
  accept(): void;
  /**
   * Arms one cut: the first connection that sends a chunk matching `first` and then one
   * matching `then` passes that one on, but the server's answer to it is thrown away and the
   * connection dropped as it arrives. For PostgreSQL, a COMMIT the server carried out whose
   * client never hears so: the connection is lost once the COMMIT was sent. With `refuse`, the
   * proxy refuses (as `refuse()`) from that same moment, before the client can reconnect.
   * Resolves once cut.
   */
  cutAnswerTo(first: (sent: string) => boolean, then: (sent: string) => boolean, options?: { refuse?: boolean }): Promise<void>;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  holding: boolean;
  held: Buffer[];
  /** Sent a chunk matching the armed cut's `first`. */
  marked: boolean;
  /** Sent the chunk matching its `then`: the server's next answer is thrown away with the connection. */
  doomed: boolean;
}

/** A TCP proxy on a spare port in front of `target` (a redis:// URL), for tests that break the network. */
export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const { hostname, port } = new URL(target);
  const pairs = new Set<Pair>();
  // What a connection opened now starts as.
  let holdingNew = false;
  let refusing = false;
  let armed: { first: (sent: string) => boolean; then: (sent: string) => boolean; refuse: boolean; done: () => void } | undefined;
  const drop = (pair: Pair) => {
    pairs.delete(pair);
    pair.held = [];
    pair.client.destroy();
    pair.upstream.destroy();
  };
  const refuseAll = () => {
    refusing = true;
    for (const pair of [...pairs]) drop(pair);
  };
  const server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(port), hostname);
    const pair: Pair = { client, upstream, holding: holdingNew, held: [], marked: false, doomed: false };
    pairs.add(pair);
    client.on('data', (chunk) => {
      if (armed) {
        const sent = chunk.toString('latin1');
        if (pair.marked && armed.then(sent)) pair.doomed = true;
        else if (armed.first(sent)) pair.marked = true;
      }
      if (pair.holding) pair.held.push(chunk);
      else upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!pair.doomed) {
        client.write(chunk);
        return;
      }
      const { done, refuse } = armed!;
      armed = undefined;
      drop(pair);
      if (refuse) refuseAll();
      done();
    });
    // Either side going away takes the other with it, as a real connection would.
    for (const socket of [client, upstream]) {
      socket.on('error', () => drop(pair));
      socket.on('close', () => drop(pair));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return {
    url: `redis://127.0.0.1:${address.port}`,
    hold() {
      holdingNew = true;
      for (const pair of pairs) pair.holding = true;
    },
    holdNew() {
      holdingNew = true;
    },
    release() {
      holdingNew = false;
      for (const pair of pairs) {
        pair.holding = false;
        for (const chunk of pair.held) pair.upstream.write(chunk);
        pair.held = [];
      }
    },
    cut() {
      for (const pair of [...pairs]) drop(pair);
    },
    refuse: refuseAll,
    accept() {
      refusing = false;
    },
    cutAnswerTo(first, then, options = {}) {
      return new Promise<void>((done) => {
        for (const pair of pairs) pair.marked = false;
        armed = { first, then, refuse: options.refuse ?? false, done };
      });
    },
    async close() {
      for (const pair of [...pairs]) drop(pair);
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
