#!/usr/bin/env python3
"""The triage deployment (docs/triage.md, "Setup") as the templates say it, checked offline.

Usage: test_triage_infra.py   (needs tree-sitter-bicep, as custom_checks.py; exit 1 on failure)

There is no Bicep CLI here, so the conditions and values that matter are *evaluated* from the tree-sitter
syntax tree by `Eval`, a small evaluator of the expressions these files use (literals, interpolated
strings, parameters with their defaults, variables, !, &&, ||, ==, !=, ?:, empty(), concat(), string(),
tenant(), member access). It raises on any expression it does not know, so a template change it cannot
follow fails this test instead of passing it unread. Checked:
  - the Azure Bot module is deployed only when botAppId is non-empty (the default is empty);
  - the bot: kind azurebot, location global, sku from a parameter (default F0, F0/S1 allowed),
    single-tenant, msaAppId / msaAppTenantId from the parameters, endpoint https://<edge host>/api/bot-messages
    with the edge app's host, the Microsoft Teams channel enabled;
  - the bot secret reaches Key Vault only (a @secure() parameter of the vault module, not of the apps),
    SECMON_BOT_SECRET on the worker is a Key Vault reference to it and on the edge a placeholder;
    no SECMON_BOT_* setting without a bot; no role for the edge on the bot secret;
  - authsettingsV2 only on the edge and only with triageAuthClientId; AllowAnonymous, Entra provider with
    that client id and the tenant's v2.0 issuer, no token store, HTTPS required; the edge's
    SECMON_TRIAGE_APP_SERVICE_AUTH=on exactly when it is there;
  - GroupMember.Read.All granted (to the worker) only with grantGroupMemberRead;
  - every new main.bicep parameter is documented in docs/triage.md and in the parameters file.
"""
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from custom_checks import File  # noqa: E402

INFRA = REPO / "infra"
TRIAGE_PARAMS = ["botAppId", "botAppSecret", "botTenantId", "botSku", "botDisplayName",
                 "triageAuthClientId", "triageAuthTenantId", "grantGroupMemberRead"]
BOT_ID = "0b7e6c1a-5d2f-4c3e-9a8b-7f6e5d4c3b2a"
TENANT = "11111111-2222-3333-4444-555555555555"

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


class Unknown(Exception):
    pass


class Eval:
    """Evaluates expressions of one Bicep file; names resolve to `given`, then variables, then parameter
    defaults. Unknown names and node types raise Unknown."""

    def __init__(self, f: File, given: dict):
        self.f, self.given = f, dict(given)
        self.vars = f.variables()
        self.defaults = {}
        for node in f.root.children:
            if node.type == "parameter_declaration" and any(c.type == "=" for c in node.children):
                self.defaults[f.text(node.children[1])] = node.children[-1]

    def name(self, name):
        if name in self.given:
            return self.given[name]
        if name in self.vars:
            return self.eval(self.vars[name])
        if name in self.defaults:
            return self.eval(self.defaults[name])
        raise Unknown(f"{self.f.path.name}: no value for {name}")

    def eval(self, n):
        f, t = self.f, n.type
        if t == "string":
            out = ""
            for c in n.children:
                if c.type == "string_content":
                    out += f.text(c)
                elif c.type == "interpolation":
                    out += str(self.eval(next(x for x in c.children if x.is_named)))
                elif c.type == "escape_sequence":
                    out += {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\$": "$"}.get(f.text(c), f.text(c))
            return out
        if t == "boolean":
            return f.text(n) == "true"
        if t == "number":
            return int(f.text(n))
        if t == "null":
            return None
        if t == "identifier":
            return self.name(f.text(n))
        if t == "parenthesized_expression":
            return self.eval(next(c for c in n.children if c.is_named))
        if t == "unary_expression" and f.text(n.children[0]) == "!":
            return not self.eval(n.children[1])
        if t == "binary_expression":
            op = f.text(n.children[1])
            a = self.eval(n.children[0])
            if op == "&&":
                return a and self.eval(n.children[2])
            if op == "||":
                return a or self.eval(n.children[2])
            b = self.eval(n.children[2])
            if op == "==":
                return a == b
            if op == "!=":
                return a != b
            raise Unknown(f"operator {op}")
        if t == "ternary_expression":
            parts = [c for c in n.children if c.is_named]
            return self.eval(parts[1]) if self.eval(parts[0]) else self.eval(parts[2])
        if t == "array":
            return [self.eval(c) for c in n.children if c.is_named and c.type != "comment"]
        if t == "object":
            out = {}
            for p in n.children:
                if p.type == "object_property":
                    k = p.children[0]
                    key = f.string_value(k) if k.type == "string" else f.text(k)
                    out[key] = self.eval(p.children[2])
            return out
        if t == "member_expression":
            base = self.eval(n.children[0])
            prop = f.text(n.children[2])
            if not isinstance(base, dict) or prop not in base:
                raise Unknown(f"{f.text(n)}")
            return base[prop]
        if t == "call_expression":
            fn = f.text(n.children[0])
            args = [self.eval(c) for c in n.children[1].children if c.is_named]
            if fn == "empty":
                return args[0] in ("", [], {}, None)
            if fn == "concat":
                return [x for a in args for x in a] if all(isinstance(a, list) for a in args) else "".join(map(str, args))
            if fn == "string":
                return str(args[0])
            if fn == "tenant":
                return {"tenantId": TENANT}
            raise Unknown(f"function {fn}()")
        raise Unknown(f"{self.f.path.name}:{n.start_point[0] + 1}: node {t}: {f.text(n)[:60]}")


def declaration(f: File, kind: str, symbol: str):
    for node in f.walk(kind):
        if f.text(node.children[1]) == symbol:
            return node
    raise AssertionError(f"{f.path.name}: no {kind} {symbol}")


def condition(f: File, decl):
    """The `if (...)` expression of a declaration, or None when it is unconditional."""
    ifs = next((c for c in decl.children if c.type == "if_statement"), None)
    return None if ifs is None else next(c for c in ifs.children if c.type == "parenthesized_expression")


def body(decl):
    ifs = next((c for c in decl.children if c.type == "if_statement"), None)
    return next(c for c in (ifs or decl).children if c.type == "object")


def test_main():
    f = File(INFRA / "main.bicep")
    mod = declaration(f, "module_declaration", "bot")
    check(f.string_value(mod.children[2]) == "app/bot.bicep", "module bot is not app/bot.bicep")
    cond = condition(f, mod)
    check(cond is not None, "the bot module is unconditional")
    if cond is not None:
        check(Eval(f, {}).eval(cond) is False, "the bot is deployed without botAppId (its default)")
        check(Eval(f, {"botAppId": BOT_ID}).eval(cond) is True, "the bot is not deployed with botAppId set")
    params = f.prop(body(mod), "params")
    check(f.text(f.prop(params, "edgeHostName")) == "edgeApp.outputs.defaultHostName",
          "the bot's endpoint host is not the edge app's host name")
    check(f.text(f.prop(params, "botAppId")) == "botAppId", "the bot module is not given botAppId")
    ev = Eval(f, {"botAppId": BOT_ID})
    check(ev.eval(f.prop(params, "botTenantId")) == TENANT, "msaAppTenantId is not the deployment tenant by default")
    check(Eval(f, {"botTenantId": "t2"}).eval(f.prop(params, "botTenantId")) == "t2", "botTenantId is not passed on")
    check(ev.eval(f.prop(params, "sku")) == "F0", "the bot's sku is not F0 by default")

    # GroupMember.Read.All (triage.allowed.groups) only when asked for, and to the worker (EDGE_GRAPH).
    grants = f.prop(body(declaration(f, "module_declaration", "graphPermissions")), "params")
    roles = f.prop(grants, "appRoleNames")
    check(roles is not None and Eval(f, {}).eval(roles) == ["SecurityAlert.ReadWrite.All", "Mail.Send"],
          "the default Graph app roles are not exactly SecurityAlert.ReadWrite.All and Mail.Send")
    if roles is not None:
        check("GroupMember.Read.All" in Eval(f, {"grantGroupMemberRead": True}).eval(roles),
              "grantGroupMemberRead does not grant GroupMember.Read.All")

    # The secret: a @secure() parameter that goes to the vault module only.
    check("botAppSecret" in f.secure_params, "botAppSecret is not @secure()")
    for m in f.walk("module_declaration"):
        p = f.prop(body(m), "params")
        uses = [f.text(x.children[0]) for x in (p.children if p else []) if x.type == "object_property"
                and "botAppSecret" in f.identifiers(x.children[2])]
        target = f.string_value(m.children[2])
        if target == "core/keyvault.bicep":
            check(uses == ["botAppSecret"], "the vault module is not given botAppSecret")
        else:
            check(not uses, f"botAppSecret is given to {target} ({uses})")
    for app in ("edgeApp", "workerApp"):
        p = f.prop(body(declaration(f, "module_declaration", app)), "params")
        for name in ("botAppId", "botTenantId", "botSecretName", "triageAuthClientId", "triageAuthTenantId"):
            check(f.prop(p, name) is not None, f"{app} is not given {name}")

    # Documented, and in the parameters file azd uses.
    triage_doc = (REPO / "docs" / "triage.md").read_text()
    deploy_doc = (REPO / "docs" / "deploy.md").read_text()
    params_file = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name in TRIAGE_PARAMS:
        check(name in f.params, f"main.bicep has no parameter {name}")
        check(f"`{name}`" in triage_doc, f"docs/triage.md does not document `{name}`")
    check("docs/triage.md" in deploy_doc or "triage.md" in deploy_doc, "docs/deploy.md does not point to docs/triage.md")
    for name in ("botAppId", "botAppSecret", "triageAuthClientId"):
        check(name in params_file, f"main.parameters.json does not map {name}")


def test_bot():
    f = File(INFRA / "app" / "bot.bicep")
    given = {"name": "bot-x", "botAppId": BOT_ID, "botTenantId": TENANT, "edgeHostName": "edge.example.net",
             "tags": {}}
    ev = Eval(f, given)
    bot = declaration(f, "resource_declaration", "bot")
    check(f.string_value(bot.children[2]).startswith("Microsoft.BotService/botServices@"), "bot is not a botServices")
    check(condition(f, bot) is None, "the bot resource has its own condition (main.bicep decides)")
    b = ev.eval(body(bot))
    check(b.get("kind") == "azurebot", f"kind {b.get('kind')}")
    check(b.get("location") == "global", f"location {b.get('location')}")
    check(b.get("sku") == {"name": "F0"}, f"sku {b.get('sku')} (default F0)")
    check(Eval(f, {**given, "sku": "S1"}).eval(body(bot))["sku"] == {"name": "S1"}, "sku is not the parameter")
    props = b.get("properties", {})
    check(props.get("msaAppType") == "SingleTenant", f"msaAppType {props.get('msaAppType')}")
    check(props.get("msaAppId") == BOT_ID, "msaAppId is not botAppId")
    check(props.get("msaAppTenantId") == TENANT, "msaAppTenantId is not botTenantId")
    check(props.get("endpoint") == "https://edge.example.net/api/bot-messages", f"endpoint {props.get('endpoint')}")
    check(not any(k.lower().startswith(("appPassword".lower(), "msaAppMSI".lower())) for k in props),
          "the bot resource names a password or an identity")
    sku_param = next(n for n in f.root.children if n.type == "parameter_declaration" and f.text(n.children[1]) == "sku")
    allowed = f.text(sku_param.prev_sibling) if sku_param.prev_sibling is not None else ""
    check("'F0'" in allowed and "'S1'" in allowed, "sku is not @allowed F0/S1")

    teams = declaration(f, "resource_declaration", "teams")
    check(f.string_value(teams.children[2]).startswith("Microsoft.BotService/botServices/channels@"), "no channels resource")
    t = Eval(f, {**given, "bot": "<bot>"}).eval(body(teams))
    check(f.text(f.prop(body(teams), "parent")) == "bot", "the Teams channel's parent is not the bot")
    check(t.get("name") == "MsTeamsChannel", f"channel name {t.get('name')}")
    check(t.get("properties", {}).get("channelName") == "MsTeamsChannel", "channelName is not MsTeamsChannel")
    check(t.get("properties", {}).get("properties", {}).get("isEnabled") is True, "the Teams channel is not enabled")


def settings(role: str, **given):
    """name -> value of the app settings function.bicep gives an app of `role`."""
    f = File(INFRA / "app" / "function.bicep")
    base = {p: f"<{p}>" for p in f.params}
    base.update({"role": role, "botAppId": "", "botTenantId": "", "botSecretName": "bot-app-secret",
                 "keyVaultName": "kv-x", "auditRetentionDays": 400,
                 # The AzureFunctionsJobHost__functions__<i> list is a [for] loop; APP_SPLIT checks it.
                 "hostFunctionSettings": []})
    base.update(given)
    items = Eval(f, base).name("appSettings")
    names = [i["name"] for i in items]
    check(len(names) == len(set(names)), f"{role}: settings given twice: {sorted(n for n in names if names.count(n) > 1)}")
    return {i["name"]: i["value"] for i in items}


def test_settings():
    for role in ("edge", "worker"):
        plain = settings(role)
        check(not [n for n in plain if n.startswith("SECMON_BOT_")], f"{role}: SECMON_BOT_* settings without a bot")
    worker = settings("worker", botAppId=BOT_ID, botTenantId=TENANT)
    edge = settings("edge", botAppId=BOT_ID, botTenantId=TENANT)
    for role, s in (("worker", worker), ("edge", edge)):
        check(s.get("SECMON_BOT_APP_ID") == BOT_ID, f"{role}: SECMON_BOT_APP_ID is not the bot's app id")
        check(s.get("SECMON_BOT_TENANT_ID") == TENANT, f"{role}: SECMON_BOT_TENANT_ID is not the bot's tenant")
    check(worker.get("SECMON_BOT_SECRET") == "@Microsoft.KeyVault(VaultName=kv-x;SecretName=bot-app-secret)",
          f"worker: SECMON_BOT_SECRET is {worker.get('SECMON_BOT_SECRET')!r}, not the Key Vault reference")
    secret = edge.get("SECMON_BOT_SECRET", "")
    check(re.match(r"^https://[a-z0-9.-]+\.invalid(/.*)?$", secret) is not None,
          f"edge: SECMON_BOT_SECRET is {secret!r}, not an .invalid placeholder")
    f = File(INFRA / "app" / "function.bicep")
    check(not f.secure_params, f"function.bicep takes secrets as parameters: {sorted(f.secure_params)}")

    # No role for the edge identity on the bot secret (nor on the vault: custom_checks EDGE_ROLES).
    for path in sorted(INFRA.rglob("*.bicep")):
        g = File(path)
        for decl, b, _ in g.resources("Microsoft.Authorization/roleAssignments"):
            principal = g.text(g.prop(g.prop(b, "properties"), "principalId") or decl)
            scope = g.text(g.prop(b, "scope")) if g.prop(b, "scope") is not None else ""
            check(not ("edge" in principal.lower() and "bot" in scope.lower()),
                  f"{path.name}: {g.text(decl.children[1])} gives the edge a role on {scope}")
    kv = File(INFRA / "core" / "keyvault.bicep")
    secret_decl = declaration(kv, "resource_declaration", "botSecret")
    check("botAppSecret" in kv.secure_params, "keyvault.bicep: botAppSecret is not @secure()")
    ev = Eval(kv, {"name": "kv", "location": "x", "logAnalyticsWorkspaceId": "w"})
    check(ev.eval(condition(kv, secret_decl)) is False, "the bot secret is written (emptied) without a value")
    check(Eval(kv, {"botAppSecret": "s"}).eval(condition(kv, secret_decl)) is True, "the bot secret is not written")
    check(ev.eval(kv.prop(body(secret_decl), "name")) == "bot-app-secret", "the bot secret is not named bot-app-secret")


def test_auth():
    f = File(INFRA / "app" / "function.bicep")
    auth = declaration(f, "resource_declaration", "auth")
    check(f.string_value(auth.children[2]).startswith("Microsoft.Web/sites/config@"), "auth is not a sites/config")
    check(f.text(f.prop(body(auth), "parent")) == "app", "authsettingsV2 is not on the app")
    cond = condition(f, auth)
    for role, client, want in (("edge", "", False), ("edge", "c1", True), ("worker", "c1", False), ("worker", "", False)):
        got = Eval(f, {"role": role, "triageAuthClientId": client}).eval(cond) if cond is not None else True
        check(got is want, f"authsettingsV2 on the {role} with triageAuthClientId {client!r}: {got}, expected {want}")
    for role, client, want in (("edge", "", None), ("edge", "c1", "on"), ("worker", "c1", None)):
        got = settings(role, triageAuthClientId=client).get("SECMON_TRIAGE_APP_SERVICE_AUTH")
        check(got == want, f"{role} with triageAuthClientId {client!r}: SECMON_TRIAGE_APP_SERVICE_AUTH {got!r}, "
              f"expected {want!r} (X-MS-* headers are trustworthy only where the module is on)")
    a = Eval(f, {"app": "<app>", "triageAuthClientId": "c1", "triageAuthTenantId": TENANT}).eval(body(auth))
    check(a.get("name") == "authsettingsV2", f"name {a.get('name')}")
    p = a.get("properties", {})
    check(p.get("platform", {}).get("enabled") is True, "platform.enabled is not true")
    gv = p.get("globalValidation", {})
    check(gv.get("unauthenticatedClientAction") == "AllowAnonymous",
          f"unauthenticatedClientAction {gv.get('unauthenticatedClientAction')}: the webhook, doorbell, health and "
          "bot-messages routes must stay reachable without an Entra session")
    check(gv.get("requireAuthentication") is False, "requireAuthentication must be false")
    check(p.get("httpSettings", {}).get("requireHttps") is True, "requireHttps is not true")
    aad = p.get("identityProviders", {}).get("azureActiveDirectory", {})
    check(aad.get("enabled") is True, "the Entra provider is not enabled")
    reg = aad.get("registration", {})
    check(reg.get("clientId") == "c1", "registration.clientId is not triageAuthClientId")
    check(reg.get("openIdIssuer") == f"https://login.microsoftonline.com/{TENANT}/v2.0", f"openIdIssuer {reg.get('openIdIssuer')}")
    check("c1" in aad.get("validation", {}).get("allowedAudiences", []), "allowedAudiences lacks the client id")
    check(p.get("login", {}).get("tokenStore", {}).get("enabled") is False, "the token store is on (needs a SAS URL)")
    others = set(p.get("identityProviders", {})) - {"azureActiveDirectory"}
    check(not others, f"other identity providers configured: {sorted(others)}")


def test_bot_route():
    """When the bot-messages function exists, its route is the bot's endpoint and the edge serves it."""
    fj = REPO / "functions" / "bot-messages" / "function.json"
    if not fj.exists():
        print("test_triage_infra: functions/bot-messages not here yet; its route is not checked")
        return
    trigger = next(b for b in json.loads(fj.read_text())["bindings"] if b.get("type") == "httpTrigger")
    check(trigger.get("route", "bot-messages") == "bot-messages", f"bot-messages route {trigger.get('route')}")
    f = File(INFRA / "app" / "function.bicep")
    edge = Eval(f, {}).eval(f.prop(f.variables()["functionsByRole"], "edge"))
    check("bot-messages" in edge, "the edge app does not serve bot-messages")


def main() -> int:
    for test in (test_main, test_bot, test_settings, test_auth, test_bot_route):
        try:
            test()
        except (Unknown, AssertionError, StopIteration, KeyError, TypeError) as e:
            failures.append(f"{test.__name__}: {type(e).__name__}: {e}")
    for f in failures:
        print("test_triage_infra: FAIL", f)
    print(f"test_triage_infra: {len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
