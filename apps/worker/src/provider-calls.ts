import { sql } from 'drizzle-orm';
import { providerCalls } from '@soundqueue/shared/db/schema';
import { preparedFor } from '@soundqueue/shared/db/prepared';
import type { Db } from '@soundqueue/shared/db/client';
import { providerCallDuration, providerCost } from './metrics';
import { SoundqueueError } from '@soundqueue/shared/errors';

type ProviderCall = typeof providerCalls.$inferInsert;

/** One row per provider call: usage, cost, latency and outcome (cost sums, analytics). */
export async function recordProviderCall(db: Db, call: ProviderCall): Promise<void> {
  providerCallDuration.observe({ provider: call.provider, kind: call.kind, outcome: call.outcome }, call.latencyMs / 1000);
  if (call.costUsd) providerCost.inc({ provider: call.provider, kind: call.kind }, call.costUsd);
  // Prepared (one row per provider call, so at least one per track): see db/prepared.ts.
  const insert = preparedFor(db, 'sq_record_provider_call', (db) =>
    db
      .insert(providerCalls)
      .values({
        userId: sql.placeholder('userId'),
        batchId: sql.placeholder('batchId'),
        bookId: sql.placeholder('bookId'),
        provider: sql.placeholder('provider'),
        kind: sql.placeholder('kind'),
        units: sql.placeholder('units'),
        unitType: sql.placeholder('unitType'),
        costUsd: sql.placeholder('costUsd'),
        latencyMs: sql.placeholder('latencyMs'),
        outcome: sql.placeholder('outcome'),
      })
      .prepare('sq_record_provider_call'),
  );
  await insert.execute({ ...call, batchId: call.batchId ?? null, bookId: call.bookId ?? null, costUsd: call.costUsd ?? 0 });
}

export type CallMeta = Pick<ProviderCall, 'userId' | 'batchId' | 'bookId' | 'provider' | 'kind' | 'unitType'>;

/**
 * Makes one provider call and records it, whether it succeeds or fails. A call that fails
 * once `lost` has aborted it (the job's claim taken: keepClaim in claims.ts) is recorded as
 * `aborted`, not `error`: we stopped it, the provider did not fail.
 */
export async function recordedCall<T>(
  db: Db,
  meta: CallMeta,
  call: () => Promise<T>,
  usage: (result: T) => { units: number; costUsd: number },
  lost?: AbortSignal,
): Promise<T> {
  const started = Date.now();
  let result: T;
  try {
    result = await call();
  } catch (error) {
    // A failed call costs nothing unless the provider answered and charged for it.
    const billed = error instanceof SoundqueueError ? error.billed : undefined;
    await recordProviderCall(db, { ...meta, units: billed?.units ?? 0, costUsd: billed?.costUsd ?? 0, latencyMs: Date.now() - started, outcome: lost?.aborted ? 'aborted' : 'error' });
    throw error;
  }
  await recordProviderCall(db, { ...meta, ...usage(result), latencyMs: Date.now() - started, outcome: 'ok' });
  return result;
}
