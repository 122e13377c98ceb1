import { describe, expect, test } from "vitest";
import { EventStreamParser, type ParsedEvent } from "../../src/parser.js";

function parse(chunks: string[]): { events: ParsedEvent[]; retries: number[]; comments: string[] } {
  const events: ParsedEvent[] = [];
  const retries: number[] = [];
  const comments: string[] = [];
  const parser = new EventStreamParser({
    onEvent: (e) => events.push(e),
    onRetry: (ms) => retries.push(ms),
    onComment: (c) => comments.push(c),
  });
  for (const chunk of chunks) parser.feed(chunk);
  return { events, retries, comments };
}

const STREAM = ":\n\nid: 1\nevent: progress\ndata: {\"percent\":50}\n\nretry: 2500\nid: 2\ndata: a\ndata: b\n\n";

describe("EventStreamParser", () => {
  test("parses ids, types, multi-line data, retry and comments", () => {
    const { events, retries, comments } = parse([STREAM]);
    expect(events).toEqual([
      { id: "1", type: "progress", data: '{"percent":50}' },
      { id: "2", type: "message", data: "a\nb" },
    ]);
    expect(retries).toEqual([2500]);
    expect(comments).toEqual([""]);
  });

  test("gives the same events however the stream is split, byte by byte included", () => {
    const whole = parse([STREAM]).events;
    for (let cut = 1; cut < STREAM.length; cut++) {
      expect(parse([STREAM.slice(0, cut), STREAM.slice(cut)]).events).toEqual(whole);
    }
    expect(parse([...STREAM]).events).toEqual(whole);
  });

  test("accepts CRLF and lone CR line ends, even split between chunks", () => {
    const crlf = STREAM.replace(/\n/g, "\r\n");
    const cr = STREAM.replace(/\n/g, "\r");
    const whole = parse([STREAM]).events;
    expect(parse([crlf]).events).toEqual(whole);
    expect(parse([cr]).events).toEqual(whole);
    for (let cut = 1; cut < crlf.length; cut++) {
      expect(parse([crlf.slice(0, cut), crlf.slice(cut)]).events).toEqual(whole);
    }
  });

  test("an event without data is not dispatched; an unterminated one waits", () => {
    expect(parse(["event: x\n\n"]).events).toEqual([]);
    expect(parse(["data: half"]).events).toEqual([]);
  });

  test("a BOM is skipped, an id with NUL ignored, a bad retry ignored, no space after the colon kept", () => {
    const { events, retries } = parse(["\uFEFFdata:x\nid: a\u0000b\nretry: 1s\n\n", "data:  two\n\n"]);
    expect(events).toEqual([
      { id: undefined, type: "message", data: "x" },
      { id: undefined, type: "message", data: " two" },
    ]);
    expect(retries).toEqual([]);
  });

  test("the hub's reset notice arrives as a named event without id", () => {
    const { events } = parse(['event: tidings.reset\ndata: {"last_event_id":"gone"}\n\n']);
    expect(events).toEqual([{ id: undefined, type: "tidings.reset", data: '{"last_event_id":"gone"}' }]);
  });
});
