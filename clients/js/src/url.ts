/** The hub's URLs for a subscription: the SSE endpoint and the polling endpoint. */

import type { SubscribeOptions } from "./types.js";

/** The hub's base URL, whether given as the base or as its Mercure endpoint. */
export function hubBase(hub: string | URL): URL {
  const base = typeof globalThis.location === "object" ? globalThis.location.href : undefined;
  const url = new URL(String(hub), base);
  url.pathname = url.pathname.replace(/\/?\.well-known\/mercure\/?$/, "/");
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  url.search = "";
  url.hash = "";
  return url;
}

/** The query every request of a subscription carries (selectors and filters). */
export function selectorParams(options: SubscribeOptions): URLSearchParams {
  const params = new URLSearchParams();
  for (const t of options.topics ?? []) params.append("topic", t);
  for (const t of options.match ?? []) params.append("match", t);
  for (const t of options.matchURLPattern ?? []) params.append("match_urlpattern", t);
  for (const t of options.types ?? []) params.append("type", t);
  for (const t of options.until ?? []) params.append("until", t);
  return params;
}

/** The stream URL, resuming after `cursor` (or asking for `latest` when there is none yet). */
export function streamUrl(options: SubscribeOptions, cursor: string | undefined, latest: boolean): URL {
  const url = new URL(".well-known/mercure", hubBase(options.hub));
  const params = selectorParams(options);
  if (cursor !== undefined) params.set("lastEventID", cursor);
  else if (latest) params.set("latest", "1");
  url.search = params.toString();
  return url;
}

/** The long-poll URL. */
export function pollUrl(
  options: SubscribeOptions,
  cursor: string | undefined,
  latest: boolean,
  wait: number,
): URL {
  const url = new URL("events", hubBase(options.hub));
  const params = selectorParams(options);
  if (cursor !== undefined) params.set("after", cursor);
  else if (latest) params.set("latest", "1");
  params.set("wait", String(wait));
  url.search = params.toString();
  return url;
}
