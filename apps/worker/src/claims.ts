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

/** A claim kept while the job works: `lost` aborts once it is no longer the job's; `stop` ends the renewals. */
export interface KeptClaim {
  lost: AbortSignal;
  stop(): void;
}

/**
 * Renews the claim every third of the lease until `stop`. `renew` answers whether the claim is
 * still this job's. Once a renewal finds it gone (the job's run was stopped, or another job
 * took over the lapsed claim), `lost` aborts: the provider call in flight, which takes it,
 * stops there, rather than be waited for and paid for with a result nothing would record. A
 * renewal that fails (the database unreachable for a moment) says nothing about the claim:
 * the job works on, and the next renewal tries again. One renewal at a time, so that a slow
 * database does not pile them up.
 */
export function keepClaim(leaseMs: number, renew: () => Promise<boolean>): KeptClaim {
  const lost = new AbortController();
  let stopped = false;
  let renewing = false;
  const timer = setInterval(() => {
    if (renewing) return;
    renewing = true;
    renew()
      .then((held) => {
        // After `stop`, the job's own result or release may be what ended the claim.
        if (!held && !stopped) {
          clearInterval(timer);
          lost.abort();
        }
      })
      .catch(() => {})
      .finally(() => {
        renewing = false;
      });
  }, Math.max(100, Math.floor(leaseMs / 3)));
  return {
    lost: lost.signal,
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}
