import { sql } from 'drizzle-orm';
import type { Config } from '@soundqueue/shared/config';
import type { Db, Tx } from '@soundqueue/shared/db/client';
import { HttpError } from './http-errors';

/**
 * With USER_MONTHLY_BUDGET_USD set, a user whose provider calls this month cost that much
 * gets a 402 for anything that would call a paid provider again: a new batch, a retry of a
 * batch's failed tracks, a new book, generating a book's soundscapes again. Checked against
 * what the calls already made cost (the price of work not done yet is not known), so it is a
 * soft cap: requests in flight together all pass, and their work may go past it.
 *
 * `db` may be the transaction that holds the row the request changes, so a check made after
 * the 404/409 checks uses no second connection of the pool.
 */
export async function checkBudget(db: Db | Tx, config: Pick<Config, 'USER_MONTHLY_BUDGET_USD'>, userId: string): Promise<void> {
  const budget = config.USER_MONTHLY_BUDGET_USD;
  if (budget === undefined) return;
  const [row] = (
    await db.execute<{ spent: string | null }>(
      // The month in UTC, whatever the database's time zone (date_trunc on a timestamptz cuts
      // in the session's, so a database set to local time moved the month's start by hours).
      sql`select sum(cost_usd)::text as spent from provider_calls where user_id = ${userId} and created_at >= date_trunc('month', now() at time zone 'UTC') at time zone 'UTC'`,
    )
  ).rows;
  const spent = Number(row?.spent ?? 0);
  if (spent >= budget) {
    throw new HttpError(402, 'budget_exhausted', `this month's budget of $${budget.toFixed(2)} is spent ($${spent.toFixed(4)}); paid work starts again next month`, {
      budgetUsd: budget,
      spentUsd: spent,
    });
  }
}
