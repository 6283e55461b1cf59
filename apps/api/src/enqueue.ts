import type { FlowJob, FlowProducer } from 'bullmq';

/**
 * Adds a flow, giving up after `timeoutMs`: BullMQ waits for Redis to come back rather than
 * failing, and a request must not hang while it is away. A flow that lands after the timeout
 * is harmless: its rows are already marked failed, and every processor skips terminal rows.
 */
export async function addFlowWithin(flows: FlowProducer, flow: FlowJob, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis did not accept the jobs within ${timeoutMs} ms`)), timeoutMs);
  });
  const adding = flows.add(flow);
  adding.catch(() => {});
  try {
    await Promise.race([adding, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
