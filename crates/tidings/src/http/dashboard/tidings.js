// @tidings/client, built from clients/js/src by `npm run build` (do not edit).


// src/backoff.ts
function backoffDelay(attempt, options = {}, random = Math.random, floor = 0) {
  const initial = options.initial ?? 500;
  const max = options.max ?? 3e4;
  const factor = options.factor ?? 2;
  const ceiling = Math.min(max, initial * factor ** Math.max(0, attempt));
  const jittered = ceiling / 2 + random() * ceiling / 2;
  return Math.max(Math.round(jittered), floor);
}
function parseRetryAfter(value, now = Date.now()) {
  if (value === null) return void 0;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1e3;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return void 0;
  return Math.max(0, at - now);
}

// src/types.ts
var TidingsError = class extends Error {
  kind;
  /** The HTTP status, for `http` and `auth` errors. */
  status;
  fatal;
  constructor(kind, message, options = {}) {
    super(message);
    this.name = "TidingsError";
    this.kind = kind;
    this.status = options.status;
    this.fatal = options.fatal ?? false;
  }
};
function parseData(event) {
  try {
    return JSON.parse(event.data);
  } catch {
    return void 0;
  }
}
var realClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle)
};

// src/policy.ts
var STREAM_FAILURES_BEFORE_POLL = 3;
function decide(outcome, s, random = Math.random) {
  const keep = { toPolling: false, attempt: s.attempt, streamFailures: s.streamFailures, error: void 0 };
  const backoff = (floor = 0) => ({
    delay: backoffDelay(s.attempt, s.backoff, random, Math.max(floor, s.retryMs ?? 0)),
    attempt: s.attempt + 1
  });
  switch (outcome.kind) {
    case "done":
    case "closed":
      return { ...keep, delay: void 0 };
    case "renew":
      return outcome.healthy ? { ...keep, delay: 0, attempt: 0 } : { ...keep, ...backoff() };
    case "ended":
      if (outcome.healthy) {
        return { ...keep, delay: s.retryMs ?? Math.round(random() * 250), attempt: 0, streamFailures: 0 };
      }
      return { ...keep, ...backoff() };
    case "idle":
      return { ...keep, delay: 0 };
    case "stalled":
      return {
        ...keep,
        delay: s.mayPoll ? 0 : backoff().delay,
        toPolling: s.mayPoll,
        streamFailures: 0,
        error: new TidingsError("stalled", "the stream delivered nothing: a buffering proxy? polling instead")
      };
    case "network": {
      const streamFailures = s.streaming ? s.streamFailures + 1 : s.streamFailures;
      const toPolling = s.streaming && s.mayPoll && streamFailures >= STREAM_FAILURES_BEFORE_POLL;
      return {
        ...keep,
        ...backoff(),
        toPolling,
        streamFailures: toPolling ? 0 : streamFailures,
        error: new TidingsError("network", outcome.message)
      };
    }
    case "http": {
      const { status } = outcome;
      const auth = status === 401 || status === 403;
      const retriable = status >= 500 || status === 429 || status === 408 || auth && s.hasTokenSource;
      const error = new TidingsError(auth ? "auth" : "http", outcome.message, { status, fatal: !retriable });
      if (!retriable) return { ...keep, delay: void 0, error };
      return { ...keep, ...backoff(Math.max(outcome.retryAfter ?? 0, auth ? 1e3 : 0)), error };
    }
  }
}

// src/parser.ts
var EventStreamParser = class {
  constructor(callbacks) {
    this.callbacks = callbacks;
  }
  callbacks;
  buffer = "";
  data = [];
  type = "";
  id = void 0;
  sawId = false;
  first = true;
  /** The previous chunk ended with CR: a LF starting the next chunk belongs to it. */
  pendingCR = false;
  /** Feeds decoded text; events complete in it are dispatched before this returns. */
  feed(chunk) {
    if (chunk.length === 0) return;
    if (this.first) {
      this.first = false;
      if (chunk.charCodeAt(0) === 65279) chunk = chunk.slice(1);
    }
    if (this.pendingCR && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.pendingCR = false;
    let text = this.buffer + chunk;
    let start = 0;
    for (; ; ) {
      const cr = text.indexOf("\r", start);
      const lf = text.indexOf("\n", start);
      let end;
      if (cr === -1 && lf === -1) break;
      if (cr === -1 || lf !== -1 && lf < cr) end = lf;
      else end = cr;
      const line = text.slice(start, end);
      if (text[end] === "\r") {
        if (end + 1 === text.length) {
          this.pendingCR = true;
          start = end + 1;
        } else {
          start = text[end + 1] === "\n" ? end + 2 : end + 1;
        }
      } else {
        start = end + 1;
      }
      this.line(line);
    }
    text = text.slice(start);
    this.buffer = text;
  }
  /** Forgets a partial event (call when the connection ends: it is never dispatched). */
  reset() {
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.id = void 0;
    this.sawId = false;
    this.first = true;
    this.pendingCR = false;
  }
  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) {
      this.callbacks.onComment?.(line.slice(1).replace(/^ /, ""));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.data.push(value);
        break;
      case "event":
        this.type = value;
        break;
      case "id":
        if (!value.includes("\0")) {
          this.id = value;
          this.sawId = true;
        }
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.callbacks.onRetry?.(Number(value));
        break;
      default:
        break;
    }
  }
  dispatch() {
    const hadData = this.data.length > 0;
    const event = {
      id: this.sawId ? this.id : void 0,
      type: this.type || "message",
      data: this.data.join("\n")
    };
    this.data = [];
    this.type = "";
    this.id = void 0;
    this.sawId = false;
    if (hadData) this.callbacks.onEvent(event);
  }
};

// src/token.ts
function tokenExpiry(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return void 0;
  try {
    const json = decodeBase64Url(parts[1] ?? "");
    const claims = JSON.parse(json);
    if (typeof claims === "object" && claims !== null && "exp" in claims) {
      const exp = claims.exp;
      if (typeof exp === "number" && Number.isFinite(exp)) return exp * 1e3;
    }
  } catch {
    return void 0;
  }
  return void 0;
}
function renewDelay(expiresAt, now) {
  const left = expiresAt - now;
  const margin = Math.min(3e4, Math.max(500, left / 4));
  return Math.max(0, left - margin);
}
function decodeBase64Url(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - base64.length % 4) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

// src/url.ts
function hubBase(hub) {
  const base = typeof globalThis.location === "object" ? globalThis.location.href : void 0;
  const url = new URL(String(hub), base);
  url.pathname = url.pathname.replace(/\/?\.well-known\/mercure\/?$/, "/");
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  url.search = "";
  url.hash = "";
  return url;
}
function selectorParams(options) {
  const params = new URLSearchParams();
  for (const t of options.topics ?? []) params.append("topic", t);
  for (const t of options.match ?? []) params.append("match", t);
  for (const t of options.matchURLPattern ?? []) params.append("match_urlpattern", t);
  for (const t of options.types ?? []) params.append("type", t);
  for (const t of options.until ?? []) params.append("until", t);
  return params;
}
function streamUrl(options, cursor, latest) {
  const url = new URL(".well-known/mercure", hubBase(options.hub));
  const params = selectorParams(options);
  if (cursor !== void 0) params.set("lastEventID", cursor);
  else if (latest) params.set("latest", "1");
  url.search = params.toString();
  return url;
}
function pollUrl(options, cursor, latest, wait) {
  const url = new URL("events", hubBase(options.hub));
  const params = selectorParams(options);
  if (cursor !== void 0) params.set("after", cursor);
  else if (latest) params.set("latest", "1");
  params.set("wait", String(wait));
  url.search = params.toString();
  return url;
}

// src/connection.ts
var RESET_EVENT = "tidings.reset";
var Connection = class {
  constructor(options) {
    this.options = options;
    this.cursor = options.lastEventId;
    this.latest = options.latest ?? false;
    this.transport = options.transport === "poll" ? "poll" : "stream";
    this.clock = options.clock ?? realClock;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.streamRetry = options.streamRetryInterval ?? 3e4;
    if (!options.topics?.length && !options.match?.length && !options.matchURLPattern?.length) {
      throw new TidingsError("config", "subscribe: give at least one of topics, match, matchURLPattern", {
        fatal: true
      });
    }
  }
  options;
  cursor;
  latest;
  transport;
  status = "connecting";
  attempt = 0;
  streamFailures = 0;
  retryMs;
  pollUntil = 0;
  streamRetry;
  closed = false;
  abort;
  wake;
  clock;
  fetch;
  get lastEventId() {
    return this.cursor;
  }
  get currentStatus() {
    return this.status;
  }
  get currentTransport() {
    return this.transport;
  }
  /** Runs until closed, a terminal (`until`) event, or a fatal error. */
  async run() {
    if (this.cursor === void 0 && !this.latest && this.options.transport !== "stream") {
      void this.learnHead();
    }
    while (!this.closed) {
      const outcome = this.transport === "stream" ? await this.streamOnce() : await this.pollOnce();
      if (this.closed || outcome.kind === "closed") break;
      const delay = this.next(outcome);
      if (delay === void 0) break;
      if (delay > 0) await this.sleep(delay);
    }
    this.setStatus("closed");
  }
  close() {
    this.closed = true;
    this.abort?.abort();
    this.wake?.();
  }
  /** Applies the policy's decision: the delay before the next attempt, or undefined to stop. */
  next(outcome) {
    const o = this.options;
    const d = decide(outcome, {
      attempt: this.attempt,
      streamFailures: this.streamFailures,
      retryMs: this.retryMs,
      hasTokenSource: o.getToken !== void 0,
      mayPoll: o.transport !== "stream",
      streaming: this.transport === "stream",
      backoff: o.backoff
    });
    this.attempt = d.attempt;
    this.streamFailures = d.streamFailures;
    if (d.error) this.report(d.error);
    if (d.toPolling) this.toPolling();
    if (d.delay === void 0) {
      this.closed = true;
      return void 0;
    }
    if (d.delay > 0 && outcome.kind !== "ended") this.setStatus("reconnecting");
    return d.delay;
  }
  /** Where a poll would continue from now (the hub's head for this subscription). */
  async learnHead() {
    try {
      const token = await this.token();
      const response = await this.fetch(pollUrl(this.options, void 0, false, 0), {
        headers: this.headers(token, "application/json"),
        credentials: this.options.withCredentials ? "include" : "same-origin",
        cache: "no-store"
      });
      if (!response.ok) return;
      const page = await response.json();
      if (this.cursor === void 0) this.cursor = page.last_event_id;
    } catch {
    }
  }
  toPolling() {
    if (this.options.transport === "stream") return;
    this.transport = "poll";
    this.pollUntil = this.clock.now() + this.streamRetry;
    this.streamRetry = Math.min(this.streamRetry * 2, 6e5);
    this.streamFailures = 0;
  }
  async token() {
    const token = await this.options.getToken?.();
    return token ?? void 0;
  }
  headers(token, accept) {
    const headers = new Headers({ accept });
    if (token) headers.set("authorization", `Bearer ${token}`);
    return headers;
  }
  async streamOnce() {
    const o = this.options;
    let token;
    try {
      token = await this.token();
    } catch (e) {
      return { kind: "network", message: `getToken failed: ${String(e)}` };
    }
    if (this.closed) return { kind: "closed" };
    const abort = new AbortController();
    this.abort = abort;
    let why;
    const stop = (outcome) => {
      why ??= outcome;
      abort.abort();
    };
    const timers = [];
    const later = (ms, outcome) => timers.push(this.clock.setTimeout(() => stop(outcome), ms));
    let stallTimer = this.clock.setTimeout(() => stop({ kind: "stalled" }), o.stallTimeout ?? 8e3);
    const idleMs = o.idleTimeout ?? 6e4;
    let idleTimer;
    const touch = () => {
      this.clock.clearTimeout(stallTimer);
      this.clock.clearTimeout(idleTimer);
      stallTimer = void 0;
      idleTimer = this.clock.setTimeout(() => stop({ kind: "idle" }), idleMs);
    };
    const expiresAt = token ? tokenExpiry(token) : void 0;
    if (expiresAt !== void 0) {
      later(Math.min(renewDelay(expiresAt, this.clock.now()), 2147483647), { kind: "renew", healthy: true });
    }
    const requested = this.cursor;
    let gapTold = false;
    const gap = (g) => {
      if (gapTold) return;
      gapTold = true;
      o.onGap?.(g);
    };
    let bytes = 0;
    const opened = this.clock.now();
    const lived = () => bytes > 0 && this.clock.now() - opened > 1e3;
    try {
      const response = await this.fetch(streamUrl(o, this.cursor, this.latest), {
        headers: this.headers(token, "text/event-stream"),
        credentials: o.withCredentials ? "include" : "same-origin",
        cache: "no-store",
        signal: abort.signal
      });
      if (!response.ok || !response.body) {
        const message = await describe(response);
        return { kind: "http", status: response.status, retryAfter: parseRetryAfter(response.headers.get("retry-after")), message };
      }
      const startId = response.headers.get("mercure-last-event-id") ?? response.headers.get("last-event-id");
      if (requested !== void 0 && requested !== "earliest" && startId === "earliest") {
        gap({ requestedId: requested, reason: "the hub no longer has the events after this id" });
      }
      this.latest = false;
      if (this.cursor === void 0 && startId !== null) this.cursor = startId;
      let done = false;
      const until = new Set(o.until ?? []);
      const parser = new EventStreamParser({
        onEvent: (e) => {
          if (done) return;
          if (e.type === RESET_EVENT) {
            let requestedId = requested;
            try {
              const notice = JSON.parse(e.data);
              if (typeof notice.last_event_id === "string") requestedId = notice.last_event_id;
            } catch {
            }
            gap({ requestedId, reason: "the hub no longer has the events after this id" });
            return;
          }
          if (e.id !== void 0) this.cursor = e.id;
          this.deliver({ id: e.id ?? "", type: e.type, data: e.data });
          if (until.has(e.type)) {
            done = true;
            stop({ kind: "done" });
          }
        },
        onRetry: (ms) => {
          this.retryMs = ms;
        }
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (; ; ) {
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
      if (this.abort === abort) this.abort = void 0;
      if (why?.kind === "done") this.closed = true;
    }
  }
  async pollOnce() {
    const o = this.options;
    if (o.transport !== "poll" && this.clock.now() >= this.pollUntil) {
      this.transport = "stream";
      return { kind: "renew", healthy: true };
    }
    let token;
    try {
      token = await this.token();
    } catch (e) {
      return { kind: "network", message: `getToken failed: ${String(e)}` };
    }
    if (this.closed) return { kind: "closed" };
    const abort = new AbortController();
    this.abort = abort;
    const wait = o.pollWait ?? 25;
    const guard = this.clock.setTimeout(() => abort.abort(), (wait + 15) * 1e3);
    const requested = this.cursor;
    try {
      const response = await this.fetch(pollUrl(o, this.cursor, this.latest, wait), {
        headers: this.headers(token, "application/json"),
        credentials: o.withCredentials ? "include" : "same-origin",
        cache: "no-store",
        signal: abort.signal
      });
      if (!response.ok) {
        const message = await describe(response);
        return { kind: "http", status: response.status, retryAfter: parseRetryAfter(response.headers.get("retry-after")), message };
      }
      const page = await response.json();
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
      if (this.abort === abort) this.abort = void 0;
    }
  }
  deliver(event) {
    try {
      this.options.onEvent?.(event);
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }
  report(error) {
    this.options.onError?.(error);
  }
  setStatus(status) {
    if (status === this.status && status !== "open") return;
    this.status = status;
    this.options.onStatus?.(status, this.transport);
  }
  sleep(ms) {
    return new Promise((resolve) => {
      const handle = this.clock.setTimeout(() => {
        this.wake = void 0;
        resolve();
      }, ms);
      this.wake = () => {
        this.clock.clearTimeout(handle);
        resolve();
      };
    });
  }
};
async function describe(response) {
  let text = "";
  try {
    text = (await response.text()).trim().split("\n")[0] ?? "";
  } catch {
  }
  return `the hub answered ${response.status}${text ? `: ${text.slice(0, 200)}` : ""}`;
}

// src/share.ts
var BACKLOG = 500;
function canShare() {
  return typeof BroadcastChannel === "function" && typeof navigator === "object" && typeof navigator.locks?.request === "function";
}
function shareKey(options) {
  const params = selectorParams(options);
  if (options.latest) params.set("latest", "1");
  if (options.withCredentials) params.set("credentials", "1");
  return `tidings:${hubBase(options.hub).href}?${params.toString()}`;
}
var SharedSubscription = class {
  constructor(options) {
    this.options = options;
    const key = shareKey(options);
    this.cursor = options.lastEventId;
    this.channel = new BroadcastChannel(key);
    this.channel.onmessage = (m) => this.receive(m.data);
    this.channel.postMessage({ kind: "hello", tab: this.tab });
    navigator.locks.request(key, { mode: "exclusive", signal: this.waiting.signal }, () => this.lead()).catch(() => void 0);
  }
  options;
  channel;
  connection;
  cursor;
  status = "connecting";
  transport = "stream";
  closed = false;
  release;
  backlog = [];
  tab = Math.random().toString(36).slice(2);
  welcomed = false;
  waiting = new AbortController();
  get lastEventId() {
    return this.connection?.lastEventId ?? this.cursor;
  }
  get currentStatus() {
    return this.status;
  }
  get currentTransport() {
    return this.transport;
  }
  get leader() {
    return this.connection !== void 0;
  }
  close() {
    if (this.closed) return;
    this.closed = true;
    if (!this.connection) this.waiting.abort();
    this.connection?.close();
    this.channel.close();
    this.release?.();
    this.setStatus("closed", this.transport);
  }
  /** Holds the lock (and the connection) until this tab closes or the subscription ends. */
  lead() {
    if (this.closed) return Promise.resolve();
    const o = this.options;
    const connection = new Connection({
      ...o,
      // A tab taking over resumes where the last leader's relay left it.
      lastEventId: this.cursor,
      latest: this.cursor === void 0 && (o.latest ?? false),
      onEvent: (event) => {
        this.remember(event);
        this.post({ kind: "event", event });
        this.cursor = event.id || this.cursor;
        o.onEvent?.(event);
      },
      onGap: (gap) => {
        this.post({ kind: "gap", gap });
        o.onGap?.(gap);
      },
      onStatus: (status, transport) => {
        const cursor = connection.lastEventId;
        if (cursor !== void 0 && cursor !== this.cursor) {
          this.cursor = cursor;
          this.post({ kind: "cursor", id: cursor });
        }
        this.post({ kind: "status", status, transport });
        this.setStatus(status, transport);
      },
      onError: (error) => {
        this.post({
          kind: "error",
          error: { kind: error.kind, message: error.message, status: error.status, fatal: error.fatal }
        });
        o.onError?.(error);
      }
    });
    this.connection = connection;
    return new Promise((resolve) => {
      this.release = resolve;
      void connection.run().then(() => {
        this.closed = true;
        this.channel.close();
        resolve();
      });
    });
  }
  receive(message) {
    if (this.closed) return;
    const o = this.options;
    switch (message.kind) {
      case "hello":
        if (this.connection) {
          this.post({
            kind: "welcome",
            to: message.tab,
            events: o.latest ? this.backlog : [],
            cursor: this.connection.lastEventId,
            status: this.status,
            transport: this.transport
          });
        }
        break;
      case "welcome":
        if (message.to !== this.tab || this.welcomed || this.connection) break;
        this.welcomed = true;
        for (const event of message.events) {
          if (!this.backlog.some((seen) => seen.id === event.id)) this.follow(event);
        }
        if (message.cursor !== void 0) this.cursor = message.cursor;
        this.setStatus(message.status, message.transport);
        break;
      case "event":
        if (!this.connection) this.follow(message.event);
        break;
      case "cursor":
        if (!this.connection) this.cursor = message.id;
        break;
      case "status":
        if (!this.connection) {
          this.setStatus(message.status, message.transport);
          if (message.status === "closed") this.close();
        }
        break;
      case "gap":
        if (!this.connection) o.onGap?.(message.gap);
        break;
      case "error":
        if (!this.connection) {
          const { kind, message: text, status, fatal } = message.error;
          o.onError?.(new TidingsError(kind, text, { status, fatal }));
        }
        break;
    }
  }
  follow(event) {
    this.remember(event);
    if (event.id) this.cursor = event.id;
    this.options.onEvent?.(event);
    if (this.options.until?.includes(event.type)) this.close();
  }
  remember(event) {
    this.backlog.push(event);
    if (this.backlog.length > BACKLOG) this.backlog.shift();
  }
  post(message) {
    if (!this.closed) this.channel.postMessage(message);
  }
  setStatus(status, transport) {
    const changed = status !== this.status || transport !== this.transport;
    this.status = status;
    this.transport = transport;
    if (changed) this.options.onStatus?.(status, transport);
  }
};

// src/publish.ts
async function publish(options, events) {
  const headers = new Headers({ "content-type": "application/json", accept: "application/json" });
  if (options.token) headers.set("authorization", `Bearer ${options.token}`);
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  let response;
  try {
    response = await doFetch(new URL(".well-known/mercure", hubBase(options.hub)), {
      method: "POST",
      headers,
      body: JSON.stringify(events),
      credentials: options.withCredentials ? "include" : "same-origin",
      signal: options.signal
    });
  } catch (e) {
    throw new TidingsError("network", `publish failed: ${String(e)}`);
  }
  const text = await response.text();
  if (!response.ok) {
    const auth = response.status === 401 || response.status === 403;
    throw new TidingsError(auth ? "auth" : "http", `the hub answered ${response.status}: ${text.trim()}`, {
      status: response.status,
      fatal: true
    });
  }
  const answer = JSON.parse(text);
  if (Array.isArray(events)) return answer.ids ?? [];
  return answer.id ?? "";
}

// src/index.ts
function subscribe(options) {
  if (!options.topics?.length && !options.match?.length && !options.matchURLPattern?.length) {
    throw new TidingsError("config", "subscribe: give at least one of topics, match, matchURLPattern", {
      fatal: true
    });
  }
  if (options.share !== false && canShare()) {
    const shared = new SharedSubscription(options);
    return {
      close: () => shared.close(),
      get lastEventId() {
        return shared.lastEventId;
      },
      get status() {
        return shared.currentStatus;
      },
      get transport() {
        return shared.currentTransport;
      },
      get leader() {
        return shared.leader;
      }
    };
  }
  const connection = new Connection(options);
  void connection.run();
  return {
    close: () => connection.close(),
    get lastEventId() {
      return connection.lastEventId;
    },
    get status() {
      return connection.currentStatus;
    },
    get transport() {
      return connection.currentTransport;
    },
    leader: true
  };
}
export {
  EventStreamParser,
  TidingsError,
  backoffDelay,
  parseData,
  parseRetryAfter,
  publish,
  realClock,
  renewDelay,
  subscribe,
  tokenExpiry
};
