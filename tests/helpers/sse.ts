export interface SseEvent {
  id: string;
  event: string;
  data: any;
}

export interface SseStream {
  events: SseEvent[];
  comments: string[];
  /** Every `retry:` field (the reconnect delay the server asked for, in ms), in order. */
  retries: number[];
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  close(): void;
  waitFor(predicate: (events: SseEvent[]) => boolean, timeoutMs?: number): Promise<SseEvent[]>;
}

/** A small Server-Sent Events client over fetch, recording every event and comment. */
export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const controller = new AbortController();
  const res = await fetch(url, { headers: { Accept: 'text/event-stream', ...headers }, signal: controller.signal });
  if (res.status !== 200) throw new Error(`stream answered ${res.status}: ${await res.text()}`);
  const events: SseEvent[] = [];
  const comments: string[] = [];
  const retries: number[] = [];
  const waiters = new Set<() => void>();
  // How the stream ended, once it has: set before the waiters are told, so a pending waitFor
  // fails at once with it rather than waiting out its timeout.
  let endedHow: string | undefined;
  const ended = (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const fields: Record<string, string> = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments.push(line.slice(1).trim());
            else {
              const i = line.indexOf(':');
              if (i > 0) fields[line.slice(0, i)] = line.slice(i + 1).trimStart();
            }
          }
          if (fields.retry !== undefined) retries.push(Number(fields.retry));
          if (fields.data !== undefined) events.push({ id: fields.id ?? '', event: fields.event ?? 'message', data: JSON.parse(fields.data) });
          for (const w of waiters) w();
        }
      }
      endedHow = 'the server ended it';
    } catch (error) {
      if (controller.signal.aborted) endedHow = 'closed by the test';
      else {
        endedHow = `cut: ${error instanceof Error ? error.message : String(error)}`;
        throw error;
      }
    } finally {
      for (const w of waiters) w();
    }
  })();
  // A stream the server cuts (a reset connection) rejects `ended` for whoever awaits it, and
  // must not become an unhandled rejection here.
  ended.catch(() => {});
  const received = () => `received ${events.length} event(s): ${events.map((e) => e.event).join(',') || 'none'}`;
  return {
    events,
    comments,
    retries,
    ended,
    close: () => controller.abort(),
    waitFor(predicate, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (predicate(events)) {
            cleanup();
            resolve(events);
          } else if (endedHow !== undefined) {
            cleanup();
            reject(new Error(`stream ended (${endedHow}) before the condition; ${received()}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out after ${timeoutMs} ms, the stream still open; ${received()}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}

/** Orders stream ids "ms-seq". */
export function idLess(a: string, b: string): boolean {
  const [am, as] = a.split('-').map(Number) as [number, number];
  const [bm, bs] = b.split('-').map(Number) as [number, number];
  return am < bm || (am === bm && as < bs);
}
