#!/usr/bin/env bash
# Runs every benchmark, prints every figure, writes target/bench/*.json, and regenerates the figures
# table in docs/performance.md (between its "figures" markers) with the machine they came from.
# Installs what a fresh Debian machine lacks (prometheus-alertmanager for the side-by-side run, jq).
#
#   scripts/bench.sh                  optimized (cargo's bench profile), as published
#   scripts/bench.sh --profile dev    unoptimized, quick to build on a busy machine (figures say so)
#   scripts/bench.sh --no-docs        do not touch docs/performance.md
#
# Sizes: BENCH_ALERTS (side by side, default 10000), BENCH_POLL_SIZES (default 10000,100000),
# BENCH_RUNS (cold starts, default 50), BENCH_REQUESTS / BENCH_CONCURRENCY (webhook load).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILE_ARGS=()
DOCS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE_ARGS=(--profile "$2"); shift 2 ;;
    --no-docs) DOCS=0; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
export CARGO_TERM_COLOR=never

need_apt() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bench: please install ${missing[*]} (Debian packages)" >&2
  fi
}
need_apt prometheus-alertmanager jq

OUT=target/bench
mkdir -p "$OUT"
bench() {
  printf '\n==> cargo bench --bench %s\n' "$1"
  cargo bench "${PROFILE_ARGS[@]}" --bench "$1" 2>&1 | grep -v -E '^\s+(Compiling|Finished|Running)' || {
    echo "bench $1 failed" >&2
    return 1
  }
}

bench cold_start
bench webhook
BENCH_POLL_SIZES=${BENCH_POLL_SIZES:-10000,100000} bench poll_10k
bench rules_eval
bench notify_render
bench teams_storm
BENCH_ALERTS=${BENCH_ALERTS:-10000} bench vs_alertmanager

# The machine the figures came from.
jq -n --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  --arg nproc "$(nproc)" --arg mem "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)" \
  --arg kernel "$(uname -sr)" --arg rustc "$(rustc --version)" \
  --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" --arg date "$(date -u +%Y-%m-%d)" \
  --arg profile "${PROFILE_ARGS[1]:-bench (optimized)}" \
  '{cpu: $cpu, nproc: $nproc, memory: $mem, kernel: $kernel, rustc: $rustc, commit: $commit, date: $date,
    profile: $profile}' >"$OUT/machine.json"

table() {
  local m="$OUT/machine.json"
  echo "Measured $(jq -r .date "$m") at commit \`$(jq -r .commit "$m")\`, cargo profile $(jq -r .profile "$m"), on"
  echo "$(jq -r .cpu "$m"), $(jq -r .nproc "$m") CPUs, $(jq -r .memory "$m") RAM, $(jq -r .kernel "$m"),"
  echo "$(jq -r .rustc "$m"). Raw figures: \`target/bench/*.json\`."
  if [ "$(jq -r .profile "$m")" = dev ]; then
    echo
    echo "**These are unoptimized (debug) builds of secmon** (\`--profile dev\`), compared against an optimized"
    echo "Alertmanager: secmon's times and CPU here are several times what \`scripts/bench.sh\` without"
    echo "\`--profile\` measures. Run it so to publish figures."
  fi
  echo
  echo "| benchmark | figure |"
  echo "|---|---|"
  if [ -f "$OUT/vs_alertmanager.json" ]; then
    jq -r '.alerts as $n | .sides[] | "| end to end, \($n) alerts, **\(.name)** | \(.seconds*100|round/100) s until the last notification, \(.notifications_per_second|round) notifications/s, \(.cpu_seconds*100|round/100) CPU s, peak RSS \(.peak_rss_kib/1024|round) MiB |"' "$OUT/vs_alertmanager.json"
    jq -r 'select(.ratio_secmon_over_alertmanager != null) | .ratio_secmon_over_alertmanager | "| **ratio secmon / Alertmanager** | time ×\(.seconds*100|round/100), CPU ×\(.cpu_seconds*100|round/100), peak RSS ×\(.peak_rss*100|round/100) |"' "$OUT/vs_alertmanager.json"
  fi
  if [ -f "$OUT/cold_start.json" ]; then
    jq -r '"| cold start: `secmon serve` → first answer on `/` | median \(.secmon_serve.median_ms*100|round/100) ms (p90 \(.secmon_serve.p90_ms*100|round/100) ms, \(.secmon_serve.runs) runs); floor `/bin/true` \(.bin_true.median_ms*100|round/100) ms |"' "$OUT/cold_start.json"
  fi
  if [ -f "$OUT/webhook.json" ]; then
    jq -r '.concurrency as $c | .runs[] | "| webhook acknowledgements on loopback, \(.route), concurrency \($c) | \(.acked_per_second|round)/s, p50 \(.p50_ms*100|round/100) ms, p99 \(.p99_ms*100|round/100) ms |"' "$OUT/webhook.json"
  fi
  if [ -f "$OUT/poll.json" ]; then
    jq -r '.runs[] | "| poll \(.alerts) alerts (\(.polls) polls, \(.pages) pages, \(.queue) queue, $orderby \(.orderby)) | \(.alerts_per_second|round) alerts/s, \(.requests_per_alert*10000|round/10000) Graph requests per alert, peak heap above start \(.peak_extra_bytes/1048576*10|round/10) MiB |"' "$OUT/poll.json"
    jq -r '"| poll benchmark process peak RSS (VmHWM, emulator with every alert included) | \(.vm_hwm_kib/1024|round) MiB |"' "$OUT/poll.json"
  fi
  if [ -f "$OUT/rules_eval.json" ]; then
    jq -r '.results[] | "| rule evaluation, \(.rules) close rules, \(.case) | \(.us_per_alert*100|round/100) µs per alert (\(.alerts_per_second|round) alerts/s) |"' "$OUT/rules_eval.json"
  fi
  if [ -f "$OUT/notify_render.json" ]; then
    jq -r '.results[] | "| render a notification: \(.receiver), \(.alert) | \(.micros_per_render) µs |"' "$OUT/notify_render.json"
  fi
  if [ -f "$OUT/teams_storm.json" ]; then
    jq -r '.profile as $p | .result | "| storm of \(.alerts) alerts to one Teams receiver (budget \(.budget)) | \(.wall_ms|round) ms of work (\($p)), \(.posts) posts (\(.digests) digests), all \(.told) told \(.last_told_after_s) s (clock) after the first |"' "$OUT/teams_storm.json"
  fi
}

printf '\n==> figures\n'
table | tee "$OUT/figures.md"

if [ "$DOCS" = 1 ] && [ -f docs/performance.md ]; then
  awk -v figures="$OUT/figures.md" '
    /<!-- figures:begin -->/ { print; while ((getline line < figures) > 0) print line; skip = 1; next }
    /<!-- figures:end -->/ { skip = 0 }
    !skip { print }
  ' docs/performance.md >"$OUT/performance.md.new"
  mv "$OUT/performance.md.new" docs/performance.md
  echo "docs/performance.md: figures updated"
fi
echo "bench: done; JSON in $ROOT/$OUT"
