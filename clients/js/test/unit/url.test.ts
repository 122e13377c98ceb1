import { describe, expect, test } from "vitest";
import { shareKey } from "../../src/share.js";
import { hubBase, pollUrl, streamUrl } from "../../src/url.js";

describe("hub URLs", () => {
  test("the base from the base or the Mercure endpoint", () => {
    expect(hubBase("https://hub.example").href).toBe("https://hub.example/");
    expect(hubBase("https://hub.example/.well-known/mercure").href).toBe("https://hub.example/");
    expect(hubBase("https://x.example/hub/.well-known/mercure?topic=a").href).toBe("https://x.example/hub/");
  });

  test("both selector generations, filters, resume and latest", () => {
    const o = { hub: "https://hub.example", topics: ["jobs/{id}"], match: ["a"], matchURLPattern: ["/b/*"], types: ["t"], until: ["done"] };
    expect(streamUrl(o, undefined, true).href).toBe(
      "https://hub.example/.well-known/mercure?topic=jobs%2F%7Bid%7D&match=a&match_urlpattern=%2Fb%2F*&type=t&until=done&latest=1",
    );
    expect(streamUrl(o, "urn:x", true).searchParams.get("lastEventID")).toBe("urn:x");
    expect(streamUrl(o, "urn:x", true).searchParams.has("latest")).toBe(false);
    const poll = pollUrl(o, "urn:x", false, 25);
    expect(poll.pathname).toBe("/events");
    expect(poll.searchParams.get("after")).toBe("urn:x");
    expect(poll.searchParams.get("wait")).toBe("25");
  });

  test("tabs share only what subscribes alike", () => {
    const a = shareKey({ hub: "https://hub.example", topics: ["a"] });
    expect(shareKey({ hub: "https://hub.example/.well-known/mercure", topics: ["a"] })).toBe(a);
    expect(shareKey({ hub: "https://hub.example", topics: ["b"] })).not.toBe(a);
    expect(shareKey({ hub: "https://hub.example", topics: ["a"], latest: true })).not.toBe(a);
  });
});
