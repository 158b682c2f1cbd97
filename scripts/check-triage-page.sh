#!/usr/bin/env bash
# The triage page in headless Chromium (issue 22): sign-in against the emulator's OpenID provider
# stand-in, Resolve as benign, the confirmation, the PATCH in Graph; a used and an expired link refused.
# Refreshes docs/img/triage-page.png. Uses the system's Chromium (playwright-core downloads no browser).
#   scripts/check-triage-page.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
browser="$root/tests/browser"
chromium="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$chromium" ] && ! command -v "$chromium" >/dev/null; then
  echo "chromium not found ($chromium): the triage page browser test is skipped (apt-get install chromium)" >&2
  exit 0
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node/npm not found: the triage page browser test is skipped" >&2
  exit 0
fi

# Local install only, pinned by the lockfile; never a browser download.
(cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)

(cd "$root" && cargo build --quiet --example triage-browser-driver)
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$root/docs/img"
CHROMIUM="$chromium" node "$browser/triage.spec.js" "$target/debug/examples/triage-browser-driver" \
  "$root/docs/img/triage-page.png"
