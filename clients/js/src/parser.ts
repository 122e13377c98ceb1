/**
 * A streaming parser of the `text/event-stream` format (the HTML standard's "event stream
 * interpretation"): feed it text as it arrives, in chunks split anywhere, and it calls back once
 * per dispatched event. Pure: no network, no timers.
 */

/** One event as the stream dispatched it. */
export interface ParsedEvent {
  /** The `id:` field's value, when the event had one (an `id:` with a NUL is ignored). */
  id: string | undefined;
  /** The `event:` field, `"message"` when absent. */
  type: string;
  /** The `data:` lines joined by `\n`. */
  data: string;
}

/** What the parser reports besides events. */
export interface ParserCallbacks {
  onEvent(event: ParsedEvent): void;
  /** A `retry:` field with a valid integer, in milliseconds. */
  onRetry?(ms: number): void;
  /** A comment line (heartbeats are comments). */
  onComment?(text: string): void;
}

/** The parser's state between chunks. */
export class EventStreamParser {
  private buffer = "";
  private data: string[] = [];
  private type = "";
  private id: string | undefined = undefined;
  private sawId = false;
  private first = true;
  /** The previous chunk ended with CR: a LF starting the next chunk belongs to it. */
  private pendingCR = false;

  constructor(private readonly callbacks: ParserCallbacks) {}

  /** Feeds decoded text; events complete in it are dispatched before this returns. */
  feed(chunk: string): void {
    if (chunk.length === 0) return;
    if (this.first) {
      this.first = false;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
    }
    if (this.pendingCR && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.pendingCR = false;
    let text = this.buffer + chunk;
    let start = 0;
    for (;;) {
      const cr = text.indexOf("\r", start);
      const lf = text.indexOf("\n", start);
      let end: number;
      if (cr === -1 && lf === -1) break;
      if (cr === -1 || (lf !== -1 && lf < cr)) end = lf;
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
  reset(): void {
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.id = undefined;
    this.sawId = false;
    this.first = true;
    this.pendingCR = false;
  }

  private line(line: string): void {
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

  private dispatch(): void {
    const hadData = this.data.length > 0;
    const event: ParsedEvent = {
      id: this.sawId ? this.id : undefined,
      type: this.type || "message",
      data: this.data.join("\n"),
    };
    this.data = [];
    this.type = "";
    this.id = undefined;
    this.sawId = false;
    // As EventSource: an event without data lines is not dispatched.
    if (hadData) this.callbacks.onEvent(event);
  }
}
