import { providerCalls } from '@soundqueue/shared/db/schema';
import type { Db } from '@soundqueue/shared/db/client';

type ProviderCall = typeof providerCalls.$inferInsert;

/** One row per provider call: usage, cost, latency and outcome (cost sums, analytics). */
export async function recordProviderCall(db: Db, call: ProviderCall): Promise<void> {
  await db.insert(providerCalls).values(call);
}
