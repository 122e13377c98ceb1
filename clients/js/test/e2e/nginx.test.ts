// The hub behind Debian's nginx with response buffering forced on and the hub's
// `X-Accel-Buffering: no` ignored and stripped: a stream delivers nothing until it ends, so the
// client must notice, fall back to long polling with the same cursor, and lose nothing.
// nginx's proxy_buffering alone still forwards each read while the client keeps up; what holds a
// stream back in practice is a filter that buffers too, here gzip on text/event-stream (a common
// misconfiguration). The test first proves the proxy delivers no byte of a stream.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import type { Browser } from "playwright-core";
import { context, freePort, Hub, launch, publishSure, received, report, subscriberPage, tally, until } from "./harness.js";

const NGINX = process.env.NGINX ?? "/usr/sbin/nginx";
let hub: Hub;
let browser: Browser;
let nginx: ChildProcess | undefined;
let proxy: string;

beforeAll(async () => {
  if (!existsSync(NGINX)) throw new Error(`${NGINX} is missing: apt-get install nginx (Debian's package)`);
  hub = await Hub.start();
  const port = await freePort();
  const dir = join(hub.dir, "nginx");
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, "nginx.conf"),
    `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  gzip on;
  gzip_types text/event-stream application/json;
  gzip_min_length 1;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${hub.port};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # What a misconfigured proxy does: buffer every response, whatever the hub asks.
      proxy_buffering on;
      proxy_ignore_headers X-Accel-Buffering;
      proxy_hide_header X-Accel-Buffering;
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
      proxy_read_timeout 1h;
    }
  }
}
`,
  );
  nginx = spawn(NGINX, ["-c", join(dir, "nginx.conf"), "-p", dir, "-e", join(dir, "error.log")], { stdio: "inherit" });
  proxy = `http://127.0.0.1:${port}`;
  await until("nginx", async () => (await fetch(`${proxy}/healthz`)).ok);
  browser = await launch();
});
afterAll(async () => {
  await browser?.close();
  if (nginx && nginx.exitCode === null) {
    const exited = new Promise((r) => nginx?.once("exit", r));
    nginx.kill("SIGTERM");
    await exited;
  }
  await hub?.stop();
});

test("behind a buffering proxy the client falls back to polling and loses nothing", async () => {
  // The proof that the proxy buffers: a stream through it yields no byte in 2 s.
  const abort = new AbortController();
  const probe = await Promise.race([
    fetch(`${proxy}/.well-known/mercure?topic=probe`, { signal: abort.signal, headers: { "accept-encoding": "gzip" } })
      .then((r) => r.body!.getReader().read())
      .then(() => "bytes"),
    new Promise((r) => setTimeout(() => r("nothing"), 2000)),
  ]);
  abort.abort();
  expect(probe).toBe("nothing");

  const ctx = await context(browser, proxy);
  const page = await subscriberPage(ctx, proxy, { topics: ["e2e/proxied"], share: false, stallTimeout: 2000, pollWait: 5, streamRetryInterval: 2500 });
  const sent: string[] = [];
  const started = Date.now();
  for (let i = 0; Date.now() - started < 8000; i++) {
    const id = `proxied-${i}`;
    await publishSure(hub.url, "e2e/proxied", id);
    sent.push(id);
    await new Promise((r) => setTimeout(r, 50));
  }
  await until("every event to arrive", async () => new Set((await received(page)).events).size >= sent.length, 20_000).catch(
    async (e) => {
      throw new Error(`${String(e)}: ${JSON.stringify({ ...(await received(page)), events: (await received(page)).events.length })}`);
    },
  );
  const got = await received(page);
  const counts = tally(sent, got.events);
  report("nginx buffering, X-Accel-Buffering stripped", { ...counts, stalledStreams: got.errors.filter((e) => e.startsWith("stalled")).length });
  expect(got.statuses).toContain("polling/poll");
  // It tried streaming again after 2.5 s (and found the proxy still buffering).
  expect(got.errors.filter((e) => e.startsWith("stalled")).length).toBeGreaterThanOrEqual(2);
  expect(counts).toMatchObject({ duplicated: 0, missing: 0, unexpected: 0, inOrder: true });
});
