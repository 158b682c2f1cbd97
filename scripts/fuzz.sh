#!/usr/bin/env bash
# Fuzzes the Graph notification parser (fuzz/fuzz_targets/notification.rs) for a fixed number of runs,
# seeded with the documented payloads. Works on stable Rust (RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the
# sanitizer flags). Exit status is non-zero on any crash; the input is left in fuzz/artifacts/.
#
#   scripts/fuzz.sh            1000000 runs (about half a minute once built)
#   FUZZ_RUNS=N scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${FUZZ_RUNS:-1000000}
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
mkdir -p fuzz/corpus/notification
cp tests/fixtures/samples/change-notification-webhook.json tests/fixtures/samples/lifecycle-notification.json \
  fuzz/corpus/notification/
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run notification corpus/notification -- -runs="$RUNS" -max_len=65536 -timeout=10
