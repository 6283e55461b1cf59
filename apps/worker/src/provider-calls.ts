import { providerCalls } from '@soundqueue/shared/db/schema';
import type { Db } from '@soundqueue/shared/db/client';
import { providerCallDuration, providerCost } from '@soundqueue/shared/metrics';

type ProviderCall = typeof providerCalls.$inferInsert;

/** One row per provider call: usage, cost, latency and outcome (cost sums, analytics). */
export async function recordProviderCall(db: Db, call: ProviderCall): Promise<void> {
  providerCallDuration.observe({ provider: call.provider, kind: call.kind, outcome: call.outcome }, call.latencyMs / 1000);
  if (call.costUsd) providerCost.inc({ provider: call.provider, kind: call.kind }, call.costUsd);
  await db.insert(providerCalls).values(call);
}
