#!/usr/bin/env bash
# Runs Mercure's own conformance suite (`conformance-tests/` of dunglas/mercure) against ONE
# `tidings serve`, nothing in front of it, in Debian's Chromium. Both generations at once: give
# the suite of the stable line (tag v0.24.2) and the one of the 1.0 draft (main); each is a
# directory holding its mercure.spec.ts. Nothing of the suite is copied into this repository;
# only npm packages are downloaded (@playwright/test, dotenv), never browsers.
#
#   scripts/mercure-conformance.sh STABLE_SUITE_DIR [DRAFT_SUITE_DIR]
#
# Environment: PORT (random), CHROMIUM (/usr/bin/chromium), WORK (a fresh temporary directory),
# TIDINGS (a tidings binary; by default target/debug/tidings, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n 2,10p "$0"; exit 2; }

if [ -z "${TIDINGS:-}" ]; then
    cargo build -p tidings
    TIDINGS=$PWD/target/debug/tidings
fi
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || { echo "no Chromium at $CHROMIUM (apt-get install chromium)" >&2; exit 1; }
PORT=${PORT:-$((20000 + RANDOM % 20000))}
WORK=${WORK:-$(mktemp -d /tmp/tidings-conformance.XXXXXX)}

i=0
for suite in "$@"; do
    i=$((i + 1))
    mkdir -p "$WORK/suite$i"
    cp "$suite/mercure.spec.ts" "$WORK/suite$i/"
done
cat > "$WORK/package.json" <<'JSON'
{ "name": "tidings-mercure-conformance", "private": true,
  "devDependencies": { "@playwright/test": "^1.49.0", "dotenv": "^16.4.5" } }
JSON
# The suite's own .env: publishers send their own ids, which the hub must answer.
echo "CUSTOM_ID=1" > "$WORK/.env"
# The suite's playwright.config.ts, reduced to Chromium from Debian and a list reporter.
cat > "$WORK/playwright.config.ts" <<'TS'
import type { PlaywrightTestConfig } from "@playwright/test";
import { devices } from "@playwright/test";
require("dotenv").config();
const config: PlaywrightTestConfig = {
  testDir: process.env.SUITE_DIR,
  timeout: 10 * 1000,
  expect: { timeout: 5000 },
  retries: 0,
  workers: 1,
  reporter: "list",
  use: { actionTimeout: 0, baseURL: process.env.BASE_URL, ignoreHTTPSErrors: true },
  projects: [{
    name: "chromium",
    use: { ...devices["Desktop Chrome"], launchOptions: {
      executablePath: process.env.CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"] } },
  }],
};
export default config;
TS
(cd "$WORK" && npm install --no-audit --no-fund --silent)

# One hub for both generations: the suites' HS256 key (stable-line tokens, no aud) and the
# draft's resource identifier and issuer (its access tokens carry aud and iss).
"$TIDINGS" serve --listen "127.0.0.1:$PORT" --store "sqlite://$WORK/hub.db" \
    --jwt-key '!ChangeThisMercureHubJWTSecretKey!' \
    --jwt-audience https://localhost/.well-known/mercure --jwt-issuer https://localhost \
    > "$WORK/hub.log" 2>&1 &
HUB=$!
trap 'kill $HUB 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" > /dev/null && break
    sleep 0.1
done

status=0
for n in $(seq "$i"); do
    echo "== suite $n: ${!n}"
    (cd "$WORK" && SUITE_DIR="./suite$n" CHROMIUM="$CHROMIUM" \
        BASE_URL="http://127.0.0.1:$PORT/.well-known/mercure" \
        npx playwright test -c playwright.config.ts 2>&1 |
        grep -E '✓|✘|passed|failed|skipped|Error') || status=1
done
exit $status
