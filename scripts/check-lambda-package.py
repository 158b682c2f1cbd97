#!/usr/bin/env python3
"""Check the AWS Lambda side as far as it can be checked without AWS: the SAM template against what a
custom runtime needs, and, when given, the built code directory against the template.

Usage: check-lambda-package.py [TEMPLATE] [--code-dir DIR]   (needs PyYAML: scripts/check-infra.sh's venv)

Template (infra/aws/template.yaml, Globals merged into each AWS::Serverless::Function):
  - Runtime provided.al2023 / provided.al2: Lambda runs `bootstrap` from the root of CodeUri and passes
    Handler only as _HANDLER, so every function must name a secmon function in Handler, and CodeUri must
    be the directory `cargo lambda build` writes (target/lambda/secmon/), one for all functions;
  - one Architectures value per function, the same for all (one bootstrap);
  - each function's trigger: a Schedule/ScheduleV2 event, an SQS event, or a FunctionUrlConfig; an SQS
    event must report partial batch failures (FunctionResponseTypes: ReportBatchItemFailures), because the
    code answers with batchItemFailures and without it Lambda deletes the whole batch on success;
  - SECMON_CONFIG's default is a relative path (Lambda's working directory is /var/task = CodeUri);
  - the internet-facing function (the one with a FunctionUrlConfig) has no policy statement allowing
    secretsmanager:GetSecretValue on SecretsArn (the Graph secret) nor s3:PutObject/DeleteObject on
    objects that can be audit records (stream/*), and SECMON_SECRETS_ARN is not SecretsArn.
Code directory (--code-dir, what `cargo lambda build --release --arm64 --features aws` plus the config
copy of docs/aws.md produce): `bootstrap` is an executable ELF file for the template's architecture,
and the config file SECMON_CONFIG names is there.
Not checked here: that the code accepts each Handler (tests/lambda.rs runs the adapter per handler
behind a fake Runtime API), and anything only AWS does (IAM evaluation, event source mappings, Function URL auth).
Exit 1 on any failure.
"""
import argparse
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = {"provided.al2023", "provided.al2"}
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}


class Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsics (!Ref, !GetAtt, !Sub ...) kept as plain values."""


Loader.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode)
    else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node)))


def merged(globals_, props):
    """Globals under a function's own properties; maps merge key by key, as SAM merges
    Environment.Variables (the function's value wins)."""
    out = dict(globals_)
    for k, v in props.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


def as_list(v):
    return v if isinstance(v, list) else [v]


def statements(props):
    """(effect, actions, resources) of every inline policy statement; an `!If [cond, a, b]` statement
    counts as both branches (either may be deployed)."""
    out = []
    for policy in as_list(props.get("Policies") or []):
        if not isinstance(policy, dict):
            continue
        pending = list(as_list(policy.get("Statement") or []))
        while pending:
            st = pending.pop()
            if isinstance(st, list) and len(st) == 3 and isinstance(st[0], str):
                pending.extend(x for x in st[1:] if isinstance(x, dict))
                continue
            if not isinstance(st, dict) or st.get("Effect") != "Allow":
                continue
            out.append(([str(a) for a in as_list(st.get("Action"))], [str(r) for r in as_list(st.get("Resource"))]))
    return out


# Object paths of the audit trail in the state bucket (S3Store: stream/<name>/<n>).
AUDIT_PREFIX = "stream/"


def covers_audit(resource):
    """Whether an object ARN pattern in the state bucket can match an audit object."""
    if "StateBucket" not in resource and resource not in ("*", "arn:aws:s3:::*"):
        return False
    path = resource.split("/", 1)[1] if "/" in resource else ""
    if resource == "*":
        return True
    if not path:
        return False
    # the path pattern matches stream/... when it is a wildcard before "stream/" or starts with it
    head = path.split("*", 1)[0]
    return AUDIT_PREFIX.startswith(head) or head.startswith(AUDIT_PREFIX)


def edge_findings(name, props):
    """The Function URL function (internet-facing) may not read the Graph secret nor write audit objects."""
    problems = []
    graph_secret = {"SecretsArn"}
    for actions, resources in statements(props):
        acts = {a.lower() for a in actions}
        if acts & {"secretsmanager:getsecretvalue", "secretsmanager:*", "*"}:
            for r in resources:
                if r in graph_secret or r == "*" or r.startswith("arn:aws:secretsmanager"):
                    problems.append(f"{name}: internet-facing, but its policy allows secretsmanager:GetSecretValue "
                                    f"on {r} (the Graph secret); give it EdgeSecretsArn only")
        if acts & {"s3:putobject", "s3:deleteobject", "s3:*", "*"}:
            for r in resources:
                if covers_audit(r):
                    problems.append(f"{name}: internet-facing, but its policy allows {sorted(acts)} on {r}, "
                                    f"which covers the audit trail ({AUDIT_PREFIX}*)")
    return problems


def trigger_of(props):
    events = props.get("Events") or {}
    kinds = sorted({e.get("Type") for e in events.values()})
    if props.get("FunctionUrlConfig"):
        kinds.append("FunctionUrl")
    return kinds, events


def elf_arch(path):
    head = path.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return None
    return ELF_MACHINES.get(int.from_bytes(head[18:20], "little"), f"machine {int.from_bytes(head[18:20], 'little'):#x}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("template", nargs="?", default=str(REPO / "infra/aws/template.yaml"))
    ap.add_argument("--code-dir", help="the built CodeUri directory to check against the template")
    args = ap.parse_args()
    failures = []

    def fail(msg):
        failures.append(msg)
        print(f"check-lambda-package: FAIL {msg}")

    def ok(msg):
        print(f"check-lambda-package: ok   {msg}")

    template_path = Path(args.template)
    doc = yaml.load(template_path.read_text(), Loader=Loader)
    globals_ = (doc.get("Globals") or {}).get("Function") or {}
    functions = {n: merged(globals_, r.get("Properties") or {}) for n, r in (doc.get("Resources") or {}).items()
                 if r.get("Type") == "AWS::Serverless::Function"}
    if not functions:
        fail(f"{template_path}: no AWS::Serverless::Function")
    code_uris, archs, configs, handlers = set(), set(), set(), []
    for name, p in sorted(functions.items()):
        before = len(failures)
        handler, runtime = p.get("Handler"), p.get("Runtime")
        if runtime not in RUNTIMES:
            fail(f"{name}: Runtime {runtime!r} is not a custom runtime ({sorted(RUNTIMES)}); bootstrap would not be run")
        if not isinstance(handler, str) or not handler.strip():
            fail(f"{name}: no Handler, so _HANDLER names no secmon function")
        else:
            handlers.append(handler)
        arch = p.get("Architectures") or ["x86_64"]
        if not isinstance(arch, list) or len(arch) != 1 or arch[0] not in ELF_MACHINES.values():
            fail(f"{name}: Architectures {arch!r} must be one of x86_64, arm64")
        else:
            archs.add(arch[0])
        code_uris.add(str(p.get("CodeUri")))
        env = ((p.get("Environment") or {}).get("Variables") or {})
        config = env.get("SECMON_CONFIG")
        if isinstance(config, str) and config in (doc.get("Parameters") or {}):
            config = doc["Parameters"][config].get("Default")
        if not isinstance(config, str) or config.startswith("/"):
            fail(f"{name}: SECMON_CONFIG {config!r} must default to a path relative to /var/task")
        else:
            configs.add(config)
        kinds, events = trigger_of(p)
        if len(kinds) != 1 or kinds[0] not in ("Schedule", "ScheduleV2", "SQS", "FunctionUrl"):
            fail(f"{name}: trigger {kinds}: expected one Schedule/ScheduleV2 event, one SQS event or a FunctionUrlConfig")
        for e in events.values():
            if e.get("Type") == "SQS" and "ReportBatchItemFailures" not in (e.get("Properties") or {}).get(
                    "FunctionResponseTypes", []):
                fail(f"{name}: the SQS event lacks FunctionResponseTypes: [ReportBatchItemFailures]; the code "
                     "reports batchItemFailures and Lambda would otherwise delete the whole batch")
        if "FunctionUrl" in kinds:
            for problem in edge_findings(name, p):
                fail(problem)
            if env.get("SECMON_SECRETS_ARN") == "SecretsArn":
                fail(f"{name}: internet-facing, but SECMON_SECRETS_ARN is SecretsArn (the Graph secret)")
        if len(failures) == before:
            ok(f"{name}: Handler {handler!r}, {runtime}, {arch}, trigger {kinds}")
    if len(set(handlers)) != len(handlers):
        fail(f"two functions share a Handler: {sorted(handlers)}")
    if len(code_uris) != 1:
        fail(f"CodeUri differs between functions ({sorted(code_uris)}); one bootstrap serves them all")
    code_uri = next(iter(code_uris)) if code_uris else ""
    if not code_uri.rstrip("/").endswith("target/lambda/secmon"):
        fail(f"CodeUri {code_uri!r} is not where `cargo lambda build` puts bootstrap (target/lambda/secmon/)")
    if len(archs) > 1:
        fail(f"functions disagree on Architectures {sorted(archs)}; there is one bootstrap")
    ok(f"{len(functions)} functions, handlers {sorted(handlers)}, CodeUri {code_uri}, config {sorted(configs)}")

    if args.code_dir:
        code = Path(args.code_dir)
        bootstrap = code / "bootstrap"
        if not bootstrap.is_file():
            fail(f"{code}: no bootstrap at the root (a custom runtime runs /var/task/bootstrap)")
        else:
            if not os.access(bootstrap, os.X_OK):
                fail(f"{bootstrap}: not executable")
            arch = elf_arch(bootstrap)
            if arch is None:
                fail(f"{bootstrap}: not an ELF executable")
            elif archs and arch not in archs:
                fail(f"{bootstrap}: built for {arch}, the template says {sorted(archs)}")
            else:
                ok(f"{bootstrap}: ELF {arch}, executable")
        for config in sorted(configs):
            if not (code / config).is_file():
                fail(f"{code}: no {config} (SECMON_CONFIG); copy the config next to bootstrap (docs/aws.md)")
            else:
                ok(f"{code / config} present")
    else:
        print("check-lambda-package: note no --code-dir: the built Lambda package itself was not checked")

    print(f"check-lambda-package: {'FAILED' if failures else 'ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
