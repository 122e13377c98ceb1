// A hub killed (SIGKILL) and restarted on the same port and store mid-stream: the page's client
// reconnects, resumes by Last-Event-ID, and gets every event once, in order.
import { afterAll, beforeAll, expect, test } from "vitest";
import type { Browser } from "playwright-core";
import { context, Hub, launch, publishSure, received, report, subscriberPage, tally, until } from "./harness.js";

let hub: Hub;
let browser: Browser;

beforeAll(async () => {
  hub = await Hub.start();
  browser = await launch();
});
afterAll(async () => {
  await browser?.close();
  await hub?.stop();
});

test("a hub restart mid-stream loses nothing and repeats nothing", async () => {
  const ctx = await context(browser, hub.url);
  const page = await subscriberPage(ctx, hub.url, { topics: ["e2e/restart"], share: false, backoff: { initial: 100, max: 1000 } });
  await until("the stream to open", async () => (await received(page)).statuses.includes("open/stream"));

  const sent: string[] = [];
  const total = 300;
  for (let i = 0; i < total; i++) {
    const id = `restart-${i}`;
    if (i === 100 || i === 200) {
      await hub.kill();
      // Published while the hub is down: taken once it is back.
      const pending = publishSure(hub.url, "e2e/restart", id);
      await hub.spawn();
      await pending;
    } else {
      await publishSure(hub.url, "e2e/restart", id);
    }
    sent.push(id);
  }
  await until("every event to arrive", async () => new Set((await received(page)).events).size >= total, 30_000);
  const got = await received(page);
  const counts = tally(sent, got.events);
  report("hub restart mid-stream (2 kills)", { ...counts, reconnects: got.statuses.filter((s) => s === "open/stream").length - 1 });
  expect(counts).toMatchObject({ received: total, duplicated: 0, missing: 0, unexpected: 0, inOrder: true });
  expect(got.gaps).toEqual([]);
});
