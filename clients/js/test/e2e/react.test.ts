// A React page with useJob against the jobs example: the hub runs examples/jobs/tidings.toml and
// examples/jobs/job.py reports a job by signed webhooks. A page open before the job follows it to
// the end; a page opened after it finished shows the outcome at once.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { afterAll, beforeAll, expect, test } from "vitest";
import type { Browser, Page } from "playwright-core";
import { context, freePort, Hub, launch, report, until } from "./harness.js";

const EXAMPLE = fileURLToPath(new URL("../../../../examples/jobs/", import.meta.url));
let hub: Hub;
let browser: Browser;
let bundle: string;
let latestBundle: string;
let pages: Server;
let pagesOrigin: string;

beforeAll(async () => {
  // The example's page from a real local server, as `python3 -m http.server` serves it, on a
  // free port the hub's CORS then allows (instead of the config's fixed port 8000).
  const port = await freePort();
  pagesOrigin = `http://127.0.0.1:${port}`;
  const page = readFileSync(`${EXAMPLE}index.html`);
  pages = createServer((_, res) => res.writeHead(200, { "content-type": "text/html" }).end(page));
  await new Promise<void>((r) => pages.listen(port, "127.0.0.1", r));
  hub = await Hub.start(["--config", `${EXAMPLE}tidings.toml`, "--cors-origins", pagesOrigin]);
  browser = await launch();
  const out = await build({
    entryPoints: [fileURLToPath(new URL("./pages/job.tsx", import.meta.url))],
    bundle: true,
    format: "esm",
    write: false,
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"production"' },
  });
  bundle = out.outputFiles[0]!.text;
  const latest = await build({
    entryPoints: [fileURLToPath(new URL("./pages/latest.tsx", import.meta.url))],
    bundle: true,
    format: "esm",
    write: false,
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"production"' },
  });
  latestBundle = latest.outputFiles[0]!.text;
});
afterAll(async () => {
  pages?.close();
  await browser?.close();
  await hub?.stop();
});

function runJob(job: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("python3", [`${EXAMPLE}job.py`, "--hub", hub.url, "--job", job, "--wait", "0", "--delay", "0.1"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (out += b.toString()));
    child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`job.py exited ${code}: ${out}`))));
  });
}

const job = (page: Page) =>
  page.evaluate(() => {
    const el = document.getElementById("job");
    return { state: el?.dataset.state, progress: el?.dataset.progress, done: el?.dataset.done, renders: window.renders };
  });

test("useJob follows a job to its end, and shows a finished job at once", async () => {
  const html = `<!doctype html><meta charset="utf-8"><div id="root"></div><script type="module" src="/__test/job.js"></script>`;
  const latestHtml = html.replace("job.js", "latest.js");
  const ctx = await context(browser, hub.url, { "job.html": html, "job.js": bundle, "latest.html": latestHtml, "latest.js": latestBundle });
  const id = `job-e2e-${Date.now()}`;
  const before = await ctx.newPage();
  await before.goto(`${hub.url}/__test/job.html?job=${id}`);
  await until("the page to subscribe", async () => Number((await hub.stats()).subscribers) >= 1);
  const output = await runJob(id);
  const sent = output.split("\n").filter((l) => l.startsWith("-> ") && l.includes("stored as")).length;
  await until("the page to show the job done", async () => (await job(before)).done === "true");
  const live = await job(before);
  const progressSeen = [...new Set(live.renders.map((r) => r.progress).filter((p) => p !== undefined))];

  const after = await ctx.newPage();
  await after.goto(`${hub.url}/__test/job.html?job=${id}`);
  await until("the late page to show the outcome", async () => (await job(after)).done === "true");
  const late = await job(after);
  report("React useJob against the jobs example", {
    webhooksStored: sent,
    livePage: { state: live.state, progress: live.progress, progressSeen },
    latePage: { state: late.state, progress: late.progress, renders: late.renders.length },
  });
  expect(sent).toBe(13);
  expect(live).toMatchObject({ state: "completed", progress: "100", done: "true" });
  expect(progressSeen).toContain(50);
  expect(late).toMatchObject({ state: "completed", progress: "100", done: "true" });
  // The subscriptions ended after the terminal event.
  await until("no subscriber left", async () => Number((await hub.stats()).subscribers) === 0);

  // useLatest: the job's newest event at once; useTopic beside it gets only what follows.
  const watcher = await ctx.newPage();
  await watcher.goto(`${hub.url}/__test/latest.html?topic=jobs/${id}`);
  const latest = () => watcher.locator("#latest").evaluate((el) => ({ ...(el as HTMLElement).dataset }));
  await until("useLatest to show the outcome", async () => (await latest()).type === "completed");
  await until("both hooks open", async () => Number((await hub.stats()).subscribers) === 2);
  await runJob(id); // the same deliveries again: duplicates, nothing new is published
  const again = await fetch(`${hub.url}/.well-known/mercure`, {
    method: "POST",
    body: new URLSearchParams({ topic: `jobs/${id}`, type: "archived", data: "{}" }),
  });
  expect(again.status).toBe(200);
  await until("both hooks to see the new event", async () => (await latest()).type === "archived" && (await latest()).live === "archived");
});

test("the jobs example's page (examples/jobs/index.html) follows a job with the client", async () => {
  const ctx = await browser.newContext();
  const id = `job-example-${Date.now()}`;
  const tab = await ctx.newPage();
  const problems: string[] = [];
  tab.on("pageerror", (e) => problems.push(e.message));
  tab.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  await tab.goto(`${pagesOrigin}/?job=${id}&hub=${encodeURIComponent(hub.url)}`);
  await until("the page to subscribe", async () => (await tab.locator("#state").innerText()) === "waiting for the job").catch(async (e) => {
    throw new Error(`${String(e)}: ${await tab.locator("#state").innerText()} ${problems.join("; ")}`);
  });
  await runJob(id);
  await until("the page to show completed", async () => (await tab.locator("#state").innerText()) === "completed");
  const lines = await tab.locator("#log li").count();
  const bar = await tab.locator("#bar").evaluate((el) => (el as HTMLProgressElement).value);
  report("examples/jobs/index.html", { webhooksStored: 13, logLines: lines, bar });
  expect(lines).toBe(13);
  expect(bar).toBe(100);
  expect(problems).toEqual([]);
});
