/**
 * Work a request starts but does not wait for, which the process still owes: the events of a
 * refused enqueue (the 503 goes out at ENQUEUE_TIMEOUT_MS; publishing them over a stalled
 * Redis can take its 5 s command timeout more) and the webhook deliveries recorded with them.
 * The API context's close() waits for it before it closes the connections the work uses, so
 * a delivery is recorded even when the API stops right after answering.
 */
export interface Background {
  /** Starts `task`; its failure is logged, never thrown (nobody is waiting for it). */
  run(task: () => Promise<void>): void;
  /** Resolves once every task started so far has ended. */
  settled(): Promise<void>;
}

export function createBackground(onError: (error: unknown) => void): Background {
  const running = new Set<Promise<void>>();
  return {
    run(task) {
      const done: Promise<void> = task()
        .catch(onError)
        .finally(() => running.delete(done));
      running.add(done);
    },
    async settled() {
      while (running.size > 0) await Promise.all(running);
    },
  };
}
