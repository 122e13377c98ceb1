import { describe, expect, test } from "vitest";
import { decide, STREAM_FAILURES_BEFORE_POLL, type PolicyState } from "../../src/policy.js";

const base: PolicyState = {
  attempt: 0,
  streamFailures: 0,
  retryMs: undefined,
  hasTokenSource: false,
  mayPoll: true,
  streaming: true,
  backoff: undefined,
};
const low = () => 0;
const http = (status: number, retryAfter?: number) => ({ kind: "http" as const, status, retryAfter, message: `the hub answered ${status}` });

describe("decide", () => {
  test("a good stream the hub ended comes back at once, or after the hub's retry", () => {
    expect(decide({ kind: "ended", healthy: true }, { ...base, attempt: 5 }, low)).toMatchObject({ delay: 0, attempt: 0 });
    expect(decide({ kind: "ended", healthy: true }, { ...base, retryMs: 3000 }, low).delay).toBe(3000);
  });

  test("short-lived streams and renewals back off: no hot loop", () => {
    const first = decide({ kind: "ended", healthy: false }, base, low);
    const second = decide({ kind: "ended", healthy: false }, { ...base, attempt: first.attempt }, low);
    expect([first.delay, second.delay]).toEqual([250, 500]);
    expect(decide({ kind: "renew", healthy: false }, { ...base, attempt: 3 }, low).delay).toBe(2000);
    expect(decide({ kind: "renew", healthy: true }, { ...base, attempt: 3 }, low)).toMatchObject({ delay: 0, attempt: 0 });
  });

  test("a terminal event stops", () => {
    expect(decide({ kind: "done" }, base).delay).toBeUndefined();
  });

  test("429 and 503 wait at least Retry-After; 5xx back off; none is fatal", () => {
    const limited = decide(http(429, 10_000), base, low);
    expect(limited).toMatchObject({ delay: 10_000, attempt: 1 });
    expect(limited.error).toMatchObject({ kind: "http", status: 429, fatal: false });
    expect(decide(http(503, 2000), base, low).delay).toBe(2000);
    expect(decide(http(502), { ...base, attempt: 2 }, low).delay).toBe(1000);
  });

  test("401 and 403 retry with a new token at most once a second, or stop without a token source", () => {
    const refused = decide(http(401), { ...base, hasTokenSource: true }, low);
    expect(refused.delay).toBe(1000);
    expect(refused.error).toMatchObject({ kind: "auth", status: 401, fatal: false });
    const noSource = decide(http(403), base, low);
    expect(noSource.delay).toBeUndefined();
    expect(noSource.error).toMatchObject({ kind: "auth", fatal: true });
  });

  test("other 4xx (a bad selector) stop with the hub's reason", () => {
    const bad = decide(http(400), base, low);
    expect(bad.delay).toBeUndefined();
    expect(bad.error).toMatchObject({ kind: "http", status: 400, fatal: true, message: "the hub answered 400" });
  });

  test("a stalled stream switches to polling at once, unless polling is off", () => {
    expect(decide({ kind: "stalled" }, base, low)).toMatchObject({ delay: 0, toPolling: true });
    expect(decide({ kind: "stalled" }, { ...base, mayPoll: false }, low)).toMatchObject({ delay: 250, toPolling: false });
  });

  test(`${STREAM_FAILURES_BEFORE_POLL} failed streams in a row switch to polling; failed polls do not count`, () => {
    let s = { ...base };
    const seen: boolean[] = [];
    for (let i = 0; i < STREAM_FAILURES_BEFORE_POLL; i++) {
      const d = decide({ kind: "network", message: "refused" }, s, low);
      seen.push(d.toPolling);
      s = { ...s, attempt: d.attempt, streamFailures: d.streamFailures };
    }
    expect(seen).toEqual([false, false, true]);
    expect(decide({ kind: "network", message: "x" }, { ...base, streaming: false, streamFailures: 9 }, low).toPolling).toBe(false);
  });

  test("backoff grows to its cap", () => {
    const delays = [0, 1, 2, 3, 10].map((attempt) => decide({ kind: "network", message: "x" }, { ...base, attempt, mayPoll: false }, () => 0.999999).delay);
    expect(delays).toEqual([500, 1000, 2000, 4000, 30_000]);
  });
});
