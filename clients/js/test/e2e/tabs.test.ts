// Ten tabs of one origin subscribing alike hold one connection to the hub (counted by the hub's
// /stats); when the leader tab closes, another takes over and resumes exactly.
import { afterAll, beforeAll, expect, test } from "vitest";
import type { Browser, Page } from "playwright-core";
import { context, Hub, launch, publishSure, received, report, subscriberPage, tally, until } from "./harness.js";

const TOPIC = "e2e/tabs";
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

const isLeader = (page: Page) => page.evaluate(() => (window as unknown as { t: { sub: { leader: boolean } } }).t.sub.leader);

test("ten tabs share one connection, and a new leader resumes exactly", async () => {
  const ctx = await context(browser, hub.url);
  const pages: Page[] = [];
  for (let i = 0; i < 10; i++) pages.push(await subscriberPage(ctx, hub.url, { topics: [TOPIC] }));
  await until("every tab to see the stream open", async () => {
    for (const page of pages) if (!(await received(page)).statuses.includes("open/stream")) return false;
    return true;
  });
  const connections = Number((await hub.stats()).subscribers);
  const leaders = (await Promise.all(pages.map(isLeader))).filter(Boolean).length;
  expect(connections).toBe(1);
  expect(leaders).toBe(1);

  const sent: string[] = [];
  for (let i = 0; i < 50; i++) {
    sent.push(`tab-${i}`);
    await publishSure(hub.url, TOPIC, `tab-${i}`);
  }
  await until("all tabs to get 50", async () => {
    for (const page of pages) if ((await received(page)).events.length < 50) return false;
    return true;
  });

  // Close the leader; publish while nobody holds the connection and after.
  const leader = pages[(await Promise.all(pages.map(isLeader))).indexOf(true)]!;
  const closedAt = Date.now();
  await leader.close();
  const rest = pages.filter((p) => p !== leader);
  for (let i = 50; i < 100; i++) {
    sent.push(`tab-${i}`);
    await publishSure(hub.url, TOPIC, `tab-${i}`);
  }
  await until("the nine left to get all 100", async () => {
    for (const page of rest) if (new Set((await received(page)).events).size < 100) return false;
    return true;
  });
  const catchUpMs = Date.now() - closedAt;
  const perTab = await Promise.all(rest.map(async (p) => tally(sent, (await received(p)).events)));
  await until("one connection again", async () => Number((await hub.stats()).subscribers) === 1);
  const newLeaders = (await Promise.all(rest.map(isLeader))).filter(Boolean).length;
  report("ten tabs, leader closed after 50", {
    tabs: 10,
    hubConnectionsWith10Tabs: connections,
    hubConnectionsAfterTakeover: Number((await hub.stats()).subscribers),
    sent: sent.length,
    msFromLeaderCloseToAllNineCaughtUp: catchUpMs,
    receivedPerTab: perTab.map((c) => c.received),
    duplicated: perTab.reduce((n, c) => n + c.duplicated, 0),
    missing: perTab.reduce((n, c) => n + c.missing, 0),
  });
  expect(newLeaders).toBe(1);
  for (const c of perTab) expect(c).toMatchObject({ received: 100, duplicated: 0, missing: 0, unexpected: 0, inOrder: true });
});
