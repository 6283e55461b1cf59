import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';

// A parent job waits for its children in BullMQ's set `<parent's key>:dependencies`, whose
// members are the children's job keys (`<prefix>:<queue>:<id>`, what Job.getDependencies reads
// as `unprocessed`). A child leaves the set in the same script that ends or removes it, so a
// key still listed whose job hash is gone (deleted by hand, or evicted under a maxmemory
// policy) will never leave it: its parent, and every parent above that, waits for ever.

/** The results of a pipeline, in order; a command's error is thrown. */
async function exec(pipeline: ReturnType<Redis['pipeline']>): Promise<unknown[]> {
  const results = (await pipeline.exec()) ?? [];
  return results.map(([error, value]) => {
    if (error) throw error;
    return value;
  });
}

/**
 * The key of a job the flow under `rootKey` still waits for though Redis no longer holds it,
 * at any depth (a batch's speech job under its mix job), or null. One round trip per level of
 * the flow (a batch: three), each reading whether every listed child exists and what it lists
 * in turn; one more only when a key is missing.
 */
export async function findLostChild(redis: Redis, rootKey: string): Promise<string | null> {
  let listed = [await redis.smembers(`${rootKey}:dependencies`)];
  let parents = [rootKey];
  for (;;) {
    const edges = parents.flatMap((parent, i) => listed[i]!.map((child) => ({ parent, child })));
    if (edges.length === 0) return null;
    const read = redis.pipeline();
    for (const { child } of edges) read.exists(child).smembers(`${child}:dependencies`);
    const results = await exec(read);
    const exists = edges.map((_, i) => results[2 * i] === 1);
    const missing = edges.filter((_, i) => !exists[i]);
    if (missing.length > 0) {
      // A child that ended between the two reads left its parent's set before retention could
      // remove its hash: only a key its parent still lists is lost.
      const check = redis.pipeline();
      for (const { parent, child } of missing) check.sismember(`${parent}:dependencies`, child);
      const stillListed = await exec(check);
      const lost = missing.find((_, i) => stillListed[i] === 1);
      if (lost) return lost.child;
    }
    parents = edges.filter((_, i) => exists[i]).map((e) => e.child);
    listed = edges.map((_, i) => results[2 * i + 1] as string[]).filter((_, i) => exists[i]);
  }
}

/**
 * Removes a root that waits for a lost job, so that it is missing like any root Redis lost and
 * the reconciler's new run takes its work over. Left there, it would wait in Bull Board for
 * ever: a job that never ends is never removed by retention. Its children still waiting go
 * with it, with what is under them (they would only run to change nothing, as jobs of a run
 * the batch or book has moved on from, and one above the lost job would wait for ever too).
 * Its finished children stay until retention removes them, a failed one still explaining
 * itself in Bull Board; a job running now is left to end (its end finds no parent to tell),
 * and retention removes it then.
 *
 * The root goes first, on its own: removing its last waiting child before it would let BullMQ
 * move it to the wait list, to run and end the batch or book with that work failed as lost.
 */
export async function removeStrandedRoot(redis: Redis, queues: Queue[], root: Queue, rootId: string): Promise<void> {
  const children = await redis.smembers(`${root.toKey(rootId)}:dependencies`);
  if ((await root.remove(rootId, { removeChildren: false })) !== 1) {
    throw new Error(`job ${rootId} waits for a job Redis lost but could not be removed (a worker holds it); the next pass tries again`);
  }
  await Promise.all(
    children.map(async (key) => {
      const queue = queues.find((q) => key.startsWith(q.toKey('')));
      // Refused (0) while it or a job under it runs: left to end as above.
      if (queue) await queue.remove(key.slice(queue.toKey('').length), { removeChildren: true });
    }),
  );
}
