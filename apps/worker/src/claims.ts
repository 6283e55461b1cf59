import type { WorkerContext } from './context';
import type { JobRun } from './job-failure';

// Waiting for and keeping a claim on a paid provider call (a soundscape, a spread's analysis;
// the claims themselves are rows: rollup/books.ts). A job that finds another job's live claim
// waits for it rather than pay for the same call twice; the job holding a claim renews it
// while it works.

/** A claim not renewed for this long is presumed dead: the time after which BullMQ too presumes a silent job stalled. */
export const claimLeaseMs = (ctx: WorkerContext): number => Math.max(1_000, ctx.config.WORKER_LOCK_DURATION_MS);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Tries `claim` until it is this job's (the claim's id) or the work is settled (any other
 * answer but 'busy', returned as it is). While another job holds it, says so in the job's
 * progress (Bull Board shows it) and polls, backing off up to a third of the lease.
 */
export async function waitForClaim<Answer>(
  run: JobRun,
  what: string,
  leaseMs: number,
  claim: () => Promise<Answer | 'busy'>,
): Promise<Exclude<Answer, 'busy'>> {
  for (let waitMs = 100; ; waitMs = Math.min(waitMs * 2, leaseMs / 3)) {
    const answer = await claim();
    if (answer !== 'busy') return answer as Exclude<Answer, 'busy'>;
    await run.job.updateProgress({ waitingFor: `another job ${what}` });
    await sleep(waitMs);
  }
}

/** Renews the claim every third of the lease until the returned function is called. */
export function keepClaim(leaseMs: number, renew: () => Promise<void>): () => void {
  const timer = setInterval(() => void renew().catch(() => {}), Math.max(100, Math.floor(leaseMs / 3)));
  return () => clearInterval(timer);
}
