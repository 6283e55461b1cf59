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

// A job whose hash is there can still be lost to its flow: its id gone from every state list
// (a list entry removed by hand or a list evicted: no worker will ever take it), or, for a
// parent, its own `:dependencies` set gone while it sits in 'waiting-children' (a child's end
// removes itself from that set and moves the parent on only if the removal took place, so
// nothing will ever move it). BullMQ moves a job between its lists inside one script, so one
// script reading every list sees a consistent state: a job listed nowhere is lost, never
// between two lists. Keys are the queue's key prefix (`<prefix>:<queue>:`) and the job id.
const STATES = `
local found = {}
for i = 1, #ARGV, 2 do
  local q, id = ARGV[i], ARGV[i + 1]
  local state = 'listed'
  if redis.call('EXISTS', q .. id) == 0 then
    state = 'gone'
  elseif redis.call('ZSCORE', q .. 'waiting-children', id) then
    if redis.call('SCARD', q .. id .. ':dependencies') == 0 then state = 'stranded' end
  elseif not (redis.call('LPOS', q .. 'wait', id) or redis.call('LPOS', q .. 'active', id) or redis.call('LPOS', q .. 'paused', id)
      or redis.call('ZSCORE', q .. 'delayed', id) or redis.call('ZSCORE', q .. 'prioritized', id)
      or redis.call('ZSCORE', q .. 'completed', id) or redis.call('ZSCORE', q .. 'failed', id)) then
    state = 'unlisted'
  end
  found[#found + 1] = state
end
return found`;

type JobState = 'listed' | 'gone' | 'stranded' | 'unlisted';
type StatesRedis = Redis & { soundqueueFlowJobStates?: (...args: string[]) => Promise<JobState[]> };

/** Each job's state as STATES reads it, for job keys of `queues`; a key of no queue reads 'listed' (not ours to judge). */
async function statesOf(redis: Redis, queues: Queue[], keys: string[]): Promise<JobState[]> {
  const client = redis as StatesRedis;
  if (!client.soundqueueFlowJobStates) client.defineCommand('soundqueueFlowJobStates', { numberOfKeys: 0, lua: STATES });
  const args: string[] = [];
  const ours = keys.map((key) => {
    const queue = queues.find((q) => key.startsWith(q.toKey('')));
    if (queue) args.push(queue.toKey(''), key.slice(queue.toKey('').length));
    return queue !== undefined;
  });
  const states = args.length > 0 ? await client.soundqueueFlowJobStates!(...args) : [];
  let next = 0;
  return ours.map((mine) => (mine ? states[next++]! : 'listed'));
}

/**
 * The key of a job the flow under `rootKey` still waits for though Redis no longer holds it,
 * at any depth (a batch's speech job under its mix job), or null: a job listed whose hash is
 * gone, a job whose hash is there but that no state list holds, or a parent (the root too)
 * waiting for children whose dependency set is gone. One round trip per level of the flow (a
 * batch: three) to read what each job lists, and one script per level reading every listed
 * job's state; one more only when a key is missing.
 */
export async function findLostChild(redis: Redis, queues: Queue[], rootKey: string): Promise<string | null> {
  if ((await statesOf(redis, queues, [rootKey]))[0] === 'stranded') return rootKey;
  let listed = [await redis.smembers(`${rootKey}:dependencies`)];
  let parents = [rootKey];
  for (;;) {
    const edges = parents.flatMap((parent, i) => listed[i]!.map((child) => ({ parent, child })));
    if (edges.length === 0) return null;
    const read = redis.pipeline();
    for (const { child } of edges) read.smembers(`${child}:dependencies`);
    const children = (await exec(read)) as string[][];
    const states = await statesOf(redis, queues, edges.map((e) => e.child));
    const strayed = edges.find((_, i) => states[i] === 'unlisted' || states[i] === 'stranded');
    if (strayed) return strayed.child;
    const missing = edges.filter((_, i) => states[i] === 'gone');
    if (missing.length > 0) {
      // A child that ended between the two reads left its parent's set before retention could
      // remove its hash: only a key its parent still lists is lost.
      const check = redis.pipeline();
      for (const { parent, child } of missing) check.sismember(`${parent}:dependencies`, child);
      const stillListed = await exec(check);
      const lost = missing.find((_, i) => stillListed[i] === 1);
      if (lost) return lost.child;
    }
    const present = edges.map((_, i) => states[i] !== 'gone');
    parents = edges.filter((_, i) => present[i]).map((e) => e.child);
    listed = children.filter((_, i) => present[i]);
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
