#!/usr/bin/env bash
# Deploy secmon without azd, with the Azure CLI only (it runs `az` and shell built-ins, nothing else;
# build the package first with scripts/package.sh).
#
#   scripts/deploy.sh ENV_NAME LOCATION [--infra-only | --code-only]
#
# 1. az deployment sub create: infra/main.bicep at subscription scope (resource group rg-ENV_NAME).
#    Optional environment: SECMON_TENANTS, SECMON_MAIL_SENDER, SECMON_POLL_SCHEDULE, SECMON_CLOSE,
#    SECMON_ALERT_EMAIL, SECMON_ALWAYS_READY (alwaysReadyWebhookInstances), SECMON_GRANT_GRAPH
#    (true|false: grant the Graph app roles in the same deployment; default true),
#    SECMON_BOT_APP_ID (botAppId: the Teams bot, docs/triage.md), SECMON_BOT_TENANT_ID (botTenantId),
#    SECMON_TRIAGE_AUTH_CLIENT_ID (triageAuthClientId: App Service Authentication for the triage page).
# 2. SECMON_TEAMS_WEBHOOK_URL and SECMON_BOT_APP_SECRET, if set, are written to Key Vault through stdin
#    (never on a command line): secrets teams-webhook-url and bot-app-secret.
# 3. az functionapp deployment source config-zip with dist/secmon.zip, to the edge and the worker app.
# Needs Azure CLI with Bicep >= 0.36.1 (az bicep upgrade) and, for the Graph app roles, a signed-in
# Privileged Role Administrator (see docs/deploy.md).
set -euo pipefail

if ! command -v az >/dev/null 2>&1; then
  echo "deploy: the Azure CLI (az) is not installed or not on PATH." >&2
  echo "deploy: install it (https://learn.microsoft.com/cli/azure/install-azure-cli), run 'az login', then re-run." >&2
  exit 1
fi

usage() { echo "usage: $0 ENV_NAME LOCATION [--infra-only | --code-only]" >&2; exit 2; }
[ $# -ge 2 ] || usage
ENV_NAME=$1
LOCATION=$2
MODE=${3:-all}
case "$MODE" in all|--infra-only|--code-only) ;; *) usage ;; esac

cd "$(dirname "$0")/.."
RG="rg-$ENV_NAME"
ZIP=dist/secmon.zip

if [ "$MODE" != --code-only ]; then
  PRINCIPAL_ID=$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)
  echo "deploy: provisioning $RG in $LOCATION (deployer principal: ${PRINCIPAL_ID:-none})"
  az deployment sub create \
    --name "secmon-$ENV_NAME" \
    --location "$LOCATION" \
    --template-file infra/main.bicep \
    --parameters \
      environmentName="$ENV_NAME" \
      location="$LOCATION" \
      principalId="${PRINCIPAL_ID}" \
      tenants="${SECMON_TENANTS:-}" \
      mailSender="${SECMON_MAIL_SENDER:-}" \
      pollSchedule="${SECMON_POLL_SCHEDULE:-0 */5 * * * *}" \
      close="${SECMON_CLOSE:-off}" \
      alertEmail="${SECMON_ALERT_EMAIL:-}" \
      alwaysReadyWebhookInstances="${SECMON_ALWAYS_READY:-0}" \
      grantGraphPermissions="${SECMON_GRANT_GRAPH:-true}" \
      botAppId="${SECMON_BOT_APP_ID:-}" \
      botTenantId="${SECMON_BOT_TENANT_ID:-}" \
      triageAuthClientId="${SECMON_TRIAGE_AUTH_CLIENT_ID:-}" \
    --output none

  # write_secret NAME CONTENT_TYPE VALUE: the value goes through stdin, never on a command line.
  write_secret() {
    VAULT=$(az keyvault list -g "$RG" --query '[0].name' -o tsv)
    echo "deploy: writing $1 to $VAULT (role assignments can take minutes to apply)"
    for attempt in 1 2 3 4 5 6; do
      if az keyvault secret set --vault-name "$VAULT" --name "$1" \
           --content-type "$2" --file /dev/stdin --output none \
           < <(printf '%s' "$3"); then
        return 0
      fi
      [ "$attempt" = 6 ] && { echo "deploy: could not write the secret; re-run later: $0 $ENV_NAME $LOCATION --infra-only" >&2; exit 1; }
      echo "deploy: retrying in 30 s"
      sleep 30
    done
  }
  if [ -n "${SECMON_TEAMS_WEBHOOK_URL:-}" ]; then
    write_secret teams-webhook-url text/uri-list "$SECMON_TEAMS_WEBHOOK_URL"
  fi
  if [ -n "${SECMON_BOT_APP_SECRET:-}" ]; then
    write_secret bot-app-secret text/plain "$SECMON_BOT_APP_SECRET"
  fi
fi

if [ "$MODE" != --infra-only ]; then
  [ -f "$ZIP" ] || { echo "deploy: $ZIP not found; run scripts/package.sh first" >&2; exit 1; }
  # One package, two apps: the edge (HTTP functions) and the worker (timers, queue); docs/deploy.md.
  for SERVICE in secmon-edge secmon-worker; do
    APP=$(az functionapp list -g "$RG" --query "[?tags.\"azd-service-name\"=='$SERVICE'].name | [0]" -o tsv)
    [ -n "$APP" ] || { echo "deploy: no function app tagged azd-service-name=$SERVICE in $RG; provision first" >&2; exit 1; }
    echo "deploy: uploading $ZIP to $APP ($SERVICE)"
    az functionapp deployment source config-zip -g "$RG" -n "$APP" --src "$ZIP" --output none
    if [ "$SERVICE" = secmon-edge ]; then EDGE_APP=$APP; fi
  done
  echo "deploy: done. Health: https://$(az functionapp show -g "$RG" -n "$EDGE_APP" --query defaultHostName -o tsv)/api/health"
fi
