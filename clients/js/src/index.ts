/**
 * The Tidings client: {@link subscribe} to a hub's topics over a resumable `fetch` stream (tokens
 * in a header, exact resume, backoff, gap signals, polling fallback, one connection for all tabs),
 * and {@link publish} events. No dependencies; React hooks are in `@tidings/client/react`.
 *
 * @example
 * ```ts
 * const sub = subscribe({
 *   hub: "https://hub.example",
 *   topics: ["jobs/42"],
 *   latest: true,
 *   getToken: () => fetch("/hub-token").then((r) => r.text()),
 *   onEvent: (e) => console.log(e.type, parseData(e)),
 *   onGap: () => refetchState(),
 * });
 * ```
 */

import { Connection } from "./connection.js";
import { canShare, SharedSubscription } from "./share.js";
import { TidingsError, type SubscribeOptions, type Subscription } from "./types.js";

export { publish } from "./publish.js";
export type { PublishEvent, PublishOptions } from "./publish.js";
export { EventStreamParser } from "./parser.js";
export type { ParsedEvent, ParserCallbacks } from "./parser.js";
export { backoffDelay, parseRetryAfter } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { tokenExpiry, renewDelay } from "./token.js";
export { parseData, realClock, TidingsError } from "./types.js";
export type {
  Clock,
  ErrorKind,
  Gap,
  Selectors,
  Status,
  SubscribeOptions,
  Subscription,
  TidingsEvent,
  TokenSource,
  Transport,
} from "./types.js";

/** Subscribes; events arrive through `options.onEvent` until `close()`. */
export function subscribe(options: SubscribeOptions): Subscription {
  if (!options.topics?.length && !options.match?.length && !options.matchURLPattern?.length) {
    throw new TidingsError("config", "subscribe: give at least one of topics, match, matchURLPattern", {
      fatal: true,
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
      },
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
    leader: true,
  };
}
