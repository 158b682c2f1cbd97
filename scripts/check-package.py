#!/usr/bin/env python3
"""Load a built Azure Functions package the way the Functions host does, and invoke every function.

Usage: check-package.py ZIP [--bicep FILE] [--main-bicep FILE] [--azurite auto|standard|none]
                            [--message FUNCTION=FILE]

What it does, in the host's order (../shared/reference/azure-functions.md §1; learn.microsoft.com
"Azure Functions custom handlers"):
  1. unzip ZIP into an empty directory, restoring each entry's Unix mode from the zip (as the platform's
     unzip does; nothing is made executable here);
  2. read host.json: version, customHandler.description (defaultExecutablePath, arguments with
     %APP_SETTING% expansion, workingDirectory), the HTTP mode, extensionBundle, extensions.queues/http;
  3. index every folder at the app root that holds a function.json (the folder name is the function
     name); a function.json anywhere else is not indexed by the host and fails the check;
  4. validate each binding against the documented schema of its type (timerTrigger: NCRONTAB with 6
     fields; queueTrigger / queue: queueName, connection that resolves to app settings; httpTrigger:
     authLevel, methods, route, public at /api/<name> as the code's URLs say; http out: `res` or
     `$return`); an unknown type fails;
  5. ask the executable which functions it serves (`<exe> functions`) and compare with the folders:
     a folder the code does not serve, or a function served without a folder, fails;
  6. start the executable exactly as host.json says, from the unzipped directory, with the host's
     variables (FUNCTIONS_CUSTOMHANDLER_PORT, FUNCTIONS_CUSTOMHANDLER_WORKER_ID, FUNCTIONS_APP_ROOT_PATH),
     the platform's managed-identity endpoint (IDENTITY_ENDPOINT, IDENTITY_HEADER: a local fake) and the
     app settings the Bicep sets (--bicep), each value literal, a parameter default from --main-bicep, or
     a local stand-in for what only Azure has (storage endpoints: Azurite; Key Vault reference, client
     id, tenant: fakes); poll `GET /` every 25 ms until anything answers;
  7. POST /<FunctionName> with each trigger's documented payload (`{"Data": ..., "Metadata": ...}`;
     queue messages in the documented and in the observed JSON-in-string form) and check the answer:
     2xx, `Outputs` (keys = output bindings, `res` an HTTP response), `Logs` (strings), `ReturnValue`;
     a name no folder has must not answer 2xx;
  8. stop it with SIGTERM, as the host does, and expect a clean exit.

Local substitutions, printed in the report: SECMON_STORAGE_SAS (Azurite takes no Entra token over http)
and SECMON_GRAPH_URL (a fake Graph that lists no alerts). Exit 1 on any failure.
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests/fixtures/samples"
HOST_VERSION = "4.1040.300.0"

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_ENTRY = REPO / ".tools/azurite/node_modules/azurite/dist/src/azurite.js"

# Host validation (Azure/azure-functions-host: Utility.IsValidFunctionName, BindingNameValidationRegex).
FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,127}$", re.I)
BINDING_NAME = re.compile(r"^([a-zA-Z][a-zA-Z0-9]{0,127}|\$return)$")
QUEUE_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
TIMESPAN = re.compile(r"^(\d+\.)?\d{1,2}:\d{2}:\d{2}(\.\d+)?$")
HTTP_METHODS = {"get", "post", "put", "delete", "patch", "head", "options", "trace"}
AUTH_LEVELS = {"anonymous", "function", "admin"}
QUEUE_SETTINGS = {
    "maxPollingInterval": "timespan", "visibilityTimeout": "timespan", "batchSize": (1, 32),
    "maxDequeueCount": (1, 10_000), "newBatchThreshold": (0, 10_000), "messageEncoding": {"base64", "none"},
}
HOST_HTTP_FLAGS = ("enableForwardingHttpRequest", "enableProxyingHttpRequest")

# What only a deployment has, by app setting name: its local stand-in (Azurite URLs are filled in later).
CLIENT_ID = "00000000-0000-0000-0000-00000000c11d"
SETTING_STAND_INS = {
    "AzureWebJobsStorage__clientId": CLIENT_ID,
    "AZURE_CLIENT_ID": CLIENT_ID,
    "AzureWebJobsStorage__blobServiceUri": "{blob}",
    "SECMON_BLOB_URL": "{blob}",
    "AzureWebJobsStorage__queueServiceUri": "{queue}",
    "SECMON_QUEUE_URL": "{queue}",
    "AzureWebJobsStorage__tableServiceUri": "{table}",
    "APPLICATIONINSIGHTS_CONNECTION_STRING":
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/",
    "SECMON_TENANTS": "{tenant}",
    "SECMON_MAIL_SENDER": "secmon@example.com",
    "SECMON_TEAMS_URL": "{fake}/teams",
    # A Key Vault reference in Azure (the bot's client secret, worker only); never used by the check.
    "SECMON_BOT_SECRET": "bot-secret-stand-in",
    # infra/app/function.bicep sets the host id per app (edge, worker); any valid id does here.
    "AzureFunctionsWebHost__hostid": "secmon-check-package",
    # `string(auditRetentionDays)`: main.bicep's default, the audit container's immutability period.
    "SECMON_AUDIT_RETENTION_DAYS": "400",
}
# Bicep parameters without a literal default (module outputs) that appear inside interpolations.
PARAM_STAND_INS = {"identityClientId": CLIENT_ID}


class Report:
    def __init__(self):
        self.failures = []

    def fail(self, msg):
        self.failures.append(msg)
        print(f"check-package: FAIL {msg}", flush=True)

    def ok(self, msg):
        print(f"check-package: ok   {msg}", flush=True)


# ---------------------------------------------------------------- unzip, host.json, index


def unzip(zip_path, out, report):
    """Extracts like the platform: every entry, mode from external_attr; refuses unsafe paths."""
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            name = info.filename
            if name.startswith("/") or ".." in Path(name).parts:
                report.fail(f"zip entry {name!r} escapes the app root")
                continue
            z.extract(info, out)
            mode = (info.external_attr >> 16) & 0o777
            if info.create_system == 3 and mode:
                os.chmod(out / name, mode)
            elif not info.is_dir():
                os.chmod(out / name, 0o644)
        return [i.filename for i in z.infolist()]


def expand(text, settings, what, report):
    """%NAME% -> the app setting, as the host expands host.json arguments and binding values."""
    def one(m):
        if m.group(1) not in settings:
            report.fail(f"{what}: %{m.group(1)}% is not an app setting the Bicep sets")
            return m.group(0)
        return settings[m.group(1)]
    return re.sub(r"%([A-Za-z0-9_]+)%", one, text)


def check_host_json(root, settings, report):
    path = root / "host.json"
    if not path.is_file():
        report.fail("host.json is not at the app root")
        return None
    try:
        host = json.loads(path.read_text())
    except ValueError as e:
        report.fail(f"host.json is not JSON: {e}")
        return None
    if host.get("version") != "2.0":
        report.fail(f"host.json: version is {host.get('version')!r}, the v4 host needs \"2.0\"")
    handler = host.get("customHandler")
    desc = handler.get("description") if isinstance(handler, dict) else None
    if not isinstance(desc, dict) or not isinstance(desc.get("defaultExecutablePath"), str):
        report.fail("host.json: customHandler.description.defaultExecutablePath is missing")
        return None
    for flag in HOST_HTTP_FLAGS:
        if handler.get(flag):
            report.fail(f"host.json: customHandler.{flag} is set; this check knows only the default HTTP mode "
                        "(Data.req / Outputs.res), and would invoke the HTTP functions wrongly")
    args = desc.get("arguments", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        report.fail("host.json: customHandler.description.arguments must be an array of strings")
        args = []
    workdir = desc.get("workingDirectory", "")
    if not isinstance(workdir, str):
        report.fail("host.json: customHandler.description.workingDirectory must be a string")
        workdir = ""
    cwd = (root / workdir) if workdir else root
    exe = root / desc["defaultExecutablePath"]
    if not exe.is_file():
        report.fail(f"host.json: defaultExecutablePath {desc['defaultExecutablePath']!r} is not a file in the package")
    elif not os.access(exe, os.X_OK):
        report.fail(f"{desc['defaultExecutablePath']}: not executable after unzip (the zip lost its mode bits)")
    if not cwd.is_dir():
        report.fail(f"host.json: workingDirectory {workdir!r} is not a directory in the package")

    bundle = host.get("extensionBundle")
    if not isinstance(bundle, dict) or bundle.get("id") != "Microsoft.Azure.Functions.ExtensionBundle":
        report.fail("host.json: extensionBundle.id must be Microsoft.Azure.Functions.ExtensionBundle "
                    "(timer and queue bindings come from the bundle)")
    else:
        check_bundle_range(str(bundle.get("version", "")), report)

    ext = host.get("extensions", {})
    queues = ext.get("queues", {}) if isinstance(ext, dict) else {}
    for key, value in queues.items():
        rule = QUEUE_SETTINGS.get(key)
        if rule is None:
            report.fail(f"host.json: extensions.queues.{key} is not a documented queue setting")
        elif rule == "timespan" and not (isinstance(value, str) and TIMESPAN.match(value)):
            report.fail(f"host.json: extensions.queues.{key} {value!r} is not a timespan hh:mm:ss")
        elif isinstance(rule, tuple) and not (isinstance(value, int) and rule[0] <= value <= rule[1]):
            report.fail(f"host.json: extensions.queues.{key} {value!r} is not an integer in {rule}")
        elif isinstance(rule, set) and value not in rule:
            report.fail(f"host.json: extensions.queues.{key} {value!r} is not one of {sorted(rule)}")
    http = ext.get("http", {}) if isinstance(ext, dict) else {}
    prefix = http.get("routePrefix", "api")
    if not isinstance(prefix, str):
        report.fail("host.json: extensions.http.routePrefix must be a string")
        prefix = "api"
    timeout = host.get("functionTimeout")
    if timeout is not None and not (isinstance(timeout, str) and TIMESPAN.match(timeout)):
        report.fail(f"host.json: functionTimeout {timeout!r} is not a timespan")
    command = [str(exe)] + [expand(a, settings, "host.json arguments", report) for a in args]
    report.ok(f"host.json: start {command[1:]} with {desc['defaultExecutablePath']} in ./{workdir}, "
              f"bundle {bundle.get('version') if isinstance(bundle, dict) else None}, queues {queues}")
    return {"command": command, "cwd": cwd, "exe": exe, "queues": queues, "route_prefix": prefix}


def check_bundle_range(version, report):
    """A NuGet range like `[4.*, 5.0.0)`; Flex needs 4.0.0 or later for non-C# apps."""
    m = re.match(r"^\[\s*(\d+)(?:\.[\d*]+)*\s*,\s*(\d+)(?:\.\d+)*\s*\)$", version)
    if not m:
        report.fail(f"host.json: extensionBundle.version {version!r} is not a range like [4.*, 5.0.0)")
    elif int(m.group(1)) < 4:
        report.fail(f"host.json: extensionBundle.version {version!r}: Flex Consumption needs bundle 4 or later")


def index_functions(root, report):
    """Root folders with a function.json, as the host indexes them; any other function.json fails."""
    functions = {}
    for path in sorted(root.rglob("function.json")):
        rel = path.relative_to(root)
        if len(rel.parts) != 2:
            report.fail(f"{rel}: not in a folder at the app root, so the host does not index it "
                        f"(it would need to be {rel.parts[-2]}/function.json)")
            continue
        name = rel.parts[0]
        if not FUNCTION_NAME.match(name):
            report.fail(f"{rel}: {name!r} is not a valid function name")
            continue
        try:
            functions[name] = json.loads(path.read_text())
        except ValueError as e:
            report.fail(f"{rel}: not JSON: {e}")
    if not functions:
        report.fail("no function indexed: no folder at the app root holds a function.json")
    return functions


# ---------------------------------------------------------------- binding schemas

CRON_FIELDS = [("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
               ("day of week", 0, 6)]
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def ncrontab_errors(expr):
    """Problems with a 6-field NCRONTAB expression (`{second} {minute} {hour} {day} {month} {day-of-week}`)."""
    fields = expr.split()
    if len(fields) != 6:
        return [f"{expr!r} has {len(fields)} fields; NCRONTAB in Functions has 6 (seconds first)"]
    errors = []
    for text, (what, lo, hi) in zip(fields, CRON_FIELDS):
        names = MONTHS if what == "month" else DAYS if what == "day of week" else []

        def value(v):
            if v.lower() in names:
                return names.index(v.lower()) + (1 if what == "month" else 0)
            if not v.isdigit():
                raise ValueError(v)
            n = int(v)
            if not lo <= n <= hi:
                raise ValueError(v)
            return n

        for part in text.split(","):
            base, _, step = part.partition("/")
            try:
                if step and (not step.isdigit() or int(step) == 0):
                    raise ValueError(step)
                if base != "*":
                    a, _, b = base.partition("-")
                    if value(a) > (value(b) if b else hi if step else value(a)):
                        raise ValueError(base)
            except ValueError as e:
                errors.append(f"{expr!r}: {what} field {text!r}: {e} is out of {lo}-{hi} or not a number")
    return errors


def check_bindings(name, fjson, settings, report):
    """Validates one function.json; returns (trigger binding, output bindings) or None."""
    where = f"{name}/function.json"
    bindings = fjson.get("bindings") if isinstance(fjson, dict) else None
    if not isinstance(bindings, list) or not bindings:
        report.fail(f"{where}: no bindings")
        return None
    if fjson.get("disabled") is True:
        report.fail(f"{where}: disabled")
    triggers, outputs, seen, ok = [], [], set(), True
    for b in bindings:
        kind, bname, direction = b.get("type"), b.get("name"), b.get("direction")
        label = f"{where}: binding {bname!r} ({kind})"
        if not isinstance(bname, str) or not BINDING_NAME.match(bname):
            report.fail(f"{label}: name is not a valid binding name")
            ok = False
            continue
        if bname.lower() in seen:
            report.fail(f"{label}: a second binding with this name")
            ok = False
        seen.add(bname.lower())
        if not isinstance(kind, str):
            report.fail(f"{label}: type is missing")
            ok = False
            continue
        if direction not in ("in", "out", "inout"):
            report.fail(f"{label}: direction {direction!r} is not in/out/inout")
            ok = False
            continue
        errors = []
        if kind == "timerTrigger":
            schedule = b.get("schedule")
            if direction != "in":
                errors.append("a trigger has direction in")
            if not isinstance(schedule, str):
                errors.append("schedule is missing")
            else:
                resolved = expand(schedule, settings, f"{where} schedule", report)
                errors += ncrontab_errors(resolved) if "%" not in resolved else []
                b = dict(b, schedule=resolved)
            for flag in ("runOnStartup", "useMonitor"):
                if flag in b and not isinstance(b[flag], bool):
                    errors.append(f"{flag} must be a boolean")
            if b.get("runOnStartup") is True:
                errors.append("runOnStartup is true: every scale-out and restart would run it (the docs advise against it)")
        elif kind in ("queueTrigger", "queue"):
            if kind == "queueTrigger" and direction != "in":
                errors.append("a trigger has direction in")
            if kind == "queue" and direction != "out":
                errors.append("a queue binding is an output (direction out)")
            queue = b.get("queueName")
            if not isinstance(queue, str):
                errors.append("queueName is missing")
            else:
                queue = expand(queue, settings, f"{where} queueName", report)
                if not QUEUE_NAME.match(queue):
                    errors.append(f"queueName {queue!r} is not a valid queue name (3-63 of a-z 0-9 -)")
            conn = b.get("connection")
            if not isinstance(conn, str) or not conn:
                errors.append("connection is missing")
            elif conn not in settings and not any(k.startswith(conn + "__") for k in settings):
                errors.append(f"connection {conn!r} resolves to no app setting ({conn} or {conn}__*)")
        elif kind == "httpTrigger":
            if direction != "in":
                errors.append("a trigger has direction in")
            if b.get("authLevel", "function") not in AUTH_LEVELS:
                errors.append(f"authLevel {b.get('authLevel')!r} is not one of {sorted(AUTH_LEVELS)}")
            methods = b.get("methods")
            if methods is not None and (not isinstance(methods, list) or not methods
                                        or not all(isinstance(m, str) and m.lower() in HTTP_METHODS for m in methods)):
                errors.append(f"methods {methods!r} is not a list of HTTP methods")
            route = b.get("route")
            if route is not None and (not isinstance(route, str) or route.startswith("/")):
                errors.append(f"route {route!r} must be a relative path")
        elif kind == "http":
            if direction != "out":
                errors.append("the http binding is the output (direction out)")
        else:
            errors.append("no documented schema known to this check; add it here before using the type")
        for e in errors:
            report.fail(f"{label}: {e}")
        ok = ok and not errors
        if kind.endswith("Trigger"):
            triggers.append(b)
        elif direction == "out":
            outputs.append(b)
    if len(triggers) != 1:
        report.fail(f"{where}: {len(triggers)} triggers; a function has exactly one")
        return None
    trigger = triggers[0]
    http_outs = [o for o in outputs if o.get("type") == "http"]
    if trigger["type"] == "httpTrigger" and len(http_outs) != 1:
        report.fail(f"{where}: an httpTrigger needs exactly one http output (`res` or `$return`)")
        ok = False
    if trigger["type"] != "httpTrigger" and http_outs:
        report.fail(f"{where}: an http output without an httpTrigger")
        ok = False
    if ok:
        report.ok(f"{where}: {trigger['type']} {trigger['name']!r}"
                  + (f" schedule {trigger['schedule']!r}" if "schedule" in trigger else "")
                  + (f" queue {trigger.get('queueName')!r} via {trigger.get('connection')}" if "queueName" in trigger else "")
                  + (f" {trigger.get('methods')} /{trigger.get('route', name)} auth {trigger.get('authLevel', 'function')}"
                     if trigger["type"] == "httpTrigger" else "")
                  + (f", outputs {[o['name'] for o in outputs]}" if outputs else ""))
    return trigger, outputs


# Functions whose route is not their name: the triage page serves every path under /api/triage/
# (src/functions/http.rs routes /api/triage/{*rest} to it).
OWN_ROUTES = {"triage-page": "triage/{*rest}"}


def check_routes(parsed, route_prefix, report):
    """Two HTTP functions may not share a route and a method, and each is public at /api/<name>: the
    path secmon's standalone and Lambda hosts serve and the one it gives Graph in subscriptions."""
    taken = {}
    for name, (trigger, _) in parsed.items():
        if trigger["type"] != "httpTrigger":
            continue
        route = trigger.get("route", name).strip("/").lower()
        public = "/" + "/".join(p for p in (route_prefix.strip("/"), route) if p)
        expected = "/".join(p for p in (route_prefix.strip("/"), OWN_ROUTES.get(name, name)) if p)
        if public != "/" + expected:
            report.fail(f"{name}/function.json: public path {public}, but the code's URLs are /api/{name}")
        for m in trigger.get("methods") or sorted(HTTP_METHODS):
            key = (route, m.lower())
            if key in taken:
                report.fail(f"{name}/function.json: {m} /{route} is also {taken[key]}'s route")
            taken[key] = name


# ---------------------------------------------------------------- app settings from the Bicep


def bicep_settings(bicep, main_bicep, stand_ins, report):
    """The appSettings the Bicep sets, each resolved to the value the checked process gets."""
    text = Path(bicep).read_text()
    defaults = {}
    if main_bicep and Path(main_bicep).is_file():
        defaults = dict(re.findall(r"^param\s+(\w+)\s+string\s*=\s*'([^']*)'", Path(main_bicep).read_text(), re.M))
    entries = re.findall(r"\{\s*name:\s*'([^']+)'\s*,\s*value:\s*(.+?)\s*\}\s*$", text, re.M)
    if not entries:
        report.fail(f"{bicep}: no appSettings entries found")
    settings = {}
    for name, expr in entries:
        if name in stand_ins:
            settings[name] = stand_ins[name]
            continue
        lit = re.fullmatch(r"'(.*)'", expr)
        if lit:
            unresolved = []

            def param(m):
                p = m.group(1)
                if p in PARAM_STAND_INS:
                    return PARAM_STAND_INS[p]
                if p in defaults:
                    return defaults[p]
                unresolved.append(p)
                return m.group(0)

            value = re.sub(r"\$\{(\w+)\}", param, lit.group(1))
            if unresolved:
                report.fail(f"app setting {name} = {expr}: no default or local stand-in for {unresolved}")
                continue
            settings[name] = value
        elif re.fullmatch(r"\w+", expr) and expr in defaults:
            settings[name] = defaults[expr]
        else:
            report.fail(f"app setting {name} = {expr}: no literal value, parameter default or local stand-in "
                        "(add one to SETTING_STAND_INS in scripts/check-package.py)")
    return settings


# ---------------------------------------------------------------- the platform's fakes


class Fakes:
    """What the platform and the cloud answer: the managed-identity endpoint, Graph, a Teams sink."""

    def __init__(self):
        self.identity_header = uuid.uuid4().hex
        self.requests = []
        fakes = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                fakes.requests.append(("GET", url.path))
                if url.path == "/msi/token":
                    if self.headers.get("X-IDENTITY-HEADER") != fakes.identity_header:
                        return self.answer(401, {"error": "bad X-IDENTITY-HEADER"})
                    q = urllib.parse.parse_qs(url.query)
                    return self.answer(200, {
                        "access_token": "package-check-token", "token_type": "Bearer",
                        "expires_on": str(int(time.time()) + 3600),
                        "resource": q.get("resource", [""])[0], "client_id": q.get("client_id", [CLIENT_ID])[0]})
                if url.path.endswith("/security/alerts_v2"):
                    return self.answer(200, {"value": []})
                if url.path.endswith("/subscriptions"):
                    return self.answer(200, {"value": []})
                return self.answer(404, {"error": {"code": "NotFound", "message": f"package check fake: {url.path}"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                fakes.requests.append(("POST", self.path))
                if self.path.startswith("/teams"):
                    return self.answer(202, {})
                return self.answer(404, {"error": {"code": "NotFound"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Azurite:
    """The storage the Bicep points at, on loopback: a private Azurite on free ports (nothing shared with
    other runs), or with `standard` the one scripts/azurite.sh started on 10000-10002."""

    def __init__(self, mode, report):
        self.proc = None
        if mode == "none":
            self.ports = (9, 9, 9)
            return
        if mode == "standard":
            self.ports = (10000, 10001, 10002)
            if not port_open(10001):
                report.fail("Azurite is not answering on 127.0.0.1:10001 (scripts/azurite.sh start)")
            return
        if not AZURITE_ENTRY.is_file():
            print("check-package: installing the npm package azurite 3.x into .tools/azurite", flush=True)
            subprocess.run(["npm", "install", "--prefix", str(REPO / ".tools/azurite"), "--no-audit", "--no-fund",
                            "--loglevel=error", "azurite@3"], check=True, stdout=subprocess.DEVNULL)
        self.ports = (free_port(), free_port(), free_port())
        self.proc = subprocess.Popen(
            ["node", str(AZURITE_ENTRY), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck",
             "--disableTelemetry",
             "--blobHost", "127.0.0.1", "--blobPort", str(self.ports[0]),
             "--queueHost", "127.0.0.1", "--queuePort", str(self.ports[1]),
             "--tableHost", "127.0.0.1", "--tablePort", str(self.ports[2])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
        deadline = time.monotonic() + 20
        while not (port_open(self.ports[0]) and port_open(self.ports[1])):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                report.fail("a private Azurite did not start")
                break
            time.sleep(0.1)

    def urls(self):
        return {k: f"http://127.0.0.1:{p}/{AZURITE_ACCOUNT}" for k, p in zip(("blob", "queue", "table"), self.ports)}

    def close(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


def account_sas():
    """An account SAS for Azurite's published key (blob + queue, every permission, one day)."""
    sp, ss, srt, spr, sv = "rwdlacup", "bq", "sco", "https,http", "2021-08-06"
    now = datetime.datetime.now(datetime.timezone.utc)
    st = (now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    se = (now + datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    to_sign = f"{AZURITE_ACCOUNT}\n{sp}\n{ss}\n{srt}\n{st}\n{se}\n\n{spr}\n{sv}\n\n"
    sig = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest())
    return urllib.parse.urlencode({"sv": sv, "ss": ss, "srt": srt, "sp": sp, "st": st, "se": se, "spr": spr,
                                   "sig": sig.decode()})


# ---------------------------------------------------------------- payloads and answers


def sample(name):
    return json.loads((SAMPLES / name).read_text())


def payloads(name, trigger, messages):
    """(label, body) of each documented request for this trigger, with the binding renamed to ours."""
    kind, binding = trigger["type"], trigger["name"]
    if kind == "timerTrigger":
        documented = sample("functions-timer-request.json")
        timer = documented["Data"].pop("timer")
        documented["Data"] = {binding: timer}
        documented["Metadata"]["sys"]["MethodName"] = name
        first = json.loads(json.dumps(documented))
        first["Data"][binding]["ScheduleStatus"] = None
        return [("documented timer", documented), ("timer, ScheduleStatus null (monitoring off)", first)]
    if kind == "queueTrigger":
        text = messages.get(name, sample("functions-queue-request-observed.json")["Data"]["queue"])
        documented = sample("functions-queue-request.json")
        documented["Data"] = {binding: text}
        documented["Metadata"]["sys"]["MethodName"] = name
        observed = sample("functions-queue-request-observed.json")
        observed["Data"] = {binding: text}
        observed["Metadata"]["sys"]["MethodName"] = name
        return [("documented queue message", documented),
                ("observed queue message (metadata JSON-in-string, DequeueCount \"1\")", observed)]
    if kind == "httpTrigger":
        out = []
        for method in trigger.get("methods") or ["post"]:
            req = sample("functions-http-request.json")
            r = req["Data"].pop("req")
            r["Method"] = method.upper()
            route = trigger.get('route', name).replace("{*rest}", "sample-token")
            r["Url"] = f"https://secmon.azurewebsites.net/api/{route}"
            if method.lower() in ("get", "head"):
                r.pop("Body", None)
                r["Headers"] = {}
            req["Data"] = {binding: r}
            out.append((f"documented HTTP {method.upper()}", req))
        return out
    return []


def post(port, function, body, timeout=30):
    data = json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/{function}", data=data, method="POST", headers={
        "Content-Type": "application/json", "X-Azure-Functions-InvocationId": str(uuid.uuid4()),
        "X-Azure-Functions-HostVersion": HOST_VERSION, "User-Agent": f"Azure-Functions-Host/{HOST_VERSION}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_answer(name, label, trigger, outputs, status, raw, report):
    what = f"{name}: {label}"
    if not 200 <= status < 300:
        report.fail(f"{what}: HTTP {status} (the host fails the invocation on non-2xx): {raw[:300]!r}")
        return False
    try:
        body = json.loads(raw)
    except ValueError:
        report.fail(f"{what}: the answer is not JSON: {raw[:200]!r}")
        return False
    if not isinstance(body, dict) or not {"Outputs", "Logs", "ReturnValue"} <= set(body):
        report.fail(f"{what}: the answer lacks Outputs/Logs/ReturnValue: {raw[:300]!r}")
        return False
    problems = []
    outs = body["Outputs"]
    logs = body["Logs"]
    if not isinstance(outs, dict):
        problems.append("Outputs is not an object")
        outs = {}
    if logs is not None and not (isinstance(logs, list) and all(isinstance(line, str) for line in logs)):
        problems.append("Logs is not an array of strings")
    names = {o["name"] for o in outputs if o["name"] != "$return"}
    for key in outs:
        if key not in names:
            problems.append(f"Outputs.{key} is no output binding of function.json ({sorted(names)}); the host ignores it")
    for o in outputs:
        if o.get("type") != "http":
            continue
        res = body["ReturnValue"] if o["name"] == "$return" else outs.get(o["name"])
        where = "ReturnValue" if o["name"] == "$return" else f"Outputs.{o['name']}"
        if not isinstance(res, dict):
            problems.append(f"{where} is not an HTTP response object")
            continue
        code = res.get("statusCode", res.get("status", 200))
        try:
            ok_code = 100 <= int(code) < 600
        except (TypeError, ValueError):
            ok_code = False
        if not ok_code:
            problems.append(f"{where}.statusCode {code!r} is not an HTTP status")
        headers = res.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            problems.append(f"{where}.headers is not an object of strings")
    for p in problems:
        report.fail(f"{what}: {p}")
    if not problems:
        extra = ""
        for o in outputs:
            if o.get("type") == "http":
                res = body["ReturnValue"] if o["name"] == "$return" else outs.get(o["name"], {})
                extra = f", res {res.get('statusCode', res.get('status', 200))}"
        first = f": {logs[0][:100]!r}" if logs else ""
        report.ok(f"{what}: {status}{extra}, {len(logs or [])} log lines{first}")
    return not problems


# ---------------------------------------------------------------- main


def served_functions(host, env, report):
    """What the executable says it serves (`<exe> functions`, one name per line)."""
    try:
        out = subprocess.run([str(host["exe"]), "functions"], cwd=host["cwd"], env=env, capture_output=True,
                             text=True, timeout=30)
    except OSError as e:
        report.fail(f"cannot run {host['exe'].name}: {e}")
        return None
    if out.returncode != 0:
        report.fail(f"`{host['exe'].name} functions` exited {out.returncode}: {out.stderr.strip()[:300]}")
        return None
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("zip")
    ap.add_argument("--bicep", default=str(REPO / "infra/app/function.bicep"), help="Bicep with the app settings")
    ap.add_argument("--main-bicep", default=str(REPO / "infra/main.bicep"), help="parameter defaults")
    ap.add_argument("--azurite", choices=["auto", "standard", "none"], default="auto",
                    help="auto: a private Azurite on free ports (from .tools/azurite, installed if missing); "
                         "standard: the one on 127.0.0.1:10000-10002; none: no storage")
    ap.add_argument("--message", action="append", default=[], metavar="FUNCTION=FILE",
                    help="queue message text for a queue-triggered function")
    args = ap.parse_args()
    report = Report()
    messages = {}
    for m in args.message:
        fn, _, file = m.partition("=")
        messages[fn] = Path(file).read_text().strip()

    started = time.monotonic()
    fakes = Fakes()
    azurite = Azurite(args.azurite, report)
    tmp = Path(tempfile.mkdtemp(prefix="secmon-check-package-"))
    child = None
    try:
        root = tmp / "wwwroot"
        root.mkdir()
        entries = unzip(args.zip, root, report)
        report.ok(f"unzipped {len(entries)} entries of {args.zip} into an empty {root}")

        fill = dict(azurite.urls(), tenant=str(uuid.uuid4()), fake=fakes.url)
        stand_ins = {k: v.format(**fill) for k, v in SETTING_STAND_INS.items()}
        settings = bicep_settings(args.bicep, args.main_bicep, stand_ins, report)
        report.ok(f"{len(settings)} app settings from {Path(args.bicep).name}: {sorted(settings)}")

        host = check_host_json(root, settings, report)
        functions = index_functions(root, report)
        parsed = {}
        for name, fjson in sorted(functions.items()):
            p = check_bindings(name, fjson, settings, report)
            if p:
                parsed[name] = p
        check_routes(parsed, host["route_prefix"] if host else "api", report)
        if host is None or not host["exe"].is_file() or not os.access(host["exe"], os.X_OK):
            return finish(report, started)

        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp),
            **settings,
            # What the host gives its worker (HttpWorkerProcess.cs), and App Service's identity endpoint.
            "FUNCTIONS_CUSTOMHANDLER_PORT": str(port),
            "FUNCTIONS_HTTPWORKER_PORT": str(port),
            "FUNCTIONS_CUSTOMHANDLER_WORKER_ID": str(uuid.uuid4()),
            "FUNCTIONS_HTTPWORKER_ID": str(uuid.uuid4()),
            "FUNCTIONS_APP_ROOT_PATH": str(root),
            "IDENTITY_ENDPOINT": f"{fakes.url}/msi/token",
            "IDENTITY_HEADER": fakes.identity_header,
            # Local substitutions (see the module docs).
            "SECMON_STORAGE_SAS": account_sas(),
            "SECMON_GRAPH_URL": fakes.url,
        }

        served = served_functions(host, env, report)
        if served is not None:
            report.ok(f"the executable serves {served}")
            for name in sorted(set(functions) - set(served)):
                report.fail(f"{name}/function.json: the code does not serve {name!r} (POST /{name} would fail)")
            for name in sorted(set(served) - set(functions)):
                report.fail(f"the code serves {name!r} but the package has no {name}/function.json "
                            "(the host never invokes it)")

        stdout = open(tmp / "handler.stdout", "wb")
        t0 = time.monotonic()
        child = subprocess.Popen(host["command"], cwd=host["cwd"], env=env, stdout=stdout, stderr=subprocess.STDOUT)
        ready = wait_ready(port, child, report)
        startup = time.monotonic() - t0
        if not ready:
            print_tail(tmp / "handler.stdout")
            return finish(report, started)
        (report.ok if startup < 30 else report.fail)(
            f"ready after {startup * 1000:.0f} ms (GET / polled every 25 ms; Flex allows 30 s)")

        invocations = 0
        for name, (trigger, outputs) in sorted(parsed.items()):
            for label, body in payloads(name, trigger, messages):
                t = time.monotonic()
                status, raw = post(port, name, body)
                invocations += 1
                check_answer(name, f"{label} ({(time.monotonic() - t) * 1000:.0f} ms)", trigger, outputs,
                             status, raw, report)
        unknown = "secmon-package-check-no-such-function"
        status, raw = post(port, unknown, {"Data": {}, "Metadata": {}})
        if 200 <= status < 300:
            report.fail(f"POST /{unknown} answered {status}: a 2xx for any name proves nothing about what is served")
        else:
            report.ok(f"POST /{unknown} -> {status} (a function without a folder is refused)")

        child.send_signal(signal.SIGTERM)
        try:
            code = child.wait(10)
            (report.ok if code == 0 else report.fail)(f"SIGTERM: exited {code}")
        except subprocess.TimeoutExpired:
            report.fail("SIGTERM: still running after 10 s")
        child = None
        calls = sorted({f"{m} {p.split('?')[0]}" for m, p in fakes.requests})
        report.ok(f"{invocations} invocations; the handler called the fakes: {calls}")
        if report.failures:
            print_tail(tmp / "handler.stdout")
        return finish(report, started)
    finally:
        if child is not None:
            child.kill()
            child.wait()
        fakes.close()
        azurite.close()
        shutil.rmtree(tmp, ignore_errors=True)


def wait_ready(port, child, report, limit=60):
    """The host's readiness check: any HTTP answer on `/`, every 25 ms (HttpWorkerProcess)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            pass
        if child.poll() is not None:
            report.fail(f"the handler exited with {child.returncode} before it answered GET /")
            return False
        time.sleep(0.025)
    report.fail(f"the handler did not answer GET / within {limit} s")
    return False


def print_tail(path, lines=20):
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    print(f"check-package: last {min(lines, len(text))} lines of the handler's output:")
    for line in text[-lines:]:
        print(f"    {line[:400]}")


def finish(report, started):
    took = time.monotonic() - started
    if report.failures:
        print(f"check-package: FAILED ({len(report.failures)} problems, {took:.1f} s)")
        return 1
    print(f"check-package: ok ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
