/**
 * What follows a stream or poll attempt: reconnect at once, after a backoff, fall back to
 * polling, or stop. Pure (randomness injected), so every rule is unit-tested without a network.
 */

import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { TidingsError } from "./types.js";

/** How one stream or poll attempt ended. */
export type Outcome =
  /** The hub ended the response; `healthy`: it lived over a second and delivered bytes. */
  | { kind: "ended"; healthy: boolean }
  /** A terminal (`until`) event arrived. */
  | { kind: "done" }
  /** Ended on purpose to continue at once: a token about to expire, a poll page with `more`. */
  | { kind: "renew"; healthy: boolean }
  /** A stream yielded no byte in time (a buffering proxy). */
  | { kind: "stalled" }
  /** An open stream went silent past the idle timeout. */
  | { kind: "idle" }
  | { kind: "http"; status: number; retryAfter: number | undefined; message: string }
  | { kind: "network"; message: string }
  | { kind: "closed" };

/** What the connection knows when deciding. */
export interface PolicyState {
  /** Failed attempts since the last healthy one. */
  attempt: number;
  /** Consecutive failed streams. */
  streamFailures: number;
  /** The hub's `retry:` (ms), if it sent one. */
  retryMs: number | undefined;
  /** Whether a token source exists (a 401 can then be retried with a new token). */
  hasTokenSource: boolean;
  /** Whether falling back to polling is allowed (transport "auto"). */
  mayPoll: boolean;
  /** Whether the attempt was a stream (not a poll). */
  streaming: boolean;
  backoff: BackoffOptions | undefined;
}

/** The decision. */
export interface Decision {
  /** Wait this long, then try again; undefined: stop. */
  delay: number | undefined;
  /** Switch to long polling before the next attempt. */
  toPolling: boolean;
  /** Counters after this attempt. */
  attempt: number;
  streamFailures: number;
  /** What to report, if anything. */
  error: TidingsError | undefined;
}

/** Consecutive failed streams after which polling is tried. */
export const STREAM_FAILURES_BEFORE_POLL = 3;

/** Decides what follows `outcome`. */
export function decide(outcome: Outcome, s: PolicyState, random: () => number = Math.random): Decision {
  const keep = { toPolling: false, attempt: s.attempt, streamFailures: s.streamFailures, error: undefined };
  const backoff = (floor = 0): Pick<Decision, "delay" | "attempt"> => ({
    delay: backoffDelay(s.attempt, s.backoff, random, Math.max(floor, s.retryMs ?? 0)),
    attempt: s.attempt + 1,
  });
  switch (outcome.kind) {
    case "done":
    case "closed":
      return { ...keep, delay: undefined };
    case "renew":
      // At once, unless the last connection was short-lived: never a hot loop (a token source
      // handing out already-expired tokens, say).
      return outcome.healthy ? { ...keep, delay: 0, attempt: 0 } : { ...keep, ...backoff() };
    case "ended":
      // The hub ended a good stream (a token's exp, a deploy, a slow-consumer cut): come back at
      // once, a little spread, or after the hub's retry.
      if (outcome.healthy) {
        return { ...keep, delay: s.retryMs ?? Math.round(random() * 250), attempt: 0, streamFailures: 0 };
      }
      return { ...keep, ...backoff() };
    case "idle":
      return { ...keep, delay: 0 };
    case "stalled":
      return {
        ...keep,
        delay: s.mayPoll ? 0 : backoff().delay,
        toPolling: s.mayPoll,
        streamFailures: 0,
        error: new TidingsError("stalled", "the stream delivered nothing: a buffering proxy? polling instead"),
      };
    case "network": {
      const streamFailures = s.streaming ? s.streamFailures + 1 : s.streamFailures;
      const toPolling = s.streaming && s.mayPoll && streamFailures >= STREAM_FAILURES_BEFORE_POLL;
      return {
        ...keep,
        ...backoff(),
        toPolling,
        streamFailures: toPolling ? 0 : streamFailures,
        error: new TidingsError("network", outcome.message),
      };
    }
    case "http": {
      const { status } = outcome;
      const auth = status === 401 || status === 403;
      const retriable = status >= 500 || status === 429 || status === 408 || (auth && s.hasTokenSource);
      const error = new TidingsError(auth ? "auth" : "http", outcome.message, { status, fatal: !retriable });
      if (!retriable) return { ...keep, delay: undefined, error };
      // A refused token: ask for a new one on the next attempt, at most once a second.
      return { ...keep, ...backoff(Math.max(outcome.retryAfter ?? 0, auth ? 1000 : 0)), error };
    }
  }
}
