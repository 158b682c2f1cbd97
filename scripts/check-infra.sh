#!/usr/bin/env bash
# Offline checks of the deployment templates (no Azure, no Bicep CLI).
#   scripts/check-infra.sh            syntax (tree-sitter), checkov, custom checks + their negative test,
#                                     the triage Bicep (bot, authentication) and the Teams app package,
#                                     the package checkers' own tests (fixture packages, a stub handler),
#                                     the SAM template against what a Lambda custom runtime needs
#   scripts/check-infra.sh --package  also build the release package and load it as the Functions host
#                                     does (scripts/check-package.py; minutes cold, SECMON_SKIP_BUILD=1)
# Installs tree-sitter, tree-sitter-bicep 1.1 and checkov 3.3 into .tools/venv from PyPI if missing.
# Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.tools/venv
PY=$VENV/bin/python
PACKAGE=0
for arg in "$@"; do
  case "$arg" in
    --package) PACKAGE=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "check-infra: unknown argument $arg" >&2; exit 2 ;;
  esac
done

if ! "$PY" -c 'import tree_sitter, tree_sitter_bicep' 2>/dev/null || [ ! -x "$VENV/bin/checkov" ]; then
  echo "check-infra: installing tree-sitter, tree-sitter-bicep 1.1, checkov 3.3 into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    'tree-sitter>=0.23' 'tree-sitter-bicep==1.1.*' 'checkov==3.3.*'
fi

failed=0
step() {
  local name=$1; shift
  local start=$SECONDS
  echo "== $name"
  if "$@"; then
    echo "-- $name: ok ($((SECONDS - start)) s)"
  else
    echo "-- $name: FAILED ($((SECONDS - start)) s)"
    failed=1
  fi
}

step "bicep syntax (tree-sitter)" "$PY" tests/infra/parse_bicep.py infra tests/infra/fixtures
step "checkov" "$PY" tests/infra/run_checkov.py infra "$VENV/bin/checkov"
step "custom checks" "$PY" tests/infra/custom_checks.py infra
step "custom checks catch the bad fixture" "$PY" tests/infra/test_custom_checks.py
step "azure.yaml and parameters" "$PY" tests/infra/test_azd_files.py
step "triage: the Azure Bot and App Service Authentication" "$PY" tests/infra/test_triage_infra.py
step "triage: the Teams app package (scripts/teams-app.py)" python3 tests/infra/test_teams_app.py
step "package checker catches the bad fixture packages" python3 tests/package/test_check_package.py
step "lambda template (SAM) as a custom runtime needs it" "$PY" scripts/check-lambda-package.py
step "lambda checker catches the bad variants" "$PY" tests/package/test_check_lambda_package.py
if [ "$PACKAGE" = 1 ]; then
  step "package, loaded as the Functions host does" python3 tests/infra/test_package.py
  # The Lambda build needs cargo-lambda and an arm64 toolchain; check its output when it is there.
  if [ -d target/lambda/secmon ]; then
    step "lambda package (target/lambda/secmon)" "$PY" scripts/check-lambda-package.py --code-dir target/lambda/secmon
  else
    echo "check-infra: target/lambda/secmon not built (cargo lambda build): the Lambda package itself is not checked"
  fi
fi

if [ "$failed" = 1 ]; then
  echo "check-infra: FAILED"
  exit 1
fi
echo "check-infra: all checks passed"
