#!/usr/bin/env python3
"""Run checkov's Bicep checks on a directory and fail on anything it did not pass.

Usage: run_checkov.py DIR [CHECKOV_BINARY]
Fails (exit 1) when checkov reports
  - a failed check (a deliberate exception must be a `//checkov:skip=CKV_...:reason` comment in the
    resource body, which checkov turns into a skipped check),
  - a parsing error (checkov exits 0 on those, so its JSON is read instead of its exit code),
  - a skip comment for a check that did not run on that resource (a stale explanation).
checkov parses a copy of DIR in which `extension <alias>` statements are blanked (its Bicep parser
predates them, see parse_bicep.py); line numbers are unchanged and paths are reported against DIR.
"""
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parse_bicep import mask_extensions  # noqa: E402

SKIP_RE = re.compile(r"checkov:skip=([A-Z0-9_]+)")


def main(args) -> int:
    src = Path(args[0]).resolve()
    checkov = args[1] if len(args) > 1 else "checkov"
    with tempfile.TemporaryDirectory(prefix="secmon-checkov-") as tmp:
        copy = Path(tmp) / src.name
        shutil.copytree(src, copy)
        for path in copy.rglob("*.bicep"):
            path.write_bytes(mask_extensions(path.read_bytes())[0])
        run = subprocess.run(
            [checkov, "--framework", "bicep", "--skip-download", "--compact",
             "-d", str(copy), "-o", "json"],
            capture_output=True, text=True)
        try:
            report = json.loads(run.stdout)
        except json.JSONDecodeError:
            print(f"checkov did not print JSON (exit {run.returncode}):\n{run.stdout}\n{run.stderr}")
            return 1
    reports = report if isinstance(report, list) else [report]

    def rel(p):
        return p.replace(str(copy), str(src.relative_to(Path.cwd()) if src.is_relative_to(Path.cwd()) else src))

    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    passed = [c for r in reports for c in r.get("results", {}).get("passed_checks", [])]
    parse_errors = [p for r in reports for p in r.get("results", {}).get("parsing_errors", [])]
    if not reports or "results" not in reports[0] and not parse_errors:
        # checkov prints a bare summary when it found no resources at all.
        print(f"checkov found nothing to check in {src}: {report}")
        return 1

    errors = 0
    for p in parse_errors:
        print(f"checkov PARSE ERROR: {rel(p)}")
        errors += 1
    for c in failed:
        print(f"checkov FAILED {c['check_id']} {c['check_name']}: {c['resource']} "
              f"({rel(c['file_abs_path'])}:{c['file_line_range'][0]})")
        errors += 1

    # Every skip comment must have suppressed a check that ran on that resource.
    used = {(c["check_id"], c["resource"]) for c in skipped}
    for path in sorted(src.rglob("*.bicep")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for check_id in SKIP_RE.findall(line):
                if not any(cid == check_id for cid, _ in used):
                    print(f"stale skip comment {check_id} at {path}:{lineno}: the check did not run or passed")
                    errors += 1
    for c in skipped:
        print(f"checkov skipped {c['check_id']} on {c['resource']}: {c['check_result'].get('suppress_comment', '')}")
    print(f"checkov: {len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped (explained), "
          f"{len(parse_errors)} parsing errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
