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

@description('Grant the Graph app roles (SecurityAlert.ReadWrite.All, Mail.Send) to the identity. Needs a Privileged Role Administrator deployer; false = an admin grants them separately (docs/deploy.md).')
param grantGraphPermissions bool = true

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

// ---- names -----------------------------------------------------------------------------------
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var appName = 'func-secmon-${resourceToken}'
// Flex deploys from this blob container; one per app.
var deploymentContainerName = 'app-package-${resourceToken}'
var teamsSecretName = 'teams-webhook-url'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'core/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-secmon-${resourceToken}'
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
    deploymentContainerName: deploymentContainerName
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

module keyVault 'core/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-secmon-${resourceToken}'
    location: location
    tags: tags
    teamsSecretName: teamsSecretName
    teamsWebhookUrl: teamsWebhookUrl
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageName: storage.outputs.name
    appInsightsName: monitor.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    deployerPrincipalId: principalId
  }
}

module graphPermissions 'app/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  // The host needs its storage and Key Vault roles when it first starts.
  dependsOn: [
    rbac
  ]
  params: {
    planName: 'plan-secmon-${resourceToken}'
    appName: appName
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitor.outputs.connectionString
    keyVaultName: keyVault.outputs.name
    teamsSecretName: teamsSecretName
    pollSchedule: pollSchedule
    reconcileSchedule: reconcileSchedule
    tenants: empty(tenants) ? tenant().tenantId : tenants
    mailSender: mailSender
    close: close
    configPath: configPath
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    alwaysReadyWebhookInstances: alwaysReadyWebhookInstances
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
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SECMON_FUNCTION_HOST string = functionApp.outputs.defaultHostName
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output SECMON_BLOB_URL string = storage.outputs.blobEndpoint
output SECMON_QUEUE_URL string = storage.outputs.queueEndpoint
output AZURE_CLIENT_ID string = identity.outputs.clientId
output SECMON_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output SECMON_ALERT_RULE string = alerts.outputs.alertRuleName
