// secmon: Azure deployment (subscription scope, for `azd up` or scripts/deploy.sh).
// Creates one resource group holding everything; see docs/deploy.md for the resource table.
targetScope = 'subscription'

// ---- azd environment -------------------------------------------------------------------------
@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds resource names.')
param environmentName string

@minLength(1)
@description('Azure region for all resources (must offer Flex Consumption).')
param location string

@description('Object id of the deploying user or service principal (azd: AZURE_PRINCIPAL_ID). Gets Key Vault Secrets Officer to manage the Teams secret. Empty = none.')
param principalId string = ''

// ---- secmon settings -------------------------------------------------------------------------
@description('NCRONTAB schedule (6 fields, UTC) of the poll-alerts timer: app setting SECMON_POLL_SCHEDULE.')
param pollSchedule string = '0 */5 * * * *'

@description('NCRONTAB schedule (6 fields, UTC) of the reconcile-alerts timer: app setting SECMON_RECONCILE_SCHEDULE (keep it equal to poll.reconcile.schedule).')
param reconcileSchedule string = '0 17 */6 * * *'

@description('NCRONTAB schedule (6 fields, UTC) of the sweep timer (retention): app setting SECMON_SWEEP_SCHEDULE (keep it equal to retention.schedule).')
param sweepSchedule string = '0 37 * * * *'

@description('Comma-separated tenant ids to poll (SECMON_TENANTS). Empty = the deployment tenant.')
param tenants string = ''

@description('Mailbox secmon sends mail as (SECMON_MAIL_SENDER). Scope Mail.Send to it, see docs/deploy.md.')
param mailSender string = ''

@allowed([
  'on'
  'off'
])
@description('SECMON_CLOSE: off (default) keeps every rule in shadow mode; on lets rules close alerts.')
param close string = 'off'

@description('Path of the YAML config inside the package (SECMON_CONFIG).')
param configPath string = 'secmon.yaml'

@secure()
@description('Teams Workflows webhook URL, stored in Key Vault as teams-webhook-url. Empty = keep the current secret.')
param teamsWebhookUrl string = ''

@description('Grant the Graph app roles (SecurityAlert.ReadWrite.All, Mail.Send) to the worker identity (never the edge). Needs a Privileged Role Administrator deployer; false = an admin grants them separately (docs/deploy.md).')
param grantGraphPermissions bool = true

@minValue(1)
@maxValue(146000)
@description('Days each audit record is immutable (time-based retention on the secmon-audit container).')
param auditRetentionDays int = 400

// ---- triage from Teams and the triage page (docs/triage.md, "Setup") -------------------------
@description('Application (client) id of the Teams bot\'s single-tenant app registration (Microsoft App ID). Non-empty = deploy the Azure Bot (messaging endpoint https://<edge app>/api/bot-messages, Teams channel) and set SECMON_BOT_APP_ID / SECMON_BOT_TENANT_ID on both apps and SECMON_BOT_SECRET on the worker. Empty (default) = no bot.')
param botAppId string = ''

@secure()
@description('Client secret of that app registration, stored in Key Vault as bot-app-secret (the worker\'s SECMON_BOT_SECRET references it; the edge never holds it). Empty = keep the current secret.')
param botAppSecret string = ''

@description('Entra tenant id of the bot\'s app registration (msaAppTenantId, SECMON_BOT_TENANT_ID). Empty = the deployment tenant.')
param botTenantId string = ''

@allowed([
  'F0'
  'S1'
])
@description('Azure Bot pricing tier (F0: free; messages on standard channels such as Teams are not metered).')
param botSku string = 'F0'

@description('Display name of the Azure Bot resource (Teams shows the name in the Teams app manifest, scripts/teams-app.py --name).')
param botDisplayName string = 'secmon'

@description('Client id of the triage page\'s app registration. Non-empty = App Service Authentication (Entra ID, unauthenticated requests allowed) on the edge app for the /api/triage/... page. Empty (default) = none.')
param triageAuthClientId string = ''

@description('Entra tenant of the triage page\'s app registration, where people sign in. Empty = the deployment tenant.')
param triageAuthTenantId string = ''

@description('Also grant the worker identity the Graph app role GroupMember.Read.All, which triage.allowed.groups needs (checkMemberGroups). Only with grantGraphPermissions.')
param grantGroupMemberRead bool = false

// ---- scale -----------------------------------------------------------------------------------
@minValue(0)
@maxValue(20)
@description('Always-ready instances for the HTTP functions (graph-webhook must answer Graph within 3 s). 0 = scale to zero.')
param alwaysReadyWebhookInstances int = 0

@minValue(40)
@maxValue(1000)
@description('Flex Consumption maximum instance count.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Flex Consumption instance memory (MB).')
param instanceMemoryMB int = 512

// ---- monitoring ------------------------------------------------------------------------------
@allowed([
  15
  30
  45
  60
  120
  180
  240
  300
  360
  1440
])
@description('Minutes without a "poll succeeded" trace before the silence alert fires.')
param noPollAlertMinutes int = 30

@description('E-mail notified by the silence alert. Empty = no action group.')
param alertEmail string = ''

// ---- names ----------------------------------------------------------------------------------
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
// Two apps from one package (docs/deploy.md, "Identities"): the edge serves the internet-facing
// HTTP functions, the worker the timers and the queue trigger. Flex deploys each from its own container.
var edgeAppName = 'func-secmon-edge-${resourceToken}'
var workerAppName = 'func-secmon-worker-${resourceToken}'
var edgeHostId = 'secmon-edge-${resourceToken}'
var workerHostId = 'secmon-worker-${resourceToken}'
var edgeDeploymentContainerName = 'app-package-edge-${resourceToken}'
var workerDeploymentContainerName = 'app-package-worker-${resourceToken}'
var teamsSecretName = 'teams-webhook-url'
var botSecretName = 'bot-app-secret'
var botTenant = empty(botTenantId) ? tenant().tenantId : botTenantId
var triageAuthTenant = empty(triageAuthTenantId) ? tenant().tenantId : triageAuthTenantId

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module edgeIdentity 'core/identity.bicep' = {
  name: 'identity-edge'
  scope: rg
  params: {
    name: 'id-secmon-edge-${resourceToken}'
    location: location
    tags: tags
  }
}

module workerIdentity 'core/identity.bicep' = {
  name: 'identity-worker'
  scope: rg
  params: {
    name: 'id-secmon-worker-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitor 'core/monitor.bicep' = {
  name: 'monitor'
  scope: rg
  params: {
    logAnalyticsName: 'log-secmon-${resourceToken}'
    appInsightsName: 'appi-secmon-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stsecmon${resourceToken}'
    location: location
    tags: tags
    edgeDeploymentContainerName: edgeDeploymentContainerName
    workerDeploymentContainerName: workerDeploymentContainerName
    auditRetentionDays: auditRetentionDays
    logAnalyticsWorkspaceId: monitor.outputs.workspaceId
  }
}

module keyVault 'core/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-secmon-${resourceToken}'
    location: location
    tags: tags
    teamsSecretName: teamsSecretName
    teamsWebhookUrl: teamsWebhookUrl
    botSecretName: botSecretName
    botAppSecret: botAppSecret
    logAnalyticsWorkspaceId: monitor.outputs.workspaceId
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    edgePrincipalId: edgeIdentity.outputs.principalId
    workerPrincipalId: workerIdentity.outputs.principalId
    edgeHostId: edgeHostId
    workerHostId: workerHostId
    storageName: storage.outputs.name
    edgeDeploymentContainerName: edgeDeploymentContainerName
    workerDeploymentContainerName: workerDeploymentContainerName
    appInsightsName: monitor.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    deployerPrincipalId: principalId
  }
}

module graphPermissions 'app/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: workerIdentity.outputs.principalId
    appRoleNames: concat([
      'SecurityAlert.ReadWrite.All'
      'Mail.Send'
    ], grantGroupMemberRead ? [
      'GroupMember.Read.All' // triage.allowed.groups: checkMemberGroups
    ] : [])
  }
}

// The host needs its storage (and, for the worker, Key Vault) roles when it first starts.
module edgeApp 'app/function.bicep' = {
  name: 'function-edge'
  scope: rg
  dependsOn: [
    rbac
  ]
  params: {
    role: 'edge'
    planName: 'plan-secmon-edge-${resourceToken}'
    appName: edgeAppName
    hostId: edgeHostId
    identityId: edgeIdentity.outputs.id
    identityClientId: edgeIdentity.outputs.clientId
    deploymentContainerName: edgeDeploymentContainerName
    alwaysReadyWebhookInstances: alwaysReadyWebhookInstances
    location: location
    tags: tags
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    appInsightsConnectionString: monitor.outputs.connectionString
    logAnalyticsWorkspaceId: monitor.outputs.workspaceId
    keyVaultName: keyVault.outputs.name
    teamsSecretName: teamsSecretName
    pollSchedule: pollSchedule
    reconcileSchedule: reconcileSchedule
    sweepSchedule: sweepSchedule
    auditRetentionDays: auditRetentionDays
    tenants: empty(tenants) ? tenant().tenantId : tenants
    mailSender: mailSender
    close: close
    configPath: configPath
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    botAppId: botAppId
    botTenantId: botTenant
    botSecretName: botSecretName
    triageAuthClientId: triageAuthClientId
    triageAuthTenantId: triageAuthTenant
  }
}

module workerApp 'app/function.bicep' = {
  name: 'function-worker'
  scope: rg
  dependsOn: [
    rbac
  ]
  params: {
    role: 'worker'
    planName: 'plan-secmon-worker-${resourceToken}'
    appName: workerAppName
    hostId: workerHostId
    identityId: workerIdentity.outputs.id
    identityClientId: workerIdentity.outputs.clientId
    deploymentContainerName: workerDeploymentContainerName
    alwaysReadyWebhookInstances: 0
    location: location
    tags: tags
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    appInsightsConnectionString: monitor.outputs.connectionString
    logAnalyticsWorkspaceId: monitor.outputs.workspaceId
    keyVaultName: keyVault.outputs.name
    teamsSecretName: teamsSecretName
    pollSchedule: pollSchedule
    reconcileSchedule: reconcileSchedule
    sweepSchedule: sweepSchedule
    auditRetentionDays: auditRetentionDays
    tenants: empty(tenants) ? tenant().tenantId : tenants
    mailSender: mailSender
    close: close
    configPath: configPath
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    botAppId: botAppId
    botTenantId: botTenant
    botSecretName: botSecretName
    triageAuthClientId: triageAuthClientId
    triageAuthTenantId: triageAuthTenant
  }
}

// The Azure Bot, only when the bot's app registration is given. Its messaging endpoint is the edge
// app's bot-messages function.
module bot 'app/bot.bicep' = if (!empty(botAppId)) {
  name: 'bot'
  scope: rg
  params: {
    name: 'bot-secmon-${resourceToken}'
    tags: tags
    botAppId: botAppId
    botTenantId: botTenant
    edgeHostName: edgeApp.outputs.defaultHostName
    sku: botSku
    displayName: botDisplayName
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    name: 'secmon-no-poll-${resourceToken}'
    location: location
    tags: tags
    appInsightsId: monitor.outputs.appInsightsId
    noPollAlertMinutes: noPollAlertMinutes
    alertEmail: alertEmail
  }
}

// ---- outputs (azd stores them in the environment; no secrets here) ------------------------------
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = edgeApp.outputs.name
output SECMON_WORKER_APP_NAME string = workerApp.outputs.name
output SECMON_FUNCTION_HOST string = edgeApp.outputs.defaultHostName
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output SECMON_BLOB_URL string = storage.outputs.blobEndpoint
output SECMON_QUEUE_URL string = storage.outputs.queueEndpoint
output AZURE_CLIENT_ID string = workerIdentity.outputs.clientId
output SECMON_IDENTITY_PRINCIPAL_ID string = workerIdentity.outputs.principalId
output SECMON_EDGE_CLIENT_ID string = edgeIdentity.outputs.clientId
output SECMON_EDGE_PRINCIPAL_ID string = edgeIdentity.outputs.principalId
output SECMON_AUDIT_RETENTION_DAYS int = storage.outputs.auditRetentionDays
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output SECMON_ALERT_RULE string = alerts.outputs.alertRuleName
output SECMON_BOT_NAME string = empty(botAppId) ? '' : bot.outputs.name
output SECMON_BOT_APP_ID string = botAppId
output SECMON_BOT_ENDPOINT string = empty(botAppId) ? '' : bot.outputs.endpoint
output SECMON_TRIAGE_AUTH bool = edgeApp.outputs.authEnabled
