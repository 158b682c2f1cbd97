// Key Vault in RBAC mode holding the Teams Workflows webhook URL (a signed URL: whoever has it can
// post to the channel). The app reads it through a Key Vault reference in its app settings, resolved
// by App Service with the worker identity (Key Vault Secrets User, see app/rbac.bicep); the edge has no role here.

param name string
param location string
param tags object = {}
@description('Name of the secret holding the Teams webhook URL; the app setting SECMON_TEAMS_URL references it.')
param teamsSecretName string = 'teams-webhook-url'
@secure()
@description('Teams webhook URL. Empty = leave the secret as it is (not created on a first deploy; set it later with az keyvault secret set).')
param teamsWebhookUrl string = ''
@description('Name of the secret holding the Teams bot\'s client secret; the worker\'s app setting SECMON_BOT_SECRET references it.')
param botSecretName string = 'bot-app-secret'
@secure()
@description('The bot app registration\'s client secret. Empty = leave the secret as it is (set it later with az keyvault secret set).')
param botAppSecret string = ''
@description('Log Analytics workspace receiving the vault audit events (every secret read, by whom).')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // App Service resolves Key Vault references from outside any VNet (no VNet integration by
    // default) and the deployer sets the secret from their machine: the public endpoint stays on,
    // and access is RBAC-only.
    //checkov:skip=CKV_AZURE_109:Public endpoint needed for Key Vault references without VNet integration; RBAC-only access.
    //checkov:skip=CKV_AZURE_189:Public endpoint needed for Key Vault references without VNet integration; RBAC-only access.
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Written only when a value is given, so a later deploy without the parameter keeps the secret.
resource teamsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(teamsWebhookUrl)) {
  parent: vault
  name: teamsSecretName
  //checkov:skip=CKV_AZURE_41:A Teams Workflows URL has no natural expiry; an expiry date would silently stop notifications.
  //checkov:skip=CKV_AZURE_114:contentType is set; checkov does not look inside conditional (if) resources.
  properties: {
    value: teamsWebhookUrl
    contentType: 'text/uri-list'
  }
}

// The Teams bot's client secret (docs/triage.md): read by the worker, which posts and updates the
// cards with the bot's own token; the edge only checks inbound tokens and never holds it.
resource botSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(botAppSecret)) {
  parent: vault
  name: botSecretName
  //checkov:skip=CKV_AZURE_41:The client secret's expiry is the app registration's; rotate both together (docs/triage.md).
  //checkov:skip=CKV_AZURE_114:contentType is set; checkov does not look inside conditional (if) resources.
  properties: {
    value: botAppSecret
    contentType: 'text/plain'
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { category: 'AuditEvent', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
output teamsSecretName string = teamsSecretName
output botSecretName string = botSecretName
