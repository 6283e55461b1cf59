/** Polls `check` until it returns a truthy value; no fixed sleeps in tests. */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  { timeoutMs = 60_000, intervalMs = 50, what = 'condition' }: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${String(last instanceof Error ? last.message : JSON.stringify(last))}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
