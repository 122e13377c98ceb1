// The client from Node (a backend): publish() single events and atomic batches with a token,
// refusals as typed errors with the hub's one-line reason, and subscribe() with the newer
// draft's `match` selectors and a `types` filter.
import { afterAll, beforeAll, expect, test } from "vitest";
import { publish, subscribe, TidingsError, type TidingsEvent } from "../../src/index.js";
import { Hub, mintToken, report, until } from "./harness.js";

const KEY = "e2e-node-key-of-at-least-32-bytes-long!!";
let hub: Hub;

beforeAll(async () => {
  hub = await Hub.start(["--jwt-key", KEY]);
});
afterAll(async () => {
  await hub?.stop();
});

test("publish and subscribe from Node", async () => {
  const token = mintToken(KEY, { exp: Math.floor(Date.now() / 1000) + 600, mercure: { publish: ["node/{x}"], subscribe: ["node/{x}"] } });
  const got: TidingsEvent[] = [];
  const statuses: string[] = [];
  const sub = subscribe({
    hub: `${hub.url}/.well-known/mercure`,
    match: ["node/a", "node/b"],
    types: ["kept"],
    getToken: () => token,
    onEvent: (e) => got.push(e),
    onStatus: (s) => statuses.push(s),
  });
  await until("the stream to open", () => statuses.includes("open"));
  expect(sub.leader).toBe(true);

  const one = await publish({ hub: hub.url, token }, { topic: "node/a", type: "kept", data: { n: 1 } });
  const batch = await publish({ hub: hub.url, token }, [
    { topic: "node/b", type: "dropped", data: "filtered by type" },
    { topic: "node/b", type: "kept", data: "two", private: true },
    { topic: "node/c", type: "kept", data: "not selected" },
  ]);
  expect(batch).toHaveLength(3);
  await until("two events", () => got.length >= 2);
  sub.close();
  expect(got.map((e) => [e.id, e.type, e.data])).toEqual([
    [one, "kept", '{"n":1}'],
    [batch[1], "kept", "two"],
  ]);

  const bad = await publish({ hub: hub.url, token }, { topic: "" }).catch((e: unknown) => e);
  expect(bad).toBeInstanceOf(TidingsError);
  expect(bad).toMatchObject({ kind: "http", status: 400, fatal: true });
  expect((bad as Error).message).toMatch(/^the hub answered 400: .+/);
  const refused = await publish({ hub: hub.url, token: "not.a.token" }, { topic: "node/a" }).catch((e: unknown) => e);
  expect(refused).toMatchObject({ kind: "auth", status: 401 });
  const outside = await publish({ hub: hub.url, token }, { topic: "elsewhere" }).catch((e: unknown) => e);
  expect(outside).toMatchObject({ kind: "auth", status: 403 });
  report("Node publish + subscribe (match, types)", { published: 4, selectedAndKept: 2, received: got.length });
});

test("a subscription the hub refuses ends with a typed error, without retrying", async () => {
  const errors: TidingsError[] = [];
  let closed = false;
  subscribe({
    hub: hub.url,
    topics: ["a{"],
    onError: (e) => errors.push(e),
    onStatus: (s) => (closed ||= s === "closed"),
  });
  await until("the subscription to end", () => closed);
  expect(errors).toHaveLength(1);
  expect(errors[0]).toMatchObject({ kind: "http", status: 400, fatal: true });
});

test("a resume the hub cannot honour is told once through onGap, by stream and by poll", async () => {
  const token = mintToken(KEY, { exp: Math.floor(Date.now() / 1000) + 600, mercure: { publish: ["*"] } });
  for (const transport of ["stream", "poll"] as const) {
    const gaps: unknown[] = [];
    const got: string[] = [];
    const statuses: string[] = [];
    const sub = subscribe({
      hub: hub.url,
      topics: ["gap/t"],
      lastEventId: "urn:uuid:no-such-event",
      transport,
      pollWait: 1,
      onGap: (g) => gaps.push(g),
      onEvent: (e) => got.push(e.data),
      onStatus: (s) => statuses.push(s),
    });
    await until(`the ${transport} to start`, () => statuses.includes(transport === "stream" ? "open" : "polling"));
    // After the gap, the subscription goes on from the hub's head: new events still arrive.
    await publish({ hub: hub.url, token }, { topic: "gap/t", data: `after-${transport}` });
    await until(`the ${transport} to get the next event`, () => got.includes(`after-${transport}`));
    sub.close();
    expect(gaps).toEqual([{ requestedId: "urn:uuid:no-such-event", reason: "the hub no longer has the events after this id" }]);
    expect(got).toEqual([`after-${transport}`]);
  }
});
