/**
 * Token timing: when a JWT expires, and when to fetch the next one so the stream moves to a
 * fresh token before the hub ends it. Pure: time is passed in.
 */

/** The `exp` claim of a JWT in ms since the epoch, or undefined (not a JWT, no `exp`). */
export function tokenExpiry(token: string): number | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const json = decodeBase64Url(parts[1] ?? "");
    const claims: unknown = JSON.parse(json);
    if (typeof claims === "object" && claims !== null && "exp" in claims) {
      const exp = (claims as { exp: unknown }).exp;
      if (typeof exp === "number" && Number.isFinite(exp)) return exp * 1000;
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/**
 * When to renew a token that expires at `expiresAt` (ms), given `now`: a margin before expiry of
 * a quarter of the time left, between 500 ms and 30 s. Returns the delay from `now` (0 when the
 * token is already within its margin).
 */
export function renewDelay(expiresAt: number, now: number): number {
  const left = expiresAt - now;
  const margin = Math.min(30_000, Math.max(500, left / 4));
  return Math.max(0, left - margin);
}

function decodeBase64Url(text: string): string {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}
