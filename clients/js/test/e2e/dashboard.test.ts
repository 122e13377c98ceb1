// The dashboard at `/`, rendered by Chromium with live numbers (a screenshot is kept in
// test-results/dashboard.png), and, on a hub with a key, showing nothing without a token.
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import type { Browser, Page } from "playwright-core";
import { Hub, launch, mintToken, publishSure, report, RESULTS, until } from "./harness.js";

const KEY = "e2e-dashboard-key-of-at-least-32-bytes!!";
let browser: Browser;
const hubs: Hub[] = [];

beforeAll(async () => {
  browser = await launch();
});
afterAll(async () => {
  await browser?.close();
  for (const hub of hubs) await hub.stop();
});

/** A page that records console errors, page errors and the paths it requested. */
async function watched(): Promise<{ page: Page; problems: string[]; paths: string[] }> {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  const problems: string[] = [];
  const paths: string[] = [];
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`page: ${e.message}`));
  page.on("request", (r) => paths.push(new URL(r.url()).pathname));
  return { page, problems, paths };
}

const text = (page: Page, id: string) => page.locator(`#${id}`).innerText();

test("the dashboard shows live numbers in the open development mode", async () => {
  const hub = await Hub.start();
  hubs.push(hub);
  const { page, problems } = await watched();
  await page.goto(hub.url);
  expect(await text(page, "mode")).toBe("open development mode");
  await until("the tail to be live", async () => (await text(page, "tail-status")).startsWith("open"));

  let sent = 0;
  const publishing = (async () => {
    for (const deadline = Date.now() + 7000; Date.now() < deadline; sent++) {
      await publishSure(hub.url, `orders/${sent % 5}`, `dash-${sent}`, undefined, sent % 3 ? "updated" : "created");
      await new Promise((r) => setTimeout(r, 40));
    }
  })();
  await page.fill("#publish-form textarea", '{"from":"the dashboard test"}');
  await page.click("#publish-form button");
  await until("a latency measured", async () => (await text(page, "latency")).endsWith("ms"));
  await publishing;
  await until("the rate chart drawn", async () => (await page.locator("#chart polyline").count()) === 2);
  await until("rates shown", async () => Number(await text(page, "publish_rate")) > 0);
  await until("all events in the tail", async () => (await page.locator("#tail li").count()) >= Math.min(200, sent + 1));

  // What Mercure's conformance suite does from this page: EventSource and fetch, same origin.
  const conformance = await page.evaluate(async () => {
    const es = new EventSource("/.well-known/mercure?topic=conformance");
    const opened = await new Promise((r) => {
      es.onopen = () => r(true);
      es.onerror = () => r(false);
    });
    es.close();
    const posted = await fetch("/.well-known/mercure", { method: "POST", body: new URLSearchParams({ topic: "conformance", data: "x" }) });
    return { opened, posted: posted.status };
  });
  expect(conformance).toEqual({ opened: true, posted: 200 });

  const numbers = {
    subscribers: await text(page, "subscribers"),
    publishRate: await text(page, "publish_rate"),
    deliveryRate: await text(page, "delivery_rate"),
    latency: await text(page, "latency"),
    health: await text(page, "health"),
    tailLines: await page.locator("#tail li").count(),
  };
  await page.screenshot({ path: join(RESULTS, "dashboard.png"), fullPage: true });
  report("dashboard, open mode", { eventsPublished: sent + 1, ...numbers, problems: problems.length });
  expect(Number(numbers.subscribers)).toBeGreaterThanOrEqual(1);
  expect(numbers.health).toBe("ok");
  expect(problems).toEqual([]);
});

test("with a key, the dashboard reads nothing until it has a token", async () => {
  const hub = await Hub.start(["--jwt-key", KEY]);
  hubs.push(hub);
  const { page, problems, paths } = await watched();
  await page.goto(hub.url);
  await until("the mode shown", async () => (await text(page, "mode")) === "token required");
  await page.waitForLoadState("networkidle");
  expect(paths.filter((p) => p === "/stats" || p.startsWith("/.well-known/mercure") || p === "/events")).toEqual([]);
  expect(await text(page, "subscribers")).toBe("–");
  expect(problems).toEqual([]);

  const operator = mintToken(KEY, { exp: Math.floor(Date.now() / 1000) + 600, mercure: { subscribe: ["*"], publish: ["*"] } });
  await page.goto(`${hub.url}/#token=${operator}`);
  await until("the tail to be live", async () => (await text(page, "tail-status")).startsWith("open"));
  expect(page.url()).not.toContain(operator);
  const publisher = mintToken(KEY, { exp: Math.floor(Date.now() / 1000) + 600, mercure: { publish: ["*"] } });
  const response = await fetch(`${hub.url}/.well-known/mercure`, {
    method: "POST",
    headers: { authorization: `Bearer ${publisher}` },
    body: new URLSearchParams({ topic: "secret/1", data: "private payload", private: "on", id: "private-1" }),
  });
  expect(response.status).toBe(200);
  await until("the private event in the tail", async () => (await page.locator("#tail").innerText()).includes("private payload"));
  await until("numbers shown", async () => (await text(page, "subscribers")) !== "–");
  expect(problems).toEqual([]);
});
