/**
 * The reconnect schedule: exponential backoff with full jitter, capped, and `Retry-After`.
 * Pure: randomness is injected.
 */

/** How reconnect delays grow. */
export interface BackoffOptions {
  /** The first delay's upper bound, ms (default 500). */
  initial?: number;
  /** The largest delay, ms (default 30,000). */
  max?: number;
  /** Growth per failed attempt (default 2). */
  factor?: number;
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first after a failure): a random value
 * between half and all of `min(max, initial * factor^attempt)`, so clients that lost the hub
 * together do not come back together, and never below `floor` (the hub's `retry:` or
 * `Retry-After`).
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
  floor = 0,
): number {
  const initial = options.initial ?? 500;
  const max = options.max ?? 30_000;
  const factor = options.factor ?? 2;
  const ceiling = Math.min(max, initial * factor ** Math.max(0, attempt));
  const jittered = ceiling / 2 + (random() * ceiling) / 2;
  return Math.max(Math.round(jittered), floor);
}

/**
 * A `Retry-After` header value in ms: delay-seconds or an HTTP date (relative to `now`);
 * undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}
