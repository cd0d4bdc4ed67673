export interface BackoffOptions {
  /** First delay (attempt 0). Default 500 ms. */
  baseMs?: number;
  /** Cap on the exponential part, before jitter. Default 10 000 ms. */
  maxMs?: number;
  /** Relative spread: the delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]. Default 0.2. */
  jitter?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = { baseMs: 500, maxMs: 10_000, jitter: 0.2 };

/** Exponential backoff with symmetric jitter; jitter spreads a reconnect storm over time (failure case C9). */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  const { baseMs, maxMs, jitter } = { ...DEFAULT_BACKOFF, ...opts };
  const exp = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  const factor = 1 + jitter * (2 * random() - 1);
  return Math.max(0, Math.round(exp * factor));
}
