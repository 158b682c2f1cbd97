#!/usr/bin/env python3
"""Negative test: custom_checks.py must flag every rule in fixtures/bad and nothing in a clean file.

Usage: test_custom_checks.py   (exit 1 on failure)
"""
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from custom_checks import check  # noqa: E402

# rule -> substrings that must each appear in one finding of that rule
EXPECTED = {
    "STORAGE_SHARED_KEY": ["allowSharedKeyAccess"],
    "STORAGE_PUBLIC_BLOB": ["allowBlobPublicAccess"],
    "STORAGE_TLS_HTTPS": ["TLS1_2"],
    "APPSETTING_SECRET": [
        "AzureWebJobsStorage: value contains 'AccountKey='",
        "AzureWebJobsStorage: connection string setting",
        "STATE_SAS: value contains 'sig='",
        "QUEUE_KEY: value calls a list*()",
        "SECMON_TEAMS_URL: value uses a @secure() parameter",
        "TICKETS_HMAC_KEY: looks secret but is not a Key Vault reference",
        "SECMON_OTHER: malformed Key Vault reference",
    ],
    "FLEX_PLAN": ["FUNCTIONS_WORKER_RUNTIME", "FC1", "runtime"],
    "SITE_HARDENING": ["httpsOnly", "ftpsState", "minTlsVersion", "keyVaultReferenceIdentity"],
    "KEYVAULT_MODE": ["enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"],
    "APPINSIGHTS_LOCAL_AUTH": ["DisableLocalAuth"],
    "SECURE_OUTPUT": ["teamsWebhookUrl", "list*()"],
    "SECURE_FLOW": ["non-secure parameter url"],
    "MODULE_WIRING": ["parameter typo is not declared", "required parameter url2", "has no output missing"],
    "GRAPH_EXTENSION": ["extension microsoftGraphV1", "bicepconfig.json"],
    "GRAPH_ROLES": ["SecurityAlert.ReadWrite.All", "Mail.Send", "filter(graphSp.appRoles"],
    # Least privilege (least-privilege.bicep, graph-edge.bicep, functions/).
    "STORAGE_ROLE_SCOPE": ["edgeAccount: Storage Blob Data Owner on storage (Microsoft.Storage/storageAccounts)",
                           "workerGroup: Storage Table Data Contributor on the resource group"],
    "EDGE_ROLES": ["edgeAudit: the edge identity holds a role on the audit container",
                   "edgeState: the edge identity may write all of secmon-state",
                   "edgeQueue: the edge identity holds Storage Queue Data Contributor",
                   "edgeVault: the edge identity holds a Key Vault role on the whole vault"],
    "EDGE_GRAPH": ["Graph app roles (graph-edge.bicep) granted to edgeprincipalid"],
    "AUDIT_IMMUTABLE": ["must come from a parameter", "allowProtectedAppendWrites must be true"],
    "DIAGNOSTICS": ["blobService (Microsoft.Storage/storageAccounts/blobServices)",
                    "queueService (Microsoft.Storage/storageAccounts/queueServices)",
                    "edgeApp (Microsoft.Web/sites)"],
    "APP_SPLIT": ["no `var functionsByRole", "not loaded through AzureFunctionsJobHost__functions__",
                  "functions served by both apps: ['tick']", "served by neither app: ['orphan']",
                  "tick (timerTrigger) is on the edge", "public (httpTrigger, authLevel anonymous) is on the worker"],
}
# Findings that must NOT appear on fixtures/bad: an .invalid placeholder is not a secret.
NOT_EXPECTED = [("least-privilege.bicep", "SECMON_TEAMS_URL: looks secret")]

# An audit container with no immutability policy at all, and one with a good policy.
AUDIT_BAD = """
resource c 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  name: 'secmon-audit'
}
"""
AUDIT_GOOD = """
param days int = 30
resource c 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  name: 'secmon-audit'
}
resource p 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = {
  parent: c
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: days
    allowProtectedAppendWrites: true
  }
}
"""


def main() -> int:
    findings = check(HERE / "fixtures" / "bad")
    missing = []
    for rule, needles in EXPECTED.items():
        mine = [f for f in findings if f.startswith(rule + " ")]
        for needle in needles:
            if not any(needle in f for f in mine):
                missing.append(f"{rule}: no finding mentions {needle!r}")
    for where, needle in NOT_EXPECTED:
        for f in findings:
            if where in f and needle in f:
                missing.append(f"false positive: {f}")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "audit.bicep").write_text(AUDIT_BAD)
        if not any("has no immutabilityPolicies" in f for f in check(Path(tmp))):
            missing.append("AUDIT_IMMUTABLE: an audit container without a policy is not flagged")
        Path(tmp, "audit.bicep").write_text(AUDIT_GOOD)
        extra = [f for f in check(Path(tmp)) if f.startswith("AUDIT_IMMUTABLE")]
        missing += [f"false positive: {f}" for f in extra]
    for m in missing:
        print("NOT FLAGGED", m)
    if missing:
        print("--- findings were:\n" + "\n".join(findings))

    # And a minimal clean storage account is not flagged by the storage rules.
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "ok.bicep").write_text(
            "resource s 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n"
            "  name: 'x'\n  properties: {\n    allowSharedKeyAccess: false\n    allowBlobPublicAccess: false\n"
            "    minimumTlsVersion: 'TLS1_2'\n    supportsHttpsTrafficOnly: true\n  }\n}\n")
        clean = [f for f in check(Path(tmp)) if f.startswith("STORAGE_")]
    for f in clean:
        print("FALSE POSITIVE", f)

    print(f"test_custom_checks: {len(findings)} findings on fixtures/bad, "
          f"{len(missing)} expected not flagged, {len(clean)} false positives")
    return 1 if missing or clean else 0


if __name__ == "__main__":
    sys.exit(main())
