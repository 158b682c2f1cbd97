#!/usr/bin/env python3
"""Build the package with scripts/package.sh and check the zip.

Usage: test_package.py   (or scripts/check-infra.sh --package). Builds the release binary (minutes cold;
SECMON_SKIP_BUILD=1 reuses it).
Checks: the layout (host.json, <function>/function.json for each functions/<function>/ of the repo,
secmon.yaml, secmon at the root, nothing else), the executable bit in the zip's external attributes,
that ./secmon --version runs after extracting with the mode restored, then scripts/check-package.py on
the zip (loaded and invoked as the Functions host does), and that the same checker fails the same files
repacked in the layout before issue 12 (functions/<name>/function.json). Until host.json / functions/ / a
config exist in the repo, stand-ins are written to a temporary directory (never into the repo).
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = ["poll-alerts", "reconcile-alerts", "graph-subscriptions", "sweep", "graph-webhook", "graph-lifecycle",
             "doorbell", "health", "health-details", "doctor", "respond", "deliver", "bot-messages", "triage-page"]


def package_source(tmp: Path) -> Path:
    """The repo if it has what package.sh needs, else a temp dir with stand-ins."""
    has_functions = any(REPO.glob("functions/*/function.json"))
    has_config = (REPO / "secmon.yaml").exists() or (REPO / "examples/secmon.azure.yaml").exists()
    if (REPO / "host.json").exists() and has_functions and has_config:
        return REPO
    src = tmp / "src"
    (src / "examples").mkdir(parents=True)
    (src / "host.json").write_text(json.dumps({
        "version": "2.0",
        "customHandler": {"description": {"defaultExecutablePath": "secmon", "arguments": ["serve"]}},
        "extensionBundle": {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"},
    }))
    for name in FUNCTIONS:
        (src / "functions" / name).mkdir(parents=True)
        (src / "functions" / name / "function.json").write_text('{"bindings": []}')
    (src / "examples" / "secmon.azure.yaml").write_text("# stand-in config\n")
    print(f"test_package: stand-in host.json/functions/config in {src} (not in the repo yet)")
    return src


def checker(zip_path: Path, prefix: str = "") -> subprocess.CompletedProcess:
    """scripts/check-package.py on a zip; its output is printed (each line after `prefix`) and returned."""
    cmd = [sys.executable, str(REPO / "scripts/check-package.py"), str(zip_path),
           "--message", f"respond={REPO / 'tests/package/respond-message.json'}"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    for line in (run.stdout + run.stderr).splitlines():
        print(prefix + line)
    return run


def host_check(zip_path: Path, tmp: Path) -> list:
    """The built zip passes the host-faithful check; repacked in the old nested layout, it fails."""
    errors = []
    if checker(zip_path).returncode != 0:
        errors.append("scripts/check-package.py failed on the built package")
    nested = tmp / "nested.zip"
    with zipfile.ZipFile(zip_path) as z, zipfile.ZipFile(nested, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            data = z.read(info)
            if info.filename.endswith("/function.json"):
                info.filename = "functions/" + info.filename
            out.writestr(info, data)
    print("test_package: the same package in the layout before issue 12 (functions/<name>/function.json):")
    run = checker(nested, prefix="    expected to fail | ")
    if run.returncode == 0 or "not in a folder at the app root" not in run.stdout:
        errors.append("scripts/check-package.py did not fail the nested functions/ layout")
    else:
        print("test_package: the nested layout fails the check, as it must")
    return errors


def main() -> int:
    errors = []
    with tempfile.TemporaryDirectory(prefix="secmon-package-") as t:
        tmp = Path(t)
        src = package_source(tmp)
        dist = tmp / "dist"
        start = time.monotonic()
        env = dict(os.environ, SECMON_PACKAGE_SRC=str(src), SECMON_DIST=str(dist))
        run = subprocess.run([str(REPO / "scripts/package.sh")], env=env, cwd=REPO)
        print(f"test_package: package.sh took {time.monotonic() - start:.0f} s")
        if run.returncode != 0:
            print("test_package: package.sh failed")
            return 1

        # The host's layout: each functions/<name>/ of the source is <name>/ at the app root.
        expected = {"host.json", "secmon.yaml", "secmon"} | {
            f"{p.parent.name}/function.json" for p in src.glob("functions/*/function.json")}
        with zipfile.ZipFile(dist / "secmon.zip") as z:
            infos = {i.filename: i for i in z.infolist()}
            names = set(infos)
            if names != expected:
                errors.append(f"layout: missing {sorted(expected - names)}, unexpected {sorted(names - expected)}")
            exe = infos.get("secmon")
            mode = (exe.external_attr >> 16) if exe else 0
            if not exe or not stat.S_ISREG(mode) or mode & 0o111 != 0o111:
                errors.append(f"secmon: external_attr mode {oct(mode)} is not an executable regular file")
            if exe and exe.create_system != 3:
                errors.append(f"secmon: create_system {exe.create_system}, expected 3 (Unix) so unzip honours the mode")
            out = tmp / "unzipped"
            z.extractall(out)
            # zipfile does not restore modes; apply them as the platform's unzip does.
            for info in infos.values():
                os.chmod(out / info.filename, (info.external_attr >> 16) & 0o777)

        # Where Debian's unzip is installed, check the bit survives a real unzip too.
        if shutil.which("unzip"):
            real = tmp / "unzip"
            subprocess.run(["unzip", "-q", str(dist / "secmon.zip"), "-d", str(real)], check=True)
            if not os.access(real / "secmon", os.X_OK):
                errors.append("secmon is not executable after unzip")
            out = real

        version = subprocess.run([str(out / "secmon"), "--version"], capture_output=True, text=True, cwd=out)
        print(f"test_package: ./secmon --version -> exit {version.returncode}, {version.stdout.strip()!r}")
        if version.returncode != 0:
            errors.append(f"./secmon --version failed: {version.stderr.strip()}")
        elif not version.stdout.strip():
            print("test_package: note: --version printed nothing (is src/main.rs still a stub?)")
        host = json.loads((out / "host.json").read_text())
        if host.get("customHandler", {}).get("description", {}).get("defaultExecutablePath") != "secmon":
            errors.append("host.json: customHandler.description.defaultExecutablePath is not 'secmon'")

        if src == REPO:
            errors += host_check(dist / "secmon.zip", tmp)
        else:
            print("test_package: no host check on stand-ins (they are no real function app)")

    for e in errors:
        print("test_package: FAIL", e)
    print(f"test_package: {'ok' if not errors else 'FAILED'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
