#!/usr/bin/env python3
"""scripts/check-lambda-package.py on infra/aws/template.yaml and on variants of it, with a code
directory holding a real ELF executable as bootstrap (a copy of this machine's `true`). Each bad variant
must fail with its reason; the real template must pass.

Usage: test_check_lambda_package.py   (needs PyYAML; scripts/check-infra.sh runs it with its venv)
"""
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKER = REPO / "scripts/check-lambda-package.py"
TEMPLATE = (REPO / "infra/aws/template.yaml").read_text()
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
OTHER_ARCH = "x86_64" if HOST_ARCH == "arm64" else "arm64"


def arch(text, a):
    return text.replace("Architectures: [arm64]", f"Architectures: [{a}]")


CASES = [
    # (name, template text, code dir: None | (bootstrap executable, config present), exit, expected output)
    ("the real template", TEMPLATE, None, 0, ["RespondFunction: Handler 'respond'", "DeliverFunction: Handler 'deliver'", "7 functions"]),
    ("a built package for the template's architecture", arch(TEMPLATE, HOST_ARCH), (True, True), 0,
     [f"ELF {HOST_ARCH}, executable", "secmon.yaml present"]),
    ("bootstrap for another architecture", arch(TEMPLATE, OTHER_ARCH), (True, True), 1,
     [f"built for {HOST_ARCH}, the template says ['{OTHER_ARCH}']"]),
    ("bootstrap not executable", arch(TEMPLATE, HOST_ARCH), (False, True), 1, ["bootstrap: not executable"]),
    ("config not copied next to bootstrap", arch(TEMPLATE, HOST_ARCH), (True, False), 1,
     ["no secmon.yaml (SECMON_CONFIG)"]),
    ("SQS without partial batch failures", TEMPLATE.replace("FunctionResponseTypes: [ReportBatchItemFailures]", ""),
     None, 1, ["RespondFunction: the SQS event lacks FunctionResponseTypes"]),
    ("a managed runtime instead of a custom one", TEMPLATE.replace("Runtime: provided.al2023", "Runtime: python3.12"),
     None, 1, ["Runtime 'python3.12' is not a custom runtime"]),
    ("a function without Handler", TEMPLATE.replace("      Handler: http\n", ""), None, 1,
     ["HttpFunction: no Handler"]),
    ("CodeUri elsewhere", TEMPLATE.replace("CodeUri: ../../target/lambda/secmon/", "CodeUri: ../../dist/"), None, 1,
     ["is not where `cargo lambda build` puts bootstrap"]),
    # Least privilege: the Function URL function (internet-facing) reads neither the Graph secret nor
    # writes audit objects.
    ("the Function URL function reads the Graph secret",
     TEMPLATE.replace("Resource: !Ref EdgeSecretsArn", "Resource: !Ref SecretsArn"), None, 1,
     ["HttpFunction: internet-facing, but its policy allows secretsmanager:GetSecretValue on SecretsArn"]),
    ("the Function URL function is handed the Graph secret",
     TEMPLATE.replace('SECMON_SECRETS_ARN: !If [HasEdgeSecret, !Ref EdgeSecretsArn, ""]', "SECMON_SECRETS_ARN: !Ref SecretsArn"),
     None, 1, ["HttpFunction: internet-facing, but SECMON_SECRETS_ARN is SecretsArn"]),
    ("the Function URL function may write the audit trail",
     TEMPLATE.replace('Action: s3:DeleteObject\n              Resource: !Sub "${StateBucket.Arn}/kv/subscriptions/*"',
                      'Action: s3:PutObject\n              Resource: !Sub "${StateBucket.Arn}/*"'), None, 1,
     ["HttpFunction: internet-facing, but its policy allows ['s3:putobject'] on ${StateBucket.Arn}/*, which covers the audit trail"]),
    ("the Function URL function may write stream/ objects by name",
     TEMPLATE.replace('- !Sub "${StateBucket.Arn}/kv/subscriptions/*"\n                - !Sub "${StateBucket.Arn}/claim/doorbell/*"',
                      '- !Sub "${StateBucket.Arn}/stream/*"', 1), None, 1,
     ["which covers the audit trail (stream/*)"]),
]
# Every variant must really differ from the template (a stale replace() would test nothing).
for _name, _text, *_ in CASES:
    if _name.startswith("the Function URL") and _text == TEMPLATE:
        raise SystemExit(f"test_check_lambda_package: variant {_name!r} did not change the template")


def main():
    failed = 0
    with tempfile.TemporaryDirectory(prefix="secmon-check-lambda-test-") as t:
        for i, (name, text, code, want_code, want) in enumerate(CASES):
            template = Path(t) / f"template{i}.yaml"
            template.write_text(text)
            cmd = [sys.executable, str(CHECKER), str(template)]
            if code:
                executable, config = code
                d = Path(t) / f"code{i}"
                d.mkdir()
                shutil.copy(shutil.which("true"), d / "bootstrap")
                (d / "bootstrap").chmod(0o755 if executable else 0o644)
                if config:
                    (d / "secmon.yaml").write_text("tenants: []\n")
                cmd += ["--code-dir", str(d)]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            out = run.stdout + run.stderr
            missing = [w for w in want if w not in out]
            if run.returncode != want_code or missing:
                failed += 1
                print(f"test_check_lambda_package: FAIL {name}: exit {run.returncode} (want {want_code}), missing {missing}")
                print("\n".join("    " + line for line in out.splitlines()))
            else:
                print(f"test_check_lambda_package: ok   {name}: exit {run.returncode}")
    print(f"test_check_lambda_package: {len(CASES) - failed} of {len(CASES)} cases as expected")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
