#!/usr/bin/env bash
# Build the Azure Functions package for secmon.
#   dist/package/   the package tree, as the Functions host reads an app root: host.json, one folder
#                   per function named after it (<name>/function.json, from functions/<name>/ in the
#                   repository), secmon.yaml, ./secmon. azd deploys this directory (azure.yaml `dist`).
#   dist/secmon.zip the same tree zipped, with the executable bit of ./secmon kept in the zip
# The host indexes only folders at the app root; scripts/check-package.py checks the zip as it would.
# The binary is a release build without the demo feature:
#   - x86_64-unknown-linux-musl if that target is installed (fully static), else
#   - x86_64-unknown-linux-gnu with +crt-static (static glibc; getaddrinfo/NSS caveats apply).
# Environment: SECMON_SKIP_BUILD=1 reuses an existing binary, CARGO (default cargo), and for tests
# SECMON_PACKAGE_SRC (where host.json, functions/ and the config are read; default the repo root)
# and SECMON_DIST (output directory; default dist/).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=${SECMON_DIST:-$ROOT/dist}
STAGE=$DIST/package
CARGO=${CARGO:-cargo}

if rustup target list --installed 2>/dev/null | grep -qx 'x86_64-unknown-linux-musl'; then
  TARGET=x86_64-unknown-linux-musl
  RUSTFLAGS_EXTRA=
else
  TARGET=x86_64-unknown-linux-gnu
  RUSTFLAGS_EXTRA='-C target-feature=+crt-static'
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/release/secmon

if [ "${SECMON_SKIP_BUILD:-0}" != 1 ]; then
  echo "package: building secmon for $TARGET"
  RUSTFLAGS="${RUSTFLAGS:-} $RUSTFLAGS_EXTRA" \
    "$CARGO" build --release --no-default-features --bin secmon --target "$TARGET"
fi
[ -x "$BIN" ] || { echo "package: $BIN not found (build failed or SECMON_SKIP_BUILD without a binary)" >&2; exit 1; }

# Say what was built, and refuse a dynamically linked binary (the Flex image's libc is not ours).
KIND=$(file -b "$BIN")
echo "package: $KIND"
case "$KIND" in
  *"dynamically linked"*) echo "package: $BIN is dynamically linked:" >&2; ldd "$BIN" >&2 || true; exit 1 ;;
esac
echo "package: static binary for $TARGET ($(ldd "$BIN" 2>&1 | head -1 | sed 's/^[[:space:]]*//'))"

cd "${SECMON_PACKAGE_SRC:-$ROOT}"

[ -f host.json ] || { echo "package: host.json missing in $PWD" >&2; exit 1; }
shopt -s nullglob
function_jsons=(functions/*/function.json)
[ ${#function_jsons[@]} -gt 0 ] || { echo "package: no functions/*/function.json" >&2; exit 1; }

if [ -f secmon.yaml ]; then
  CONFIG=secmon.yaml
elif [ -f examples/secmon.azure.yaml ]; then
  CONFIG=examples/secmon.azure.yaml
else
  echo "package: neither secmon.yaml nor examples/secmon.azure.yaml exists" >&2
  exit 1
fi

rm -rf "$STAGE" "$DIST/secmon.zip"
mkdir -p "$STAGE"
cp host.json "$STAGE/"
for f in "${function_jsons[@]}"; do
  # The host indexes only folders beside host.json, named after the function.
  name=$(basename "$(dirname "$f")")
  mkdir -p "$STAGE/$name"
  cp "$f" "$STAGE/$name/function.json"
done
cp "$CONFIG" "$STAGE/secmon.yaml"
install -m 0755 "$BIN" "$STAGE/secmon"

# Zip with python's zipfile: every entry's external_attr carries its Unix mode, so ./secmon stays
# executable after the platform unpacks it (zip tools on other OSes drop it).
python3 - "$STAGE" "$DIST/secmon.zip" <<'PY'
import os, stat, sys, zipfile
stage, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for dirpath, dirnames, filenames in os.walk(stage):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            arc = os.path.relpath(path, stage)
            info = zipfile.ZipInfo.from_file(path, arc)
            info.external_attr = (stat.S_IFREG | (0o755 if os.access(path, os.X_OK) else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())
PY
echo "package: $DIST/secmon.zip ($(du -h "$DIST/secmon.zip" | cut -f1)), config from $CONFIG"
