/**
 * One tab's connection to the hub: a `fetch` stream resumed by Last-Event-ID across every
 * reconnect, with backoff, token renewal, gap signals, and a fall back to long polling (same
 * cursor) when a stream cannot be held. {@link share} puts one of these behind many tabs.
 */

import { parseRetryAfter } from "./backoff.js";
import { decide, type Outcome } from "./policy.js";
import { EventStreamParser } from "./parser.js";
import { renewDelay, tokenExpiry } from "./token.js";
import {
  realClock,
  TidingsError,
  type Clock,
  type Gap,
  type Status,
  type SubscribeOptions,
  type TidingsEvent,
  type Transport,
} from "./types.js";
import { pollUrl, streamUrl } from "./url.js";

/** The event type the hub sends when a resume finds its id gone. */
const RESET_EVENT = "tidings.reset";

/** A connection; `close()` ends it. Observers are the options' callbacks. */
export class Connection {
  private cursor: string | undefined;
  private latest: boolean;
  private transport: Transport;
  private status: Status = "connecting";
  private attempt = 0;
  private streamFailures = 0;
  private retryMs: number | undefined;
  private pollUntil = 0;
  private streamRetry: number;
  private closed = false;
  private abort: AbortController | undefined;
  private wake: (() => void) | undefined;
  private readonly clock: Clock;
  private readonly fetch: typeof fetch;

  constructor(private readonly options: SubscribeOptions) {
    this.cursor = options.lastEventId;
    this.latest = options.latest ?? false;
    this.transport = options.transport === "poll" ? "poll" : "stream";
    this.clock = options.clock ?? realClock;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.streamRetry = options.streamRetryInterval ?? 30_000;
    if (!options.topics?.length && !options.match?.length && !options.matchURLPattern?.length) {
      throw new TidingsError("config", "subscribe: give at least one of topics, match, matchURLPattern", {
        fatal: true,
      });
    }
  }

  get lastEventId(): string | undefined {
    return this.cursor;
  }
  get currentStatus(): Status {
    return this.status;
  }
  get currentTransport(): Transport {
    return this.transport;
  }

  /** Runs until closed, a terminal (`until`) event, or a fatal error. */
  async run(): Promise<void> {
    if (this.cursor === undefined && !this.latest && this.options.transport !== "stream") {
      // A live start has no cursor until the stream's headers name one, and a buffering proxy
      // may hold those back too: learn the hub's position now, so a fall back to polling still
      // starts from the moment of subscribing.
      void this.learnHead();
    }
    while (!this.closed) {
      const outcome = this.transport === "stream" ? await this.streamOnce() : await this.pollOnce();
      if (this.closed || outcome.kind === "closed") break;
      const delay = this.next(outcome);
      if (delay === undefined) break;
      if (delay > 0) await this.sleep(delay);
    }
    this.setStatus("closed");
  }

  close(): void {
    this.closed = true;
    this.abort?.abort();
    this.wake?.();
  }

  /** Applies the policy's decision: the delay before the next attempt, or undefined to stop. */
  private next(outcome: Outcome): number | undefined {
    const o = this.options;
    const d = decide(outcome, {
      attempt: this.attempt,
      streamFailures: this.streamFailures,
      retryMs: this.retryMs,
      hasTokenSource: o.getToken !== undefined,
      mayPoll: o.transport !== "stream",
      streaming: this.transport === "stream",
      backoff: o.backoff,
    });
    this.attempt = d.attempt;
    this.streamFailures = d.streamFailures;
    if (d.error) this.report(d.error);
    if (d.toPolling) this.toPolling();
    if (d.delay === undefined) {
      this.closed = true;
      return undefined;
    }
    if (d.delay > 0 && outcome.kind !== "ended") this.setStatus("reconnecting");
    return d.delay;
  }

  /** Where a poll would continue from now (the hub's head for this subscription). */
  private async learnHead(): Promise<void> {
    try {
      const token = await this.token();
      const response = await this.fetch(pollUrl(this.options, undefined, false, 0), {
        headers: this.headers(token, "application/json"),
        credentials: this.options.withCredentials ? "include" : "same-origin",
        cache: "no-store",
      });
      if (!response.ok) return;
      const page = (await response.json()) as PollPage;
      // The stream's own answer, when it came first, is as good and newer.
      if (this.cursor === undefined) this.cursor = page.last_event_id;
    } catch {
      // The stream will tell us, or fail and be retried.
    }
  }

  private toPolling(): void {
    if (this.options.transport === "stream") return;
    this.transport = "poll";
    this.pollUntil = this.clock.now() + this.streamRetry;
    this.streamRetry = Math.min(this.streamRetry * 2, 600_000);
    this.streamFailures = 0;
  }

  private async token(): Promise<string | undefined> {
    const token = await this.options.getToken?.();
    return token ?? undefined;
  }

  private headers(token: string | undefined, accept: string): Headers {
    const headers = new Headers({ accept });
    if (token) headers.set("authorization", `Bearer ${token}`);
    return headers;
  }

  private async streamOnce(): Promise<Outcome> {
    const o = this.options;
    let token: string | undefined;
    try {
      token = await this.token();
    } catch (e) {
      return { kind: "network", message: `getToken failed: ${String(e)}` };
    }
    if (this.closed) return { kind: "closed" };
    const abort = new AbortController();
    this.abort = abort;
    let why: Outcome | undefined;
    const stop = (outcome: Outcome) => {
      why ??= outcome;
      abort.abort();
    };
    const timers: unknown[] = [];
    const later = (ms: number, outcome: Outcome) => timers.push(this.clock.setTimeout(() => stop(outcome), ms));
    let stallTimer = this.clock.setTimeout(() => stop({ kind: "stalled" }), o.stallTimeout ?? 8000);
    const idleMs = o.idleTimeout ?? 60_000;
    let idleTimer: unknown;
    const touch = () => {
      this.clock.clearTimeout(stallTimer);
      this.clock.clearTimeout(idleTimer);
      stallTimer = undefined;
      idleTimer = this.clock.setTimeout(() => stop({ kind: "idle" }), idleMs);
    };
    const expiresAt = token ? tokenExpiry(token) : undefined;
    // (setTimeout cannot wait past 2^31 ms; a reconnect after 24 days is harmless.)
    if (expiresAt !== undefined) {
      later(Math.min(renewDelay(expiresAt, this.clock.now()), 2_147_483_647), { kind: "renew", healthy: true });
    }
    const requested = this.cursor;
    let gapTold = false;
    const gap = (g: Gap) => {
      if (gapTold) return;
      gapTold = true;
      o.onGap?.(g);
    };
    let bytes = 0;
    const opened = this.clock.now();
    const lived = () => bytes > 0 && this.clock.now() - opened > 1000;
    try {
      const response = await this.fetch(streamUrl(o, this.cursor, this.latest), {
        headers: this.headers(token, "text/event-stream"),
        credentials: o.withCredentials ? "include" : "same-origin",
        cache: "no-store",
        signal: abort.signal,
      });
      if (!response.ok || !response.body) {
        const message = await describe(response);
        return { kind: "http", status: response.status, retryAfter: parseRetryAfter(response.headers.get("retry-after")), message };
      }
      const startId = response.headers.get("mercure-last-event-id") ?? response.headers.get("last-event-id");
      if (requested !== undefined && requested !== "earliest" && startId === "earliest") {
        gap({ requestedId: requested, reason: "the hub no longer has the events after this id" });
      }
      this.latest = false;
      if (this.cursor === undefined && startId !== null) this.cursor = startId;
      let done = false;
      const until = new Set(o.until ?? []);
      const parser = new EventStreamParser({
        onEvent: (e) => {
          if (done) return;
          if (e.type === RESET_EVENT) {
            let requestedId = requested;
            try {
              const notice = JSON.parse(e.data) as { last_event_id?: unknown };
              if (typeof notice.last_event_id === "string") requestedId = notice.last_event_id;
            } catch {
              // An older hub's notice: keep what we asked for.
            }
            gap({ requestedId, reason: "the hub no longer has the events after this id" });
            return;
          }
          if (e.id !== undefined) this.cursor = e.id;
          this.deliver({ id: e.id ?? "", type: e.type, data: e.data });
          if (until.has(e.type)) {
            done = true;
            stop({ kind: "done" });
          }
        },
        onRetry: (ms) => {
          this.retryMs = ms;
        },
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        if (value.byteLength === 0) continue;
        if (bytes === 0) {
          this.transport = "stream";
          this.streamFailures = 0;
          this.setStatus("open");
        }
        bytes += value.byteLength;
        touch();
        parser.feed(decoder.decode(value, { stream: true }));
      }
      return done ? { kind: "done" } : { kind: "ended", healthy: lived() };
    } catch (e) {
      if (this.closed) return { kind: "closed" };
      if (why?.kind === "renew") return { kind: "renew", healthy: lived() };
      if (why) return why;
      return { kind: "network", message: `stream failed: ${String(e)}` };
    } finally {
      this.clock.clearTimeout(stallTimer);
      this.clock.clearTimeout(idleTimer);
      for (const t of timers) this.clock.clearTimeout(t);
      if (this.abort === abort) this.abort = undefined;
      if (why?.kind === "done") this.closed = true;
    }
  }

  private async pollOnce(): Promise<Outcome> {
    const o = this.options;
    if (o.transport !== "poll" && this.clock.now() >= this.pollUntil) {
      // Time to try a stream again; the cursor carries over either way.
      this.transport = "stream";
      return { kind: "renew", healthy: true };
    }
    let token: string | undefined;
    try {
      token = await this.token();
    } catch (e) {
      return { kind: "network", message: `getToken failed: ${String(e)}` };
    }
    if (this.closed) return { kind: "closed" };
    const abort = new AbortController();
    this.abort = abort;
    const wait = o.pollWait ?? 25;
    const guard = this.clock.setTimeout(() => abort.abort(), (wait + 15) * 1000);
    const requested = this.cursor;
    try {
      const response = await this.fetch(pollUrl(o, this.cursor, this.latest, wait), {
        headers: this.headers(token, "application/json"),
        credentials: o.withCredentials ? "include" : "same-origin",
        cache: "no-store",
        signal: abort.signal,
      });
      if (!response.ok) {
        const message = await describe(response);
        return { kind: "http", status: response.status, retryAfter: parseRetryAfter(response.headers.get("retry-after")), message };
      }
      const page = (await response.json()) as PollPage;
      this.latest = false;
      this.attempt = 0;
      this.setStatus("polling");
      if (page.reset) {
        o.onGap?.({ requestedId: requested, reason: "the hub no longer has the events after this id" });
      }
      const until = new Set(o.until ?? []);
      for (const e of page.events) {
        if (this.closed) return { kind: "closed" };
        this.cursor = e.id;
        this.deliver({ id: e.id, type: e.type ?? "message", data: e.data });
        if (until.has(e.type ?? "message")) return { kind: "done" };
      }
      this.cursor = page.last_event_id;
      return page.more ? { kind: "renew", healthy: true } : { kind: "ended", healthy: true };
    } catch (e) {
      if (this.closed) return { kind: "closed" };
      return { kind: "network", message: `poll failed: ${String(e)}` };
    } finally {
      this.clock.clearTimeout(guard);
      if (this.abort === abort) this.abort = undefined;
    }
  }

  private deliver(event: TidingsEvent): void {
    try {
      this.options.onEvent?.(event);
    } catch (e) {
      // An application callback's error must not break the connection.
      queueMicrotask(() => {
        throw e;
      });
    }
  }

  private report(error: TidingsError): void {
    this.options.onError?.(error);
  }

  private setStatus(status: Status): void {
    if (status === this.status && status !== "open") return;
    this.status = status;
    this.options.onStatus?.(status, this.transport);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const handle = this.clock.setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        this.clock.clearTimeout(handle);
        resolve();
      };
    });
  }
}

/** The polling endpoint's answer. */
interface PollPage {
  events: { id: string; type: string | null; data: string }[];
  last_event_id: string;
  more: boolean;
  reset?: { reason: string; last_event_id: string };
}

async function describe(response: Response): Promise<string> {
  let text = "";
  try {
    text = (await response.text()).trim().split("\n")[0] ?? "";
  } catch {
    // The body is not readable; the status says enough.
  }
  return `the hub answered ${response.status}${text ? `: ${text.slice(0, 200)}` : ""}`;
}
