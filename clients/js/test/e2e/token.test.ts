// A hub with a key and subscriber tokens that expire every 3 s: the client asks for a fresh one
// before each expiry (and the hub ends a stream at its token's exp), so private events keep
// arriving through many tokens, none lost or repeated.
import { afterAll, beforeAll, expect, test } from "vitest";
import type { Browser } from "playwright-core";
import { context, Hub, launch, mintToken, received, report, tally, until } from "./harness.js";

const KEY = "e2e-token-test-key-of-at-least-32-bytes!";
const TOPIC = "e2e/private";
let hub: Hub;
let browser: Browser;

beforeAll(async () => {
  hub = await Hub.start(["--jwt-key", KEY, "--jwt-leeway", "0s"]);
  browser = await launch();
});
afterAll(async () => {
  await browser?.close();
  await hub?.stop();
});

test("a token expiring every few seconds is refreshed with no loss", async () => {
  const ctx = await context(browser, hub.url);
  let minted = 0;
  const sub = await ctx.newPage();
  await sub.exposeFunction("mintToken", () => {
    minted++;
    return mintToken(KEY, { exp: Math.floor(Date.now() / 1000) + 3, mercure: { subscribe: [TOPIC] } });
  });
  await sub.goto(`${hub.url}/__test/page.html?o=${encodeURIComponent(JSON.stringify({ topics: [TOPIC], share: false, useToken: true }))}`);
  await until("the stream to open", async () => (await received(sub)).statuses.includes("open/stream"));

  const publisher = mintToken(KEY, { exp: Math.floor(Date.now() / 1000) + 600, mercure: { publish: ["*"] } });
  const sent: string[] = [];
  const started = Date.now();
  for (let i = 0; Date.now() - started < 12_000; i++) {
    const id = `tok-${i}`;
    // Private: only a subscriber whose token covers the topic receives it.
    await publishPrivate(hub.url, TOPIC, id, publisher);
    sent.push(id);
    await new Promise((r) => setTimeout(r, 40));
  }
  await until("every event to arrive", async () => new Set((await received(sub)).events).size >= sent.length, 20_000);
  const got = await received(sub);
  const counts = tally(sent, got.events);
  report("token expiring every 3 s", { ...counts, tokens: got.tokens, seconds: Math.round((Date.now() - started) / 1000) });
  expect(counts).toMatchObject({ duplicated: 0, missing: 0, unexpected: 0, inOrder: true });
  expect(got.tokens).toBeGreaterThanOrEqual(4);
  expect(got.errors.filter((e) => e.startsWith("auth"))).toEqual([]);
  expect(minted).toBe(got.tokens);
});

async function publishPrivate(hubUrl: string, topic: string, id: string, token: string): Promise<void> {
  const response = await fetch(`${hubUrl}/.well-known/mercure`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ topic, id, type: "tick", private: true, data: { id } }),
  });
  if (!response.ok) throw new Error(`publish ${id}: ${response.status} ${await response.text()}`);
}
