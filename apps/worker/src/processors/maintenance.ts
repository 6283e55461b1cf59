import { parsePayload } from '@soundqueue/shared/queues';
import type { WorkerContext } from '../context';
import type { JobRun } from '../job-failure';
import { reconcile } from '../reconciler';
import { sweepStorage } from '../storage-sweep';

export async function processMaintenance(ctx: WorkerContext, run: JobRun) {
  const { task } = parsePayload('maintenance', run.job.data);
  if (task === 'reconcile') return reconcile(ctx);
  const { checked, removed } = await sweepStorage(ctx);
  return { checked, removed: removed.length };
}
