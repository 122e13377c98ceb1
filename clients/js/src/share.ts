/**
 * One connection for every tab of an origin: the tabs that subscribe alike elect a leader with a
 * Web Lock; the leader holds the {@link Connection} and relays what it sees on a
 * `BroadcastChannel`. When the leader's tab closes, the browser hands the lock to the next tab,
 * which resumes from the last id it was relayed, so nothing is lost or repeated.
 */

import { Connection } from "./connection.js";
import type { Gap, Status, SubscribeOptions, TidingsEvent, Transport } from "./types.js";
import { TidingsError } from "./types.js";
import { hubBase, selectorParams } from "./url.js";

/** Events a leader keeps for tabs that join later (those that asked for `latest`). */
const BACKLOG = 500;

type Message =
  | { kind: "event"; event: TidingsEvent }
  | { kind: "cursor"; id: string }
  | { kind: "status"; status: Status; transport: Transport }
  | { kind: "gap"; gap: Gap }
  | { kind: "error"; error: { kind: TidingsError["kind"]; message: string; status?: number; fatal: boolean } }
  | { kind: "hello"; tab: string }
  | { kind: "welcome"; to: string; events: TidingsEvent[]; cursor: string | undefined; status: Status; transport: Transport };

/** Whether this environment can share (a browser with BroadcastChannel and Web Locks). */
export function canShare(): boolean {
  return (
    typeof BroadcastChannel === "function" &&
    typeof navigator === "object" &&
    typeof (navigator as Navigator & { locks?: LockManager }).locks?.request === "function"
  );
}

/** The name tabs agree on: the same hub, selectors and filters share a connection. */
export function shareKey(options: SubscribeOptions): string {
  const params = selectorParams(options);
  if (options.latest) params.set("latest", "1");
  if (options.withCredentials) params.set("credentials", "1");
  return `tidings:${hubBase(options.hub).href}?${params.toString()}`;
}

/** A subscription shared across tabs. */
export class SharedSubscription {
  private channel: BroadcastChannel;
  private connection: Connection | undefined;
  private cursor: string | undefined;
  private status: Status = "connecting";
  private transport: Transport = "stream";
  private closed = false;
  private release: (() => void) | undefined;
  private backlog: TidingsEvent[] = [];
  private readonly tab = Math.random().toString(36).slice(2);
  private welcomed = false;
  private readonly waiting = new AbortController();

  constructor(private readonly options: SubscribeOptions) {
    const key = shareKey(options);
    this.cursor = options.lastEventId;
    this.channel = new BroadcastChannel(key);
    this.channel.onmessage = (m: MessageEvent<Message>) => this.receive(m.data);
    this.channel.postMessage({ kind: "hello", tab: this.tab } satisfies Message);
    // A closed follower withdraws its request (the promise then rejects, which is expected).
    navigator.locks.request(key, { mode: "exclusive", signal: this.waiting.signal }, () => this.lead()).catch(() => undefined);
  }

  get lastEventId(): string | undefined {
    return this.connection?.lastEventId ?? this.cursor;
  }
  get currentStatus(): Status {
    return this.status;
  }
  get currentTransport(): Transport {
    return this.transport;
  }
  get leader(): boolean {
    return this.connection !== undefined;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.connection) this.waiting.abort();
    this.connection?.close();
    this.channel.close();
    this.release?.();
    this.setStatus("closed", this.transport);
  }

  /** Holds the lock (and the connection) until this tab closes or the subscription ends. */
  private lead(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const o = this.options;
    const connection = new Connection({
      ...o,
      // A tab taking over resumes where the last leader's relay left it.
      lastEventId: this.cursor,
      latest: this.cursor === undefined && (o.latest ?? false),
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
        if (cursor !== undefined && cursor !== this.cursor) {
          this.cursor = cursor;
          this.post({ kind: "cursor", id: cursor });
        }
        this.post({ kind: "status", status, transport });
        this.setStatus(status, transport);
      },
      onError: (error) => {
        this.post({
          kind: "error",
          error: { kind: error.kind, message: error.message, status: error.status, fatal: error.fatal },
        });
        o.onError?.(error);
      },
    });
    this.connection = connection;
    return new Promise<void>((resolve) => {
      this.release = resolve;
      void connection.run().then(() => {
        // Ended by a terminal event or a fatal error: every tab saw why; let go.
        this.closed = true;
        this.channel.close();
        resolve();
      });
    });
  }

  private receive(message: Message): void {
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
            transport: this.transport,
          });
        }
        break;
      case "welcome":
        if (message.to !== this.tab || this.welcomed || this.connection) break;
        this.welcomed = true;
        for (const event of message.events) {
          if (!this.backlog.some((seen) => seen.id === event.id)) this.follow(event);
        }
        if (message.cursor !== undefined) this.cursor = message.cursor;
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

  private follow(event: TidingsEvent): void {
    this.remember(event);
    if (event.id) this.cursor = event.id;
    this.options.onEvent?.(event);
    // A terminal event ends every tab's subscription, not only the leader's.
    if (this.options.until?.includes(event.type)) this.close();
  }

  private remember(event: TidingsEvent): void {
    this.backlog.push(event);
    if (this.backlog.length > BACKLOG) this.backlog.shift();
  }

  private post(message: Message): void {
    if (!this.closed) this.channel.postMessage(message);
  }

  private setStatus(status: Status, transport: Transport): void {
    const changed = status !== this.status || transport !== this.transport;
    this.status = status;
    this.transport = transport;
    if (changed) this.options.onStatus?.(status, transport);
  }
}
