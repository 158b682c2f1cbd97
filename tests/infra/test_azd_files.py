#!/usr/bin/env python3
"""azure.yaml and infra/main.parameters.json agree with infra/main.bicep and scripts/.

Usage: test_azd_files.py   (needs PyYAML, which the checkov venv has)
"""
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    errors = []
    azure = yaml.safe_load((REPO / "azure.yaml").read_text())
    # The edge and the worker app deploy the same package (infra/app/function.bicep tags each app
    # azd-service-name secmon-<role>).
    function_bicep = (REPO / "infra/app/function.bicep").read_text()
    if "'azd-service-name': 'secmon-${role}'" not in function_bicep:
        errors.append("infra/app/function.bicep: apps are not tagged azd-service-name secmon-${role}")
    for service in ("secmon-edge", "secmon-worker"):
        svc = azure.get("services", {}).get(service, {})
        for key, want in (("project", "."), ("host", "function"), ("language", "custom"), ("dist", "dist/package")):
            if svc.get(key) != want:
                errors.append(f"azure.yaml: services.{service}.{key} is {svc.get(key)!r}, expected {want!r}")
        hooks = svc.get("hooks", {})
        if not any("scripts/package.sh" in str(h.get("run", "")) for h in hooks.values()):
            errors.append(f"azure.yaml: no hook of services.{service} runs scripts/package.sh")
    if not (REPO / "scripts/package.sh").stat().st_mode & 0o111:
        errors.append("scripts/package.sh is not executable")

    main_bicep = (REPO / "infra/main.bicep").read_text()
    declared = dict(re.findall(r"^param\s+(\w+)\s+\w+(\s*=)?", main_bicep, re.M))
    params = json.loads((REPO / "infra/main.parameters.json").read_text())["parameters"]
    for name in params:
        if name not in declared:
            errors.append(f"main.parameters.json: {name} is not a parameter of main.bicep")
    for name, has_default in declared.items():
        if not has_default and name not in params:
            errors.append(f"main.bicep: required parameter {name} is not in main.parameters.json")
    for var in ("AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_ID"):
        if "${" + var + "}" not in json.dumps(params):
            errors.append(f"main.parameters.json: ${{{var}}} not used")
    if not re.search(r"^targetScope\s*=\s*'subscription'", main_bicep, re.M):
        errors.append("main.bicep: targetScope is not 'subscription'")

    for e in errors:
        print("test_azd_files: FAIL", e)
    print(f"test_azd_files: {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
