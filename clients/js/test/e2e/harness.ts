/**
 * What the end-to-end tests share: the real hub binary (path in TIDINGS_BIN), started on a
 * free port and awaited by polling /healthz; Debian's Chromium through playwright-core; test
 * pages served on the hub's own origin by request interception; HS256 tokens minted with
 * node's crypto; and the counts each scenario reports.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

export const RESULTS = new URL("../../test-results/", import.meta.url).pathname;

/** The hub binary; the Rust test that runs this suite passes it. */
export function hubBinary(): string {
  const bin = process.env.TIDINGS_BIN;
  if (!bin) throw new Error("TIDINGS_BIN is not set: run the suite through `cargo test` (crates/tidings/tests/it/js_client.rs)");
  return bin;
}

/** A port nothing listens on now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it answers true, failing after `ms`. */
export async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (${String(last)})` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A running hub process. */
export class Hub {
  readonly url: string;
  private child: ChildProcess | undefined;
  private log = "";

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly args: string[],
  ) {
    this.url = `http://127.0.0.1:${port}`;
  }

  /** Starts a hub with its own temporary store; `args` are extra `serve` flags. */
  static async start(args: string[] = [], port?: number): Promise<Hub> {
    const dir = mkdtempSync(join(tmpdir(), "tidings-e2e-"));
    const hub = new Hub(port ?? (await freePort()), dir, args);
    await hub.spawn();
    return hub;
  }

  /** Starts the process (again, on the same port and store) and waits until it answers. */
  async spawn(): Promise<void> {
    const child = spawn(
      hubBinary(),
      ["serve", "--listen", `127.0.0.1:${this.port}`, "--store", join(this.dir, "hub.db"), ...this.args],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } },
    );
    this.child = child;
    const keep = (b: Buffer) => {
      this.log = (this.log + b.toString()).slice(-20_000);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    await until(`the hub on ${this.url}\n${this.log}`, async () => {
      if (child.exitCode !== null) throw new Error(`the hub exited: ${this.log}`);
      return (await fetch(`${this.url}/healthz`)).ok;
    });
  }

  /** SIGKILL: no clean shutdown, as a crash. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  async stats(): Promise<Record<string, unknown>> {
    return (await (await fetch(`${this.url}/stats`)).json()) as Record<string, unknown>;
  }
}

/** Publishes `id` on `topic`, retrying until the hub has it (200, or 409: stored before). */
export async function publishSure(hubUrl: string, topic: string, id: string, token?: string, type = "tick"): Promise<void> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const response = await fetch(`${hubUrl}/.well-known/mercure`, {
        method: "POST",
        headers,
        body: JSON.stringify({ topic, id, type, data: { id } }),
      });
      if (response.ok || response.status === 409) return;
      if (response.status < 500) throw new Error(`publish ${id}: ${response.status} ${await response.text()}`);
    } catch (e) {
      if (e instanceof Error && e.message.startsWith("publish ")) throw e;
    }
    if (Date.now() > deadline) throw new Error(`publish ${id}: the hub did not take it in 30 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** An HS256 JWT with `claims`, signed with `key`. */
export function mintToken(key: string, claims: Record<string, unknown>): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", key).update(body).digest("base64url")}`;
}

/** Debian's Chromium, headless, with a fresh profile. */
export async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-sync",
      "--disable-quic",
      "--disable-dev-shm-usage",
    ],
  });
}

/**
 * A context whose pages at `${origin}/__test/...` are served by the test (so they share the
 * hub's origin, or a proxy's) and import the client the hub embeds, `/dashboard/tidings.js`.
 */
export async function context(browser: Browser, origin: string, files: Record<string, string> = {}): Promise<BrowserContext> {
  const ctx = await browser.newContext();
  await ctx.route(`${origin}/__test/**`, async (route) => {
    const path = new URL(route.request().url()).pathname.replace("/__test/", "");
    const body = files[path] ?? (path === "page.html" ? SUBSCRIBER_PAGE : undefined);
    if (body === undefined) return route.fulfill({ status: 404, body: "no such test file" });
    const type = path.endsWith(".js") ? "text/javascript" : "text/html";
    return route.fulfill({ status: 200, contentType: type, body });
  });
  return ctx;
}

/**
 * A page that subscribes with the options in its query (JSON in `?o=`) and records every event,
 * status and gap in `window.t`. A `getToken` asks the test (`window.mintToken`, exposed by it).
 */
const SUBSCRIBER_PAGE = `<!doctype html><meta charset="utf-8"><title>subscriber</title>
<script type="module">
import { subscribe } from "/dashboard/tidings.js";
const o = JSON.parse(new URLSearchParams(location.search).get("o"));
window.t = { events: [], statuses: [], gaps: [], errors: [], tokens: 0 };
if (o.useToken) o.getToken = async () => { window.t.tokens++; return await window.mintToken(); };
window.t.sub = subscribe({
  ...o,
  hub: location.origin,
  onEvent: (e) => window.t.events.push(e.id),
  onStatus: (s, tr) => window.t.statuses.push(s + "/" + tr),
  onGap: (g) => window.t.gaps.push(g),
  onError: (e) => window.t.errors.push(e.kind + ": " + e.message),
});
window.t.ready = true;
</script>`;

/** Opens the subscriber page with `options` and waits until its subscription exists. */
export async function subscriberPage(ctx: BrowserContext, origin: string, options: Record<string, unknown>): Promise<Page> {
  const page = await ctx.newPage();
  await page.goto(`${origin}/__test/page.html?o=${encodeURIComponent(JSON.stringify(options))}`);
  await page.waitForFunction(() => (window as unknown as { t?: { ready?: boolean } }).t?.ready === true);
  return page;
}

/** What a page has received so far. */
export async function received(page: Page): Promise<{ events: string[]; statuses: string[]; gaps: unknown[]; errors: string[]; tokens: number }> {
  return page.evaluate(() => {
    const t = (window as unknown as { t: { events: string[]; statuses: string[]; gaps: unknown[]; errors: string[]; tokens: number } }).t;
    return { events: [...t.events], statuses: [...t.statuses], gaps: [...t.gaps], errors: [...t.errors], tokens: t.tokens };
  });
}

/** Counts: how many of `sent` arrived, how many arrived twice, how many were never sent. */
export function tally(sent: string[], got: string[]): { sent: number; received: number; duplicated: number; missing: number; unexpected: number; inOrder: boolean } {
  const seen = new Set<string>();
  let duplicated = 0;
  for (const id of got) {
    if (seen.has(id)) duplicated++;
    seen.add(id);
  }
  const wanted = new Set(sent);
  const missing = sent.filter((id) => !seen.has(id)).length;
  const unexpected = [...seen].filter((id) => !wanted.has(id)).length;
  const order = got.filter((id) => wanted.has(id));
  const inOrder = order.every((id, i) => i === 0 || sent.indexOf(id) > sent.indexOf(order[i - 1] ?? ""));
  return { sent: sent.length, received: seen.size, duplicated, missing, unexpected, inOrder };
}

/** Records a scenario's counts in test-results/e2e-counts.jsonl and prints them. */
export function report(scenario: string, counts: Record<string, unknown>): void {
  mkdirSync(RESULTS, { recursive: true });
  const line = JSON.stringify({ scenario, ...counts, at: new Date().toISOString() });
  appendFileSync(join(RESULTS, "e2e-counts.jsonl"), `${line}\n`);
  console.log(`E2E ${line}`);
}
