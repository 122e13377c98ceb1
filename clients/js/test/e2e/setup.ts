// Before the end-to-end suite: start a fresh record of the scenarios' counts.
import { rmSync } from "node:fs";
import { join } from "node:path";
import { RESULTS } from "./harness.js";

export default function setup(): void {
  rmSync(join(RESULTS, "e2e-counts.jsonl"), { force: true });
}
