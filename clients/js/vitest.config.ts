import { defineConfig } from "vitest/config";

// Unit tests: pure parts, no network, no browser.
export default defineConfig({
  test: { include: ["test/unit/**/*.test.ts"], environment: "node" },
});
