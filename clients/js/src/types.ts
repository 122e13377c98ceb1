/** The public types of the client. */

import type { BackoffOptions } from "./backoff.js";

/** An event delivered to the application. */
export interface TidingsEvent {
  /** The event's id: what a resume starts after. */
  id: string;
  /** The event type (`"message"` when the publisher gave none). */
  type: string;
  /** The data, as published (JSON is a string here: see {@link parseData}). */
  data: string;
}

/** Where the subscription stands. */
export type Status = "connecting" | "open" | "polling" | "reconnecting" | "closed";

/** How events reach the client. */
export type Transport = "stream" | "poll";

/** Told when events the subscription asked for can no longer be replayed. */
export interface Gap {
  /** The id the client resumed after, which the hub no longer knows. */
  requestedId: string | undefined;
  /** Why, in words. */
  reason: string;
}

/** What kind of failure a {@link TidingsError} reports. */
export type ErrorKind = "http" | "network" | "auth" | "stalled" | "config";

/** A failure of the subscription or of a publish. `fatal` ones end the subscription. */
export class TidingsError extends Error {
  readonly kind: ErrorKind;
  /** The HTTP status, for `http` and `auth` errors. */
  readonly status: number | undefined;
  readonly fatal: boolean;

  constructor(kind: ErrorKind, message: string, options: { status?: number; fatal?: boolean } = {}) {
    super(message);
    this.name = "TidingsError";
    this.kind = kind;
    this.status = options.status;
    this.fatal = options.fatal ?? false;
  }
}

/** A token source: called before each connection and before the current token's `exp`. */
export type TokenSource = () => string | null | undefined | Promise<string | null | undefined>;

/** Timers, injectable so retry and expiry logic can be tested without waiting. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The hub's selectors: at least one of `topics`, `match`, `matchURLPattern`. */
export interface Selectors {
  /** Mercure's `topic` parameters: exact topics, `*`, URI templates (`jobs/{id}`). */
  topics?: string[];
  /** The newer Mercure draft's exact `match` parameters. */
  match?: string[];
  /** The newer Mercure draft's `match_urlpattern` parameters. */
  matchURLPattern?: string[];
}

/** Options of {@link subscribe}. */
export interface SubscribeOptions extends Selectors {
  /** The hub's base URL (`https://hub.example`) or its Mercure endpoint URL. */
  hub: string | URL;
  /** Resume after this id (`"earliest"`: all retained history). */
  lastEventId?: string;
  /** Start with the newest retained event of each matching topic (the hub's `latest=1`). */
  latest?: boolean;
  /** Event types that end the subscription once received (the hub's `until`). */
  until?: string[];
  /** Only these event types (the hub's `type`). */
  types?: string[];
  /** The subscriber token, sent as `Authorization: Bearer`, never in a URL. */
  getToken?: TokenSource;
  /** Send cookies (a `mercureAuthorization` cookie) to a hub on another origin. */
  withCredentials?: boolean;
  /**
   * Share one connection among the tabs of this origin that subscribe alike (default: true
   * where `BroadcastChannel` and Web Locks exist).
   */
  share?: boolean;
  /** `"auto"` (default): stream, fall back to polling when a stream cannot be held. */
  transport?: "auto" | Transport;
  /** A stream that yields no byte this long after the request is treated as buffered (ms, 8,000). */
  stallTimeout?: number;
  /** An open stream silent this long is reconnected (ms, 60,000; the hub's heartbeat is 15 s). */
  idleTimeout?: number;
  /** Long-poll wait in seconds (25). */
  pollWait?: number;
  /** While polling, how long before trying a stream again (ms, 30,000; doubles on each failure). */
  streamRetryInterval?: number;
  /** The reconnect schedule. */
  backoff?: BackoffOptions;
  onEvent?: (event: TidingsEvent) => void;
  onGap?: (gap: Gap) => void;
  onStatus?: (status: Status, transport: Transport) => void;
  onError?: (error: TidingsError) => void;
  /** `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Timers (default: the real ones). */
  clock?: Clock;
}

/** A running subscription. */
export interface Subscription {
  /** Stops it for good. */
  close(): void;
  /** The id the next resume starts after. */
  readonly lastEventId: string | undefined;
  readonly status: Status;
  readonly transport: Transport;
  /** Whether this tab holds the connection (false: another tab shares its events with it). */
  readonly leader: boolean;
}

/** Parses an event's data as JSON (undefined when it is not JSON). */
export function parseData<T = unknown>(event: Pick<TidingsEvent, "data">): T | undefined {
  try {
    return JSON.parse(event.data) as T;
  } catch {
    return undefined;
  }
}

/** The real timers. */
export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};
