import type { FlowJob, FlowProducer } from 'bullmq';

/**
 * Adds a flow, giving up after `timeoutMs`: a request must not hang while Redis is away, and
 * the caller records the work as failed when this throws, so an add given up on must not land
 * later. The flow producer's connection keeps no command for later and resends none
 * (createEnqueueConnection): a flow's MULTI/EXEC is written in one piece when add is called,
 * or refused. What remains is a MULTI/EXEC written before Redis stalled without disconnecting
 * (paused, or a network that delays rather than drops): Redis has it and may run it after the
 * timeout; the workers then skip its jobs, their work being recorded as failed.
 */
export async function addFlowWithin(flows: FlowProducer, flow: FlowJob, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis did not accept the jobs within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    // BullMQ's add first waits, with no limit, for its connection's first 'ready' (the API
    // started while Redis was away): an add given up on there would carry on once Redis came
    // back. So add is called only once that wait is over, and only on a ready connection.
    const client = await Promise.race([flows.waitUntilReady(), timeout]);
    if (client.status !== 'ready') throw new Error('Redis is not connected');
    const adding = flows.add(flow);
    adding.catch(() => {});
    await Promise.race([adding, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
