#!/usr/bin/env bash
# The console's end-to-end tests: Debian's Chromium driven by playwright-core, axe-core on
# the main pages (console-e2e/run.mjs). Installs Chromium (apt) and the pinned npm packages
# (npm ci) when missing; under CI=true a missing browser or Node.js is a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
  if [ "${CI:-}" = "true" ]; then
    echo "FAIL: $* (the console's browser tests are needed under CI=true)" >&2
    exit 1
  fi
  echo "skipped: $* (the console's browser tests did not run)"
  exit 0
}

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Chromium (apt)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    missing "Chromium could not be installed with apt-get"
  fi
fi
[ -x /usr/bin/chromium ] || missing "no /usr/bin/chromium"
command -v node >/dev/null && command -v npm >/dev/null || missing "Node.js and npm are not installed"

(cd console-e2e && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --bin marketplace
node console-e2e/run.mjs
