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
  APPSETTING_SECRET     app setting value (an appSettings array item, or a {name, value} object in a
                        variable when appSettings is an expression) with a key/SAS marker, a list*() call, a @secure() parameter,
                        a keyed connection-string setting (AzureWebJobsStorage=...),
                        or a secret-looking name whose value is not a Key Vault reference (nor a
                        literal https://....invalid placeholder)
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
Least privilege (docs/deploy.md, "Identities"). The edge identity is the one whose principal id
expression names "edge" (edgePrincipalId, edgeIdentity.outputs.principalId); the worker's names "worker".
  STORAGE_ROLE_SCOPE    a storage data role (blob, queue, table) assigned on the account, a service, the
                        resource group or anything but a container or a queue resource
  EDGE_ROLES            the edge identity holds a role on the audit container, a queue role other than
                        Queue Data Message Sender, a role on the whole Key Vault (one secret is
                        allowed), or a blob role on secmon-state
                        without an ABAC condition
  EDGE_GRAPH            a Graph app role granted to the edge identity (a module granting app roles is
                        given a principalId that names "edge", or does not name "worker")
  AUDIT_IMMUTABLE       the secmon-audit container without an immutabilityPolicies child whose
                        retention is a parameter and that allows protected append writes
  DIAGNOSTICS           a function app, Key Vault, blob service or queue service without a
                        Microsoft.Insights/diagnosticSettings scoped to it that sends to a workspace
  APP_SPLIT             a function app file without `functionsByRole` {edge, worker} loaded through the
                        AzureFunctionsJobHost__functions__<i> settings, or lists that overlap, miss a
                        function folder, or put a non-HTTP function on the edge / an anonymous HTTP one
                        on the worker (an HTTP function there, such as the doctor, needs a function key)
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
# A literal https URL on the reserved .invalid TLD (RFC 2606) cannot be a secret: the edge app's
# placeholder for a setting the config names but only the worker may hold.
PLACEHOLDER_RE = re.compile(r"^'https://[a-z0-9.-]+\.invalid(/[^'$]*)?'$")
# Built-in storage data roles (blob, queue, table).
STORAGE_DATA_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "19e7f393-937e-4f77-808e-94535e297925": "Storage Queue Data Reader",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "8a0f0c08-91a1-4084-bc3d-661d67233fed": "Storage Queue Data Message Processor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "76199698-9eea-4c19-bc75-cec21354c6b6": "Storage Table Data Reader",
}
QUEUE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
SCOPED_TYPES = ("Microsoft.Storage/storageAccounts/blobServices/containers",
                "Microsoft.Storage/storageAccounts/queueServices/queues",
                "Microsoft.Storage/storageAccounts/tableServices/tables")
# Resources that must send their logs to Log Analytics.
DIAGNOSED_TYPES = ("Microsoft.Web/sites", "Microsoft.KeyVault/vaults",
                   "Microsoft.Storage/storageAccounts/blobServices", "Microsoft.Storage/storageAccounts/queueServices")
AUDIT_CONTAINER = "secmon-audit"
STATE_CONTAINER = "secmon-state"


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

    def symbols(self):
        """symbol -> (type without api version, declaration, body, existing?) of every resource."""
        out = {}
        for decl in self.walk("resource_declaration"):
            rtype = self.string_value(decl.children[2])
            body = next(self.walk("object", decl), None)
            out[self.text(decl.children[1])] = ((rtype or "").split("@")[0], decl, body,
                                                 any(c.type == "existing" for c in decl.children))
        return out

    def variables(self):
        """name -> value node of every top-level `var`."""
        return {self.text(n.children[1]): n.children[-1] for n in self.root.children if n.type == "variable_declaration"}

    def setting_items(self, settings):
        """The app settings objects: the array's items, or, when appSettings is an expression (concat of
        variables), every {name, value} object in the file's variables."""
        if settings is not None and settings.type == "array":
            return [c for c in settings.children if c.type == "object"]
        items = []
        for value in self.variables().values():
            for obj in self.walk("object", value):
                if self.prop(obj, "name") is not None and self.prop(obj, "value") is not None:
                    items.append(obj)
        return items

    def role_guid(self, node):
        """The role definition GUID a roleDefinitionId expression names (a literal or roles.<name>)."""
        text = self.text(node) if node is not None else ""
        m = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text)
        if m:
            return m.group(0)
        m = re.search(r"\b(\w+)\.(\w+)\b", text.split(",")[-1])
        if m and m.group(1) in self.variables():
            return self.string_value(self.prop(self.variables()[m.group(1)], m.group(2)))
        return None


def function_bindings(functions_dir: Path):
    """function folder name -> its bindings, from <dir>/<name>/function.json (empty when unreadable)."""
    out = {}
    for fj in sorted(functions_dir.glob("*/function.json")) if functions_dir.is_dir() else []:
        try:
            out[fj.parent.name] = json.loads(fj.read_text()).get("bindings", [])
        except (OSError, ValueError):
            out[fj.parent.name] = []
    return out


def function_auth_levels(functions_dir: Path):
    """function folder name -> the authLevel of its httpTrigger (None for other triggers)."""
    return {name: next((b.get("authLevel") for b in bindings if b.get("type") == "httpTrigger"), None)
            for name, bindings in function_bindings(functions_dir).items()}


def function_triggers(functions_dir: Path):
    """function folder name -> trigger type, from <dir>/<name>/function.json."""
    return {name: next((b.get("type") for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
            for name, bindings in function_bindings(functions_dir).items()}


def split_findings(f, functions_dir, report):
    """APP_SPLIT for one file holding a function app."""
    anchor = next(d for d, _, e in f.resources("Microsoft.Web/sites") if not e)
    by_role = f.variables().get("functionsByRole")
    if by_role is None or by_role.type != "object":
        report("APP_SPLIT", f, anchor, "no `var functionsByRole = {edge: [...], worker: [...]}`: which functions "
               "each app serves is not declared")
        return
    if not re.search(r"AzureFunctionsJobHost__functions__", f.src.decode()) or "functionsByRole[role]" not in f.src.decode():
        report("APP_SPLIT", f, anchor, "functionsByRole[role] is not loaded through AzureFunctionsJobHost__functions__<i> settings")
    lists = {}
    for role in ("edge", "worker"):
        node = f.prop(by_role, role)
        lists[role] = [f.string_value(c) for c in (node.children if node is not None else []) if c.type == "string"]
        if node is None:
            report("APP_SPLIT", f, anchor, f"functionsByRole has no {role} list")
    both = sorted(set(lists["edge"]) & set(lists["worker"]))
    if both:
        report("APP_SPLIT", f, anchor, f"functions served by both apps: {both}")
    triggers = function_triggers(functions_dir)
    if not triggers:
        return
    missing = sorted(set(triggers) - set(lists["edge"]) - set(lists["worker"]))
    if missing:
        report("APP_SPLIT", f, anchor, f"function folders served by neither app: {missing}")
    unknown = sorted((set(lists["edge"]) | set(lists["worker"])) - set(triggers))
    if unknown:
        report("APP_SPLIT", f, anchor, f"functionsByRole names functions without a folder: {unknown}")
    for name in lists["edge"]:
        if name in triggers and triggers[name] != "httpTrigger":
            report("APP_SPLIT", f, anchor, f"{name} ({triggers[name]}) is on the edge; the edge serves HTTP functions only")
    # An HTTP function on the worker (the doctor, which must check the worker's own Graph roles) must need
    # a function key: the worker's anonymous surface stays empty.
    levels = function_auth_levels(functions_dir)
    for name in lists["worker"]:
        if triggers.get(name) == "httpTrigger" and levels.get(name) not in ("function", "admin"):
            report("APP_SPLIT", f, anchor, f"{name} (httpTrigger, authLevel {levels.get(name)}) is on the worker; "
                   "anonymous functions belong on the edge, and one on the worker needs a function key")


def check(directory: Path, functions_dir: Path = None):
    findings = []
    if functions_dir is None:
        functions_dir = directory / "functions" if (directory / "functions").is_dir() else directory.parent / "functions"

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
            for item in f.setting_items(settings):
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
                if SECRET_NAME_RE.search(name) and not is_kv_ref and not PLACEHOLDER_RE.match(vtext):
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

        # Least privilege: role scopes, the edge identity, immutability, diagnostics, the app split.
        symbols = f.symbols()
        for decl, body, existing in f.resources("Microsoft.Authorization/roleAssignments"):
            props = f.prop(body, "properties")
            guid = f.role_guid(f.prop(props, "roleDefinitionId"))
            principal = f.text(f.prop(props, "principalId")) if f.prop(props, "principalId") is not None else ""
            scope_node = f.prop(body, "scope")
            scope_sym = f.text(scope_node) if scope_node is not None else None
            scope_type, _, scope_body, _ = symbols.get(scope_sym, ("", None, None, False))
            scope_name = f.string_value(f.prop(scope_body, "name")) if scope_body is not None else None
            shown = f"{scope_sym} ({scope_type or 'not a resource of this file'})" if scope_sym else "the resource group"
            symbol = f.text(decl.children[1])
            if guid in STORAGE_DATA_ROLES and scope_type not in SCOPED_TYPES:
                report("STORAGE_ROLE_SCOPE", f, decl, f"{symbol}: {STORAGE_DATA_ROLES[guid]} on {shown}; "
                       "scope it to the container or queue the identity needs")
            if "edge" not in principal.lower():
                continue
            if scope_name == AUDIT_CONTAINER:
                report("EDGE_ROLES", f, decl, f"{symbol}: the edge identity holds a role on the audit container")
            if scope_type == "Microsoft.KeyVault/vaults":
                # A role on one secret (Microsoft.KeyVault/vaults/secrets), e.g. the doorbell key, is allowed.
                report("EDGE_ROLES", f, decl, f"{symbol}: the edge identity holds a Key Vault role on the whole vault")
            if guid in STORAGE_DATA_ROLES and "Queue" in STORAGE_DATA_ROLES[guid] and guid != QUEUE_SENDER:
                report("EDGE_ROLES", f, decl, f"{symbol}: the edge identity holds {STORAGE_DATA_ROLES[guid]}; "
                       "it may only send (Storage Queue Data Message Sender)")
            if scope_name == STATE_CONTAINER and "Blob" in STORAGE_DATA_ROLES.get(guid, "") \
                    and "Reader" not in STORAGE_DATA_ROLES[guid] and f.prop(props, "condition") is None:
                report("EDGE_ROLES", f, decl, f"{symbol}: the edge identity may write all of {STATE_CONTAINER}; "
                       "limit it with an ABAC condition to the paths it writes")

        for sym, (rtype, decl, body, existing) in symbols.items():
            if rtype == "Microsoft.Storage/storageAccounts/blobServices/containers" and not existing \
                    and f.string_value(f.prop(body, "name")) == AUDIT_CONTAINER:
                policies = [(d, b) for t, d, b, _ in symbols.values()
                            if t == rtype + "/immutabilityPolicies" and f.text(f.prop(b, "parent") or d) == sym]
                if not policies:
                    report("AUDIT_IMMUTABLE", f, decl, f"{AUDIT_CONTAINER} container has no immutabilityPolicies "
                           "(time-based retention)")
                for d, b in policies:
                    days = f.prop(b, "properties", "immutabilityPeriodSinceCreationInDays")
                    if days is None or not (f.identifiers(days) & f.params):
                        report("AUDIT_IMMUTABLE", f, d, "immutabilityPeriodSinceCreationInDays must come from a "
                               "parameter (the retention is the operator's decision)")
                    append = f.prop(b, "properties", "allowProtectedAppendWrites")
                    if append is None or f.text(append) != "true":
                        report("AUDIT_IMMUTABLE", f, d, "allowProtectedAppendWrites must be true: the audit "
                               "streams are append blobs")
            if rtype in DIAGNOSED_TYPES and not existing:
                sent = False
                for t, d, b, _ in symbols.values():
                    scope = f.prop(b, "scope")
                    if t == "Microsoft.Insights/diagnosticSettings" and scope is not None and f.text(scope) == sym \
                            and f.prop(b, "properties", "workspaceId") is not None:
                        sent = True
                if not sent:
                    report("DIAGNOSTICS", f, decl, f"{sym} ({rtype}) has no diagnosticSettings sending to a "
                           "Log Analytics workspace")

        if any(not e for _, _, e in f.resources("Microsoft.Web/sites")):
            split_findings(f, functions_dir, report)

        # Graph app roles go to the worker only.
        for mod in f.walk("module_declaration"):
            target = (f.path.parent / (f.string_value(mod.children[2]) or "")).resolve()
            if target not in files or not any(True for _ in files[target].resources("Microsoft.Graph/appRoleAssignedTo")):
                continue
            given = f.prop(f.prop(next(f.walk("object", mod), None), "params"), "principalId")
            text = f.text(given).lower() if given is not None else ""
            if "edge" in text or "worker" not in text:
                report("EDGE_GRAPH", f, mod, f"Graph app roles ({target.name}) granted to {text or 'no principal'}; "
                       "only the worker identity may hold them")

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
