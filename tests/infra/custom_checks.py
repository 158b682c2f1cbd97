#!/usr/bin/env python3
"""Checks on the Bicep templates that checkov misses or cannot see.

Usage: custom_checks.py DIR
Prints one line per finding, `RULE file:line: message`, and exits 1 if there is any.
Works on the tree-sitter syntax tree, so resources inside `if (...)` and `[for ...]` are seen too
(checkov does not look inside conditional resources).

Rules:
  STORAGE_SHARED_KEY    storage account without allowSharedKeyAccess: false
  STORAGE_PUBLIC_BLOB   storage account without allowBlobPublicAccess: false
  STORAGE_TLS_HTTPS     storage account without minimumTlsVersion 'TLS1_2' / supportsHttpsTrafficOnly true
  APPSETTING_SECRET     app setting value with a key/SAS marker, a list*() call, a @secure() parameter,
                        a keyed connection-string setting (AzureWebJobsStorage=...),
                        or a secret-looking name whose value is not a Key Vault reference
  SECURE_FLOW           @secure() parameter passed to a module parameter that is not @secure()
  SECURE_OUTPUT         @secure() parameter (or list*() call) used in an output
  GRAPH_EXTENSION       Microsoft.Graph resources without `extension microsoftGraphV1`, or it is
                        missing from bicepconfig.json
  GRAPH_ROLES           SecurityAlert.ReadWrite.All / Mail.Send not granted, or app role ids
                        not looked up with filter(graphSp.appRoles, ...)
  FLEX_PLAN             no FC1 FlexConsumption plan, or no site with runtime custom 1.0, or a
                        setting Flex rejects (FUNCTIONS_WORKER_RUNTIME, ...)
  SITE_HARDENING        site without httpsOnly, ftpsState Disabled, minTlsVersion 1.2, or
                        keyVaultReferenceIdentity while using Key Vault references
  KEYVAULT_MODE         vault without RBAC, soft delete or purge protection
  APPINSIGHTS_LOCAL_AUTH  Application Insights without DisableLocalAuth: true
  MODULE_WIRING         a module given a parameter its file does not declare, not given a required
                        one, or `<module>.outputs.X` where the file has no output X (the one class of
                        undefined names checked offline)
"""
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parse_bicep import parse  # noqa: E402

SECRET_MARKERS = ("AccountKey=", "SharedAccessSignature", "sig=")
LIST_CALL_RE = re.compile(r"\blist[A-Za-z]*\s*\(")
SECRET_NAME_RE = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|ACCESS_?KEY|HMAC|WEBHOOK|TEAMS_URL|SAS)", re.I)
KV_REF_RE = re.compile(r"^@Microsoft\.KeyVault\((VaultName=[^;]+;SecretName=[^;)]+(;SecretVersion=[^)]+)?|SecretUri=https://[^)]+)\)$")
# Settings Flex Consumption rejects (the runtime lives in functionAppConfig).
FLEX_REJECTED = ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
                 "WEBSITE_TIME_ZONE")
# Connection-string settings that carry an account key (use the __credential/__serviceUri form).
KEYED_SETTINGS = ("AzureWebJobsStorage", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING")
GRAPH_ROLES = ("SecurityAlert.ReadWrite.All", "Mail.Send")


class File:
    """One parsed .bicep file with the pieces the rules need."""

    def __init__(self, path: Path):
        self.path = path
        self.src = path.read_bytes()
        self.root = parse(self.src).root_node
        self.secure_params = set()
        self.params = set()
        self.required_params = set()
        self.outputs = set()
        for node in self.root.children:
            if node.type == "output_declaration":
                self.outputs.add(self.text(node.children[1]))
            if node.type == "parameter_declaration":
                name = self.text(node.children[1])
                self.params.add(name)
                if not any(c.type == "=" for c in node.children):
                    self.required_params.add(name)
                prev = node.prev_sibling
                if prev is not None and prev.type == "decorators" and "@secure()" in self.text(prev).replace(" ", ""):
                    self.secure_params.add(name)

    def text(self, node) -> str:
        return self.src[node.start_byte:node.end_byte].decode()

    def line(self, node) -> int:
        return node.start_point[0] + 1

    def walk(self, node_type, node=None):
        stack = [node or self.root]
        while stack:
            n = stack.pop()
            if n.type == node_type:
                yield n
            stack.extend(reversed(n.children))

    def resources(self, type_prefix):
        """(declaration, body object, existing?) for resources whose type starts with type_prefix."""
        for decl in self.walk("resource_declaration"):
            rtype = self.string_value(decl.children[2])
            if rtype is None or not rtype.split("@")[0] == type_prefix:
                continue
            existing = any(c.type == "existing" for c in decl.children)
            body = next(self.walk("object", decl), None)
            yield decl, body, existing

    def string_value(self, node):
        """Plain value of a string node without interpolation, else None."""
        if node is None or node.type != "string":
            return None
        if any(c.type == "interpolation" for c in node.children):
            return None
        return "".join(self.text(c) for c in node.children if c.type == "string_content")

    def prop(self, obj, *path):
        """Value node at obj.path[0].path[1]... (keys compared case-insensitively), or None."""
        for key in path:
            if obj is None or obj.type != "object":
                return None
            found = None
            for p in obj.children:
                if p.type != "object_property":
                    continue
                k = p.children[0]
                kname = self.string_value(k) if k.type == "string" else self.text(k)
                if kname is not None and kname.lower() == key.lower():
                    found = p.children[2]
            obj = found
        return obj

    def identifiers(self, node):
        return {self.text(n) for n in self.walk("identifier", node)}


def check(directory: Path):
    findings = []

    def report(rule, f, node, msg):
        line = f.line(node) if node is not None else 1
        findings.append(f"{rule} {f.path}:{line}: {msg}")

    files = {p.resolve(): File(p) for p in sorted(directory.rglob("*.bicep"))}
    flex_plan = custom_site = None

    for f in files.values():
        # Storage accounts.
        for decl, body, existing in f.resources("Microsoft.Storage/storageAccounts"):
            if existing:
                continue
            props = f.prop(body, "properties")
            for key, rule in (("allowSharedKeyAccess", "STORAGE_SHARED_KEY"), ("allowBlobPublicAccess", "STORAGE_PUBLIC_BLOB")):
                v = f.prop(props, key)
                if v is None or f.text(v) != "false":
                    report(rule, f, decl, f"storage account must set properties.{key}: false")
            tls, https = f.prop(props, "minimumTlsVersion"), f.prop(props, "supportsHttpsTrafficOnly")
            if f.string_value(tls) != "TLS1_2" or https is None or f.text(https) != "true":
                report("STORAGE_TLS_HTTPS", f, decl, "storage account must set minimumTlsVersion 'TLS1_2' and supportsHttpsTrafficOnly: true")

        # Sites: app settings, hardening, Flex runtime.
        for decl, body, existing in f.resources("Microsoft.Web/sites"):
            if existing:
                continue
            props = f.prop(body, "properties")
            settings = f.prop(props, "siteConfig", "appSettings")
            uses_kv_ref = False
            for item in (settings.children if settings is not None else []):
                if item.type != "object":
                    continue
                name_node, value_node = f.prop(item, "name"), f.prop(item, "value")
                name = f.string_value(name_node) or (f.text(name_node) if name_node else "?")
                if value_node is None:
                    continue
                vtext = f.text(value_node)
                is_kv_ref = vtext.startswith("'@Microsoft.KeyVault(")
                uses_kv_ref |= is_kv_ref
                for marker in SECRET_MARKERS:
                    if marker.lower() in vtext.lower():
                        report("APPSETTING_SECRET", f, item, f"{name}: value contains {marker!r}")
                if LIST_CALL_RE.search(vtext):
                    report("APPSETTING_SECRET", f, item, f"{name}: value calls a list*() function (keys/SAS)")
                if f.identifiers(value_node) & f.secure_params:
                    report("APPSETTING_SECRET", f, item, f"{name}: value uses a @secure() parameter; store it in Key Vault and reference it")
                if SECRET_NAME_RE.search(name) and not is_kv_ref:
                    report("APPSETTING_SECRET", f, item, f"{name}: looks secret but is not a Key Vault reference")
                if is_kv_ref:
                    shape = re.sub(r"\$\{[^}]*\}", "X", vtext.strip("'"))
                    if not KV_REF_RE.match(shape):
                        report("APPSETTING_SECRET", f, item, f"{name}: malformed Key Vault reference {vtext}")
                if name in FLEX_REJECTED:
                    report("FLEX_PLAN", f, item, f"{name}: not allowed on Flex Consumption")
                if name in KEYED_SETTINGS:
                    report("APPSETTING_SECRET", f, item, f"{name}: connection string setting; use {name}__credential and service URIs")
            https_only = f.prop(props, "httpsOnly")
            if https_only is None or f.text(https_only) != "true":
                report("SITE_HARDENING", f, decl, "site must set httpsOnly: true")
            if f.string_value(f.prop(props, "siteConfig", "ftpsState")) != "Disabled":
                report("SITE_HARDENING", f, decl, "site must set siteConfig.ftpsState 'Disabled'")
            if f.string_value(f.prop(props, "siteConfig", "minTlsVersion")) != "1.2":
                report("SITE_HARDENING", f, decl, "site must set siteConfig.minTlsVersion '1.2'")
            if uses_kv_ref and f.prop(props, "keyVaultReferenceIdentity") is None:
                report("SITE_HARDENING", f, decl, "Key Vault references need keyVaultReferenceIdentity (the user-assigned identity)")
            runtime = f.prop(props, "functionAppConfig", "runtime")
            if f.string_value(f.prop(runtime, "name")) == "custom" and f.string_value(f.prop(runtime, "version")) == "1.0":
                custom_site = (f, decl)

        for decl, body, existing in f.resources("Microsoft.Web/serverfarms"):
            sku = f.prop(body, "sku")
            if f.string_value(f.prop(sku, "name")) == "FC1" and f.string_value(f.prop(sku, "tier")) == "FlexConsumption":
                flex_plan = (f, decl)

        # Key Vault and App Insights.
        for decl, body, existing in f.resources("Microsoft.KeyVault/vaults"):
            if existing:
                continue
            props = f.prop(body, "properties")
            for key in ("enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"):
                v = f.prop(props, key)
                if v is None or f.text(v) != "true":
                    report("KEYVAULT_MODE", f, decl, f"vault must set {key}: true")
        for decl, body, existing in f.resources("Microsoft.Insights/components"):
            if existing:
                continue
            v = f.prop(body, "properties", "DisableLocalAuth")
            if v is None or f.text(v) != "true":
                report("APPINSIGHTS_LOCAL_AUTH", f, decl, "Application Insights must set DisableLocalAuth: true")

        # Secrets never in outputs.
        for out in f.walk("output_declaration"):
            value = out.children[-1]
            used = f.identifiers(value) & f.secure_params
            if used:
                report("SECURE_OUTPUT", f, out, f"output uses @secure() parameter(s) {sorted(used)}")
            if LIST_CALL_RE.search(f.text(value)):
                report("SECURE_OUTPUT", f, out, "output calls a list*() function (keys/SAS)")
            prev = out.prev_sibling
            if prev is not None and prev.type == "decorators" and "@secure()" in f.text(prev).replace(" ", ""):
                report("SECURE_OUTPUT", f, out, "@secure() output (azd and deployment history still expose it to readers)")

        # Module wiring, and secure values only flow into secure module parameters.
        for mod in f.walk("module_declaration"):
            target = (f.path.parent / (f.string_value(mod.children[2]) or "")).resolve()
            params = f.prop(next(f.walk("object", mod), None), "params")
            if target not in files:
                report("MODULE_WIRING", f, mod, f"module file {f.string_value(mod.children[2])} not found")
                continue
            given = {f.text(p.children[0]) for p in (params.children if params else []) if p.type == "object_property"}
            for name in sorted(given - files[target].params):
                report("MODULE_WIRING", f, mod, f"parameter {name} is not declared in {target.name}")
            for name in sorted(files[target].required_params - given):
                report("MODULE_WIRING", f, mod, f"required parameter {name} of {target.name} is not given")
            symbol = f.text(mod.children[1])
            for ref in re.finditer(rf"\b{re.escape(symbol)}\.outputs\.(\w+)", f.src.decode()):
                if ref.group(1) not in files[target].outputs:
                    line = f.src.decode().count("\n", 0, ref.start()) + 1
                    findings.append(f"MODULE_WIRING {f.path}:{line}: {target.name} has no output {ref.group(1)}")
            if params is None:
                continue
            for p in params.children:
                if p.type != "object_property":
                    continue
                if f.identifiers(p.children[2]) & f.secure_params:
                    pname = f.text(p.children[0])
                    if pname not in files[target].secure_params:
                        report("SECURE_FLOW", f, p, f"@secure() value passed to non-secure parameter {pname} of {target.name}")

        # Graph extension and roles.
        graph_resources = [d for d, _, _ in f.resources("Microsoft.Graph/appRoleAssignedTo")] + \
                          [d for d, _, _ in f.resources("Microsoft.Graph/servicePrincipals")]
        if graph_resources:
            if not re.search(rb"^\s*extension\s+microsoftGraphV1\b", f.src, re.M):
                report("GRAPH_EXTENSION", f, graph_resources[0], "Microsoft.Graph resources need `extension microsoftGraphV1`")

    # Whole-directory rules.
    anchor = next(iter(files.values()), None)
    if anchor is None:
        return [f"NO_FILES {directory}: no .bicep files"]
    config = directory / "bicepconfig.json"
    try:
        ext = json.loads(config.read_text()).get("extensions", {}).get("microsoftGraphV1", "")
    except (OSError, ValueError):
        ext = ""
    if "microsoftgraph" not in ext:
        findings.append(f"GRAPH_EXTENSION {config}:1: bicepconfig.json must map extensions.microsoftGraphV1 to the Microsoft Graph extension")
    grant_files = [f for f in files.values() if any(True for _ in f.resources("Microsoft.Graph/appRoleAssignedTo"))]
    grant_text = b"\n".join(f.src for f in grant_files).decode()
    for role in GRAPH_ROLES:
        if f"'{role}'" not in grant_text:
            findings.append(f"GRAPH_ROLES {directory}: app role {role} is not granted by any Microsoft.Graph/appRoleAssignedTo file")
    for f in grant_files:
        for decl, body, _ in f.resources("Microsoft.Graph/appRoleAssignedTo"):
            role_id = f.prop(body, "appRoleId")
            if role_id is None or not re.match(r"filter\(\s*\w+\.appRoles\s*,", f.text(role_id)):
                report("GRAPH_ROLES", f, decl, "appRoleId must be looked up by name: filter(graphSp.appRoles, r => r.value == '...')[0].id")
    if flex_plan is None:
        findings.append(f"FLEX_PLAN {directory}: no Microsoft.Web/serverfarms with sku FC1 / FlexConsumption")
    if custom_site is None:
        findings.append(f"FLEX_PLAN {directory}: no Microsoft.Web/sites with functionAppConfig.runtime {{name: 'custom', version: '1.0'}}")
    return findings


def main(args) -> int:
    directory = Path(args[0])
    findings = check(directory)
    for line in findings:
        print(line)
    print(f"custom_checks: {len(findings)} finding(s) in {directory}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
