#!/usr/bin/env bash
# The one test command. Installs what a fresh machine lacks, starts and stops every service the tests
# need (Azurite, moto), and runs every test: formatting, lints, unit, integration against the Graph
# emulator and the storage emulators, Adaptive Card validation, offline infrastructure checks, the demo.
#
#   scripts/test.sh          the full suite, well inside CI's limit
#   scripts/test.sh --long   also fuzzing, many chaos seeds and an audit day of 50,001 records on Azurite
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LONG=0
for arg in "$@"; do
  case "$arg" in
    --long) LONG=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
export CARGO_TERM_COLOR=never
LOG_DIR="$ROOT/target/test-logs"
mkdir -p "$LOG_DIR"
PASSED=0
FAILED=0
STEPS_FAILED=()

step() { printf '\n==> %s\n' "$*"; }

# Runs a cargo test command, echoes its output, and adds its counts to the totals.
cargo_tests() {
  local name=$1; shift
  step "cargo test: $name"
  local log="$LOG_DIR/$name.log"
  set +e
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  local p f
  p=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
  f=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
  if [ "$rc" -ne 0 ]; then
    STEPS_FAILED+=("$name")
    [ "$f" -gt 0 ] || FAILED=$((FAILED + 1))
  fi
}

# Runs a check that is not a cargo test; counts as one test.
check() {
  local name=$1; shift
  step "check: $name"
  if "$@"; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); STEPS_FAILED+=("$name"); fi
}

cleanup() {
  [ -x scripts/azurite.sh ] && scripts/azurite.sh stop >/dev/null 2>&1 || true
  [ -x scripts/moto.sh ] && scripts/moto.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "toolchain"
cargo --version
rustc --version

check "cargo fmt" cargo fmt --all -- --check
check "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings

step "packages a fresh machine lacks"
# Chromium renders the Teams cards to PNG (scripts/check-cards.sh); Azurite and the card validator need
# Node.js and npm; moto and the Bicep checks need Python's venv. Install from Debian when missing.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    # A failed install is reported by the checks that need the package, not fatal here.
    { apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
      echo "could not install ${missing[*]}" >&2
  else
    echo "missing ${missing[*]} and cannot install them (not root, or no apt-get)" >&2
  fi
fi

step "services"
if [ -x scripts/azurite.sh ]; then
  scripts/azurite.sh start
  export SECMON_AZURITE=1
fi

cargo_tests workspace cargo test --workspace --no-fail-fast

if [ -x scripts/moto.sh ] && grep -q '^aws = ' Cargo.toml; then
  scripts/moto.sh start
  export SECMON_MOTO=1
  cargo_tests aws cargo test --features aws --no-fail-fast --test aws_store --test lambda --test lambda_demo
fi

if [ -x scripts/check-cards.sh ]; then
  check "adaptive cards" scripts/check-cards.sh
fi
check "triage page (browser)" scripts/check-triage-page.sh
if [ -x scripts/check-infra.sh ]; then
  # --package also builds the release zip (scripts/package.sh) and loads it as the Functions host does
  # (scripts/check-package.py: app-root function folders, bindings, start-up, every function invoked).
  check "infrastructure (bicep) and package" scripts/check-infra.sh --package
fi

step "demo"
check "demo" bash -c 'cargo run --quiet -- demo --out target/demo-test >target/test-logs/demo.log 2>&1 && cat target/test-logs/demo.log && test -s target/demo-test/summary.json'

if [ "$LONG" = 1 ]; then
  [ -x scripts/fuzz.sh ] && check "fuzzing" scripts/fuzz.sh
  cargo_tests chaos-long env SECMON_CHAOS_SEEDS=50 cargo test --release --test chaos --no-fail-fast
  # An audit day past Azure's 50,000-block limit of one append blob, on Azurite (about three minutes).
  cargo_tests audit-storm env SECMON_AZURITE_STORM=1 cargo test --test azure_store an_audit_day_beyond --no-fail-fast
fi

printf '\n'
if [ "${#STEPS_FAILED[@]}" -gt 0 ]; then
  echo "failed steps: ${STEPS_FAILED[*]}"
fi
echo "secmon: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ] && [ "${#STEPS_FAILED[@]}" -eq 0 ]
