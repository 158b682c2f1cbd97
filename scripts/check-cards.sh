#!/usr/bin/env bash
# Checks every Teams card secmon's tests produce with the real Adaptive Cards parser (zero errors and
# warnings), then renders the demo cards to PNG in headless Chromium for the docs (docs/img/).
#   scripts/check-cards.sh            test + validate + render
#   NO_RENDER=1 scripts/check-cards.sh   test + validate only (no Chromium needed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cards="$root/tests/cards"

# Local install only (pinned versions, lockfile), never global.
(cd "$cards" && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --silent; else npm install --no-audit --no-fund --silent; fi)

# The Rust tests write each card they send to target/cards/*.json.
rm -rf "$root/target/cards"
(cd "$root" && cargo test --quiet --test notify --test silence)
# The Teams bot's cards (before and after a click, posted, updated, silenced): tests/triage_act.rs, tests/bot_receiver.rs.
(cd "$root" && cargo test --quiet --test triage_act --test bot_receiver)
# A Workflows card with its triage page link: tests/triage_page.rs.
(cd "$root" && cargo test --quiet --test triage_page notifications_carry)
node "$cards/validate.js"

if [ "${NO_RENDER:-}" != "1" ]; then
  if ! command -v "${CHROMIUM:-chromium}" >/dev/null; then
    echo "chromium not found: cards validated, not rendered (apt-get install chromium to refresh docs/img)" >&2
    exit 0
  fi
  node "$cards/render.js" "$root/docs/img" \
    "$root/target/cards/sample-high.json" "$root/target/cards/grouped.json" \
    "$root/target/cards/hostile.json" "$root/target/cards/long-evidence.json" "$root/target/cards/digest.json" \
    "$root/target/cards/scheduled-digest.json" \
    "$root/target/cards/bot-before.json" "$root/target/cards/bot-after.json"
fi
