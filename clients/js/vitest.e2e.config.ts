import { defineConfig } from "vitest/config";

// End to end: the real hub binary (TIDINGS_BIN) and Debian's Chromium, one file at a time.
export default defineConfig({
  test: {
    include: ["test/e2e/**/*.test.ts"],
    environment: "node",
    fileParallelism: false,
    globalSetup: ["test/e2e/setup.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
