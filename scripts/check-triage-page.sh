#!/usr/bin/env bash
# The triage page in headless Chromium (issue 22): sign-in against the emulator's OpenID provider
# stand-in, Resolve as benign, the confirmation, the PATCH in Graph; a used and an expired link refused.
# Refreshes docs/img/triage-page.png. Uses the system's Chromium (playwright-core downloads no browser).
#   scripts/check-triage-page.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
browser="$root/tests/browser"
chromium="${CHROMIUM:-/usr/bin/chromium}"

# A missing browser fails the check (scripts/test.sh installs it); SKIP_BROWSER=1 skips it knowingly.
if [ "${SKIP_BROWSER:-}" = 1 ]; then
  echo "SKIP_BROWSER=1: the triage page browser test is skipped" >&2
  exit 0
fi
if [ ! -x "$chromium" ] && ! command -v "$chromium" >/dev/null; then
  echo "chromium not found ($chromium): install it (apt-get install chromium) or set SKIP_BROWSER=1" >&2
  exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node/npm not found: install them (apt-get install nodejs npm) or set SKIP_BROWSER=1" >&2
  exit 1
fi

# Local install only, pinned by the lockfile; never a browser download.
(cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)

(cd "$root" && cargo build --quiet --example triage-browser-driver)
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$root/docs/img"
CHROMIUM="$chromium" node "$browser/triage.spec.js" "$target/debug/examples/triage-browser-driver" \
  "$root/docs/img/triage-page.png"
