#!/usr/bin/env bash
# Fuzzes every parser of outside input for a fixed number of runs each, seeded with the documented
# payloads: the Graph notification parser (notification), the alert parser (alert), the Functions
# invocation envelope and bindings (invocation) and the config loader (config). Works on stable Rust
# (RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the sanitizer flags). Exit status is non-zero on any crash;
# the input is left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                 every target, 1000000 runs each (once built: under a minute for most,
#                                   several minutes for config)
#   FUZZ_RUNS=N scripts/fuzz.sh     N runs each
#   scripts/fuzz.sh alert config    only these targets
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${FUZZ_RUNS:-1000000}
ALL=(notification alert invocation config)
TARGETS=("${@:-${ALL[@]}}")
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
S=tests/fixtures/samples
seed() {
  local target=$1; shift
  mkdir -p "fuzz/corpus/$target"
  cp "$@" "fuzz/corpus/$target/"
}
seed notification $S/change-notification-webhook.json $S/lifecycle-notification.json
seed alert $S/alerts_v2-list-response.json $S/alerts_v2-list-sentinel-response.json
seed invocation $S/functions-timer-request.json $S/functions-queue-request.json \
  $S/functions-queue-request-observed.json $S/functions-http-request.json
seed config examples/secmon.yaml
cd fuzz
for target in "${TARGETS[@]}"; do
  case " ${ALL[*]} " in
    *" $target "*) ;;
    *) echo "unknown fuzz target: $target (one of: ${ALL[*]})" >&2; exit 2 ;;
  esac
  echo "==> fuzz $target ($RUNS runs)"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -runs="$RUNS" -max_len=65536 -timeout=10
done
