#!/usr/bin/env python3
"""The package checker's own tests: scripts/check-package.py on small packages built from
tests/package/fixtures/app (a stub handler serving tick, work and hook), in the good layout and in
each bad one. A bad package must fail with the reason named; the good one must pass.

Usage: test_check_package.py   (scripts/check-infra.sh runs it; stdlib only, a few seconds)
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHECKER = REPO / "scripts/check-package.py"


def zip_tree(tree, out, keep_modes=True):
    """Zips like scripts/package.sh: Unix modes in external_attr (or all 0644 when not keep_modes)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo.from_file(path, str(path.relative_to(tree)))
                mode = 0o755 if keep_modes and os.access(path, os.X_OK) else 0o644
                info.external_attr = (stat.S_IFREG | mode) << 16
                z.writestr(info, path.read_bytes())


def nest(tree):
    """The layout scripts/package.sh built before issue 12: every function under functions/."""
    for f in list(tree.glob("*/function.json")):
        dest = tree / "functions" / f.parent.name
        dest.parent.mkdir(exist_ok=True)
        shutil.move(str(f.parent), dest)


def edit(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def add_extra(tree):
    (tree / "extra").mkdir()
    shutil.copy(tree / "tick/function.json", tree / "extra/function.json")


CASES = [
    # (name, how the good tree is changed, keep zip modes, expected exit, substrings expected in the output)
    # hook is an HTTP function behind the function key (authLevel function), as doctor and the webhooks are.
    ("good layout", None, True, 0, ["ok   tick: documented timer", "ok   work: observed queue message",
                                     "ok   hook: documented HTTP POST", "the executable serves ['tick', 'work', 'hook']",
                                     "hook/function.json: httpTrigger 'req' ['post'] /hook auth function"]),
    ("nested functions/<name>/ (the layout before issue 12)", nest, True, 1,
     ["functions/tick/function.json: not in a folder at the app root", "no function indexed",
      "the code serves 'hook' but the package has no hook/function.json"]),
    ("a folder the code does not serve", add_extra, True, 1,
     ["extra/function.json: the code does not serve 'extra'", "extra: documented timer"]),
    ("a function served without a folder", lambda t: shutil.rmtree(t / "hook"), True, 1,
     ["the code serves 'hook' but the package has no hook/function.json"]),
    ("five-field cron", lambda t: edit(t / "tick/function.json",
                                       lambda d: d["bindings"][0].update(schedule="*/5 * * * *")), True, 1,
     ["has 5 fields; NCRONTAB in Functions has 6"]),
    ("queue trigger without connection", lambda t: edit(t / "work/function.json",
                                                        lambda d: d["bindings"][0].pop("connection")), True, 1,
     ["binding 'message' (queueTrigger): connection is missing"]),
    ("queue connection with no app setting", lambda t: edit(t / "work/function.json",
                                                            lambda d: d["bindings"][0].update(connection="Other")),
     True, 1, ["connection 'Other' resolves to no app setting"]),
    ("trigger binding renamed (the code reads Data.message)", lambda t: edit(
        t / "work/function.json", lambda d: d["bindings"][0].update(name="msg")), True, 1,
     ["work: documented queue message", "HTTP 400"]),
    ("http output renamed (the code answers Outputs.res)", lambda t: edit(
        t / "hook/function.json", lambda d: d["bindings"][1].update(name="response")), True, 1,
     ["Outputs.res is no output binding of function.json", "Outputs.response is not an HTTP response object"]),
    ("httpTrigger with a bad authLevel", lambda t: edit(
        t / "hook/function.json", lambda d: d["bindings"][0].update(authLevel="user")), True, 1,
     ["authLevel 'user' is not one of"]),
    ("http route not the function's name", lambda t: edit(
        t / "hook/function.json", lambda d: d["bindings"][0].update(route="hooks/in")), True, 1,
     ["hook/function.json: public path /api/hooks/in, but the code's URLs are /api/hook"]),
    ("unknown binding type", lambda t: edit(
        t / "work/function.json", lambda d: d["bindings"].append({"name": "x", "type": "blob", "direction": "out"})),
     True, 1, ["binding 'x' (blob): no documented schema known"]),
    ("executable bit lost in the zip", None, False, 1, ["handler: not executable after unzip"]),
    ("config file missing from the package", lambda t: (t / "app.yaml").unlink(), True, 1,
     ["exited with 1 before it answered GET /"]),
    ("host.json without the extension bundle", lambda t: edit(t / "host.json", lambda d: d.pop("extensionBundle")),
     True, 1, ["extensionBundle.id must be"]),
    ("unknown queue setting in host.json", lambda t: edit(
        t / "host.json", lambda d: d["extensions"]["queues"].update(maxDequeue=3)), True, 1,
     ["extensions.queues.maxDequeue is not a documented queue setting"]),
]


def main():
    failed = 0
    with tempfile.TemporaryDirectory(prefix="secmon-check-package-test-") as t:
        for i, (name, change, keep_modes, want_code, want) in enumerate(CASES):
            tree = Path(t) / f"case{i}"
            shutil.copytree(FIXTURES / "app", tree)
            if change:
                change(tree)
            package = Path(t) / f"case{i}.zip"
            zip_tree(tree, package, keep_modes)
            run = subprocess.run([sys.executable, str(CHECKER), str(package), "--azurite", "none",
                                  "--bicep", str(FIXTURES / "function.bicep"),
                                  "--main-bicep", str(FIXTURES / "main.bicep")],
                                 capture_output=True, text=True, timeout=120)
            out = run.stdout + run.stderr
            missing = [w for w in want if w not in out]
            if run.returncode != want_code or missing:
                failed += 1
                print(f"test_check_package: FAIL {name}: exit {run.returncode} (want {want_code}), missing {missing}")
                print("\n".join("    " + line for line in out.splitlines()))
            else:
                problems = out.count("check-package: FAIL ")
                print(f"test_check_package: ok   {name}: exit {run.returncode}, {problems} problems reported")
    print(f"test_check_package: {len(CASES) - failed} of {len(CASES)} cases as expected")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
