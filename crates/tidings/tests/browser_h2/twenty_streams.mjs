// Chromium, directly against the hub over HTTPS (the hub's certificate comes from a test CA, so
// --ignore-certificate-errors): one page opens STREAMS EventSources to the hub's origin, waits
// until all are open, publishes EVENTS events, and waits until every stream has every event.
// Over HTTP/1.1 Chromium opens at most six connections per origin, so the seventh stream would
// never open; over HTTP/2 they share one connection. Prints one JSON line with what it saw.
//
// Usage: node twenty_streams.mjs https://127.0.0.1:PORT [streams] [events]
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [hub, streamsArg = "20", eventsArg = "5"] = process.argv.slice(2);
if (!hub) {
  console.error("usage: node twenty_streams.mjs https://127.0.0.1:PORT [streams] [events]");
  process.exit(2);
}
const streams = Number(streamsArg);
const events = Number(eventsArg);
const profile = mkdtempSync(join(tmpdir(), "tidings-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  ignoreHTTPSErrors: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--ignore-certificate-errors",
  ],
});
let result;
try {
  const page = await context.newPage();
  // A page of the hub's own origin, so the EventSources are same-origin.
  await page.goto(`${hub}/healthz`);
  result = await page.evaluate(
    async ({ streams, events }) => {
      const protocol = performance.getEntriesByType("navigation")[0]?.nextHopProtocol;
      const received = Array.from({ length: streams }, () => []);
      const sources = [];
      const opened = await Promise.race([
        Promise.all(
          received.map(
            (ids, i) =>
              new Promise((resolve) => {
                const es = new EventSource(`/.well-known/mercure?topic=${encodeURIComponent("browser/h2")}`);
                sources.push(es);
                es.onopen = () => resolve(i);
                es.onmessage = (e) => ids.push(e.lastEventId);
              }),
          ),
        ).then((all) => all.length),
        new Promise((resolve) => setTimeout(() => resolve(-1), 10000)),
      ]);
      if (opened !== streams) {
        const open = sources.filter((s) => s.readyState === EventSource.OPEN).length;
        sources.forEach((s) => s.close());
        return { protocol, opened: open, published: [], received };
      }
      const published = [];
      for (let n = 0; n < events; n++) {
        const body = new URLSearchParams({ topic: "browser/h2", data: `event ${n}` });
        const reply = await fetch("/.well-known/mercure", { method: "POST", body });
        published.push(await reply.text());
      }
      const deadline = Date.now() + 10000;
      while (received.some((ids) => ids.length < events) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      sources.forEach((s) => s.close());
      return { protocol, opened, published, received };
    },
    { streams, events },
  );
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
