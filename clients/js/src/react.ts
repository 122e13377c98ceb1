/**
 * React hooks over the client (React is a peer dependency; the core has no React in it).
 * `useTopic` for any feed, `useLatest` for the current value of one topic, `useJob` for the
 * progress of a job that may have finished before the page loaded.
 */

import { useEffect, useMemo, useRef, useState } from "react";
import { subscribe } from "./index.js";
import { parseData, type Status, type SubscribeOptions, type TidingsError, type TidingsEvent } from "./types.js";

/** Options of the hooks: those of `subscribe` but the selectors and callbacks. */
export type HookOptions = Omit<
  SubscribeOptions,
  "topics" | "match" | "matchURLPattern" | "onEvent" | "onStatus" | "onError" | "onGap"
> & {
  /** Keep at most this many events in `events` (default 100). */
  keep?: number;
  /** Told when the hub cannot replay what was missed: refetch the state. */
  onGap?: SubscribeOptions["onGap"];
};

/** What {@link useTopic} answers. */
export interface TopicState {
  /** The newest events, oldest first (at most `keep`). */
  events: TidingsEvent[];
  /** The newest event. */
  last: TidingsEvent | undefined;
  status: Status;
  /** The last error; cleared when the connection opens again. */
  error: TidingsError | undefined;
}

/** Subscribes while mounted; resubscribes when the topics or the hub change. */
export function useTopic(topics: string | string[], options: HookOptions): TopicState {
  const list = useMemo(() => (Array.isArray(topics) ? topics : [topics]), [JSON.stringify(topics)]);
  const [state, setState] = useState<TopicState>({ events: [], last: undefined, status: "connecting", error: undefined });
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const keep = options.keep ?? 100;
  const key = JSON.stringify([list, String(options.hub), options.latest, options.until, options.types, options.lastEventId, options.transport]);
  useEffect(() => {
    const o = optionsRef.current;
    if (list.length === 0) return undefined;
    setState({ events: [], last: undefined, status: "connecting", error: undefined });
    const sub = subscribe({
      ...o,
      topics: list,
      getToken: o.getToken ? () => optionsRef.current.getToken?.() : undefined,
      onGap: (gap) => optionsRef.current.onGap?.(gap),
      onEvent: (event) =>
        setState((s) => ({ ...s, events: [...s.events, event].slice(-keep), last: event })),
      onStatus: (status) =>
        setState((s) => ({ ...s, status, error: status === "open" || status === "polling" ? undefined : s.error })),
      onError: (error) => setState((s) => ({ ...s, error })),
    });
    return () => sub.close();
  }, [key, keep]);
  return state;
}

/** The newest event of one topic (also when it was published before the page loaded). */
export function useLatest<T = unknown>(
  topic: string,
  options: HookOptions,
): { value: T | undefined; event: TidingsEvent | undefined; status: Status; error: TidingsError | undefined } {
  const { last, status, error } = useTopic(topic, { latest: true, keep: 1, ...options });
  const value = useMemo(() => (last ? parseData<T>(last) : undefined), [last]);
  return { value, event: last, status, error };
}

/** The state of a job, as its events say. */
export interface JobState<R = unknown> {
  /** The type of the job's newest event (`"queued"`, `"progress"`, `"completed"`, …); `undefined` before any. */
  state: string | undefined;
  /** The newest `percent` any event carried (0 to 100), `100` once completed. */
  progress: number | undefined;
  /** The terminal event's data (`completed`). */
  result: R | undefined;
  /** The failure (`failed` event's data), or a connection error. */
  error: unknown;
  /** Whether a terminal event arrived (the subscription has ended). */
  done: boolean;
  status: Status;
}

/** Options of {@link useJob}. */
export type JobOptions = HookOptions & {
  /** The topic of a job id (default `jobs/${id}`). */
  topic?: (jobId: string) => string;
  /** Event types that succeed (default `["completed"]`). */
  success?: string[];
  /** Event types that fail (default `["failed"]`). */
  failure?: string[];
};

/**
 * Follows a job: starts with its newest event (`latest`), so a job that finished before the page
 * loaded shows its outcome at once, and ends after the terminal event.
 */
export function useJob<R = unknown>(jobId: string | undefined, options: JobOptions): JobState<R> {
  const success = options.success ?? ["completed"];
  const failure = options.failure ?? ["failed"];
  const topic = jobId ? (options.topic ?? ((id: string) => `jobs/${id}`))(jobId) : "";
  const { events, status, error } = useTopic(jobId ? topic : [], {
    ...options,
    latest: true,
    until: [...success, ...failure],
  });
  return useMemo(() => {
    let state: string | undefined;
    let progress: number | undefined;
    let result: R | undefined;
    let failed: unknown;
    let done = false;
    for (const event of events) {
      state = event.type;
      const data = parseData<Record<string, unknown>>(event);
      const percent = data && typeof data === "object" ? data.percent : undefined;
      if (typeof percent === "number") progress = percent;
      if (success.includes(event.type)) {
        done = true;
        progress = 100;
        result = data as R;
      } else if (failure.includes(event.type)) {
        done = true;
        failed = data ?? event.data;
      }
    }
    return { state, progress, result, error: failed ?? error, done, status };
  }, [events, status, error]);
}
