// Bundles the client into one ES module the hub embeds and serves at /dashboard/tidings.js (the
// dashboard and pages without a bundler import it from there). `--check` fails when the committed
// copy is not what the sources build to.
import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const target = fileURLToPath(new URL("../../../crates/tidings/src/http/dashboard/tidings.js", import.meta.url));
const result = await build({
  entryPoints: [fileURLToPath(new URL("../src/index.ts", import.meta.url))],
  bundle: true,
  format: "esm",
  target: "es2022",
  write: false,
  legalComments: "none",
  banner: { js: "// @tidings/client, built from clients/js/src by `npm run build` (do not edit).\n" },
});
const built = result.outputFiles[0].text;
if (process.argv.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(target, "utf8");
  } catch {
    // Missing counts as stale.
  }
  if (committed !== built) {
    console.error(`${target} is stale: run \`npm run build\` in clients/js and commit it`);
    process.exit(1);
  }
  console.log("the embedded client is fresh");
} else {
  writeFileSync(target, built);
  console.log(`wrote ${target} (${built.length} bytes)`);
}
