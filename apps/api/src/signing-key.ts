import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import type { Db } from '@soundqueue/shared/db/client';
import { serviceSecrets } from '@soundqueue/shared/db/schema';

const NAME = 'token-signing-key';

/**
 * The key the API signs its own short-lived tokens with (EventSource tokens, playback URLs)
 * when AUTH_JWT_SECRET is not set: made by the first replica that asks, then read by every
 * replica and every restart, so a token one replica hands out, the others accept.
 */
export async function sharedSigningKey(db: Db): Promise<Uint8Array> {
  await db.insert(serviceSecrets).values({ name: NAME, value: randomBytes(32).toString('base64url') }).onConflictDoNothing();
  const [row] = await db.select().from(serviceSecrets).where(eq(serviceSecrets.name, NAME));
  if (!row) throw new Error('the token signing key could not be stored in service_secrets');
  return Buffer.from(row.value, 'base64url');
}
