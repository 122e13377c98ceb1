/** Publishing from Node or a browser: `POST /.well-known/mercure` with JSON. */

import { TidingsError } from "./types.js";
import { hubBase } from "./url.js";

/** One event to publish. */
export interface PublishEvent {
  /** The canonical topic, or the canonical topic and its alternates. */
  topic: string | string[];
  /** Any JSON value (a string is sent as is). */
  data?: unknown;
  type?: string;
  /** Your own id; the hub answers 409 when it is already stored. */
  id?: string;
  private?: boolean;
  /** The SSE retry, ms. */
  retry?: number;
}

/** Options of {@link publish}. */
export interface PublishOptions {
  /** The hub's base URL or its Mercure endpoint URL. */
  hub: string | URL;
  /** A publisher token (`Authorization: Bearer`); none in the hub's open development mode. */
  token?: string;
  /** Send cookies to a hub on another origin. */
  withCredentials?: boolean;
  fetch?: typeof fetch;
  signal?: AbortSignal;
}

/**
 * Publishes one event (answers its id) or several, stored atomically in order (answers their
 * ids). A refusal throws a {@link TidingsError} with the hub's one-line reason.
 */
export async function publish(options: PublishOptions, event: PublishEvent): Promise<string>;
export async function publish(options: PublishOptions, events: PublishEvent[]): Promise<string[]>;
export async function publish(
  options: PublishOptions,
  events: PublishEvent | PublishEvent[],
): Promise<string | string[]> {
  const headers = new Headers({ "content-type": "application/json", accept: "application/json" });
  if (options.token) headers.set("authorization", `Bearer ${options.token}`);
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  let response: Response;
  try {
    response = await doFetch(new URL(".well-known/mercure", hubBase(options.hub)), {
      method: "POST",
      headers,
      body: JSON.stringify(events),
      credentials: options.withCredentials ? "include" : "same-origin",
      signal: options.signal,
    });
  } catch (e) {
    throw new TidingsError("network", `publish failed: ${String(e)}`);
  }
  const text = await response.text();
  if (!response.ok) {
    const auth = response.status === 401 || response.status === 403;
    throw new TidingsError(auth ? "auth" : "http", `the hub answered ${response.status}: ${text.trim()}`, {
      status: response.status,
      fatal: true,
    });
  }
  const answer = JSON.parse(text) as { id?: string; ids?: string[] };
  if (Array.isArray(events)) return answer.ids ?? [];
  return answer.id ?? "";
}
