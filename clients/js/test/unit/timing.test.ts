import { describe, expect, test } from "vitest";
import { backoffDelay, parseRetryAfter } from "../../src/backoff.js";
import { renewDelay, tokenExpiry } from "../../src/token.js";

describe("backoffDelay", () => {
  test("grows exponentially, between half and all of the ceiling, up to the cap", () => {
    const low = () => 0;
    const high = () => 0.999999;
    expect([0, 1, 2, 3].map((n) => backoffDelay(n, {}, low))).toEqual([250, 500, 1000, 2000]);
    expect([0, 1, 2, 3].map((n) => backoffDelay(n, {}, high))).toEqual([500, 1000, 2000, 4000]);
    expect(backoffDelay(50, {}, high)).toBe(30_000);
    expect(backoffDelay(50, { max: 5000 }, low)).toBe(2500);
  });

  test("never goes under the hub's floor (retry, Retry-After)", () => {
    expect(backoffDelay(0, {}, () => 0, 7000)).toBe(7000);
  });
});

describe("parseRetryAfter", () => {
  test("seconds, HTTP dates, and nonsense", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(parseRetryAfter("3", now)).toBe(3000);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:10 GMT", now)).toBe(10_000);
    expect(parseRetryAfter("Wed, 31 Dec 2025 00:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
});

describe("token timing", () => {
  const jwt = (claims: object) =>
    `${Buffer.from('{"alg":"HS256"}').toString("base64url")}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.sig`;

  test("reads exp from a JWT, nothing from anything else", () => {
    expect(tokenExpiry(jwt({ exp: 1700000000 }))).toBe(1_700_000_000_000);
    expect(tokenExpiry(jwt({ sub: "x" }))).toBeUndefined();
    expect(tokenExpiry("opaque-token")).toBeUndefined();
    expect(tokenExpiry("a.!!!.c")).toBeUndefined();
  });

  test("renews a quarter of the time left before expiry, at least 0.5 s and at most 30 s before", () => {
    expect(renewDelay(4000, 0)).toBe(3000);
    expect(renewDelay(1000, 0)).toBe(500);
    expect(renewDelay(3_600_000, 0)).toBe(3_570_000);
    expect(renewDelay(100, 0)).toBe(0);
  });
});
