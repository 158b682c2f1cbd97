// One secmon function app on a Flex Consumption (FC1, Linux) plan, runtime 'custom' (custom handler:
// the package's host.json starts ./secmon serve). main.bicep deploys it twice from the same package:
//  - role 'edge':   the internet-facing HTTP functions only, with an identity that holds no Graph
//                   app role, sends to the alerts queue and writes nothing but lifecycle marks and
//                   doorbell claims (app/rbac.bicep);
//  - role 'worker': the timers and the queue trigger, with the Graph app roles.
// Which functions an app's host loads is host.json's `functions` list, set per app through the
// AzureFunctionsJobHost__functions__<i> app settings (AzureWebJobs.<name>.Disabled cannot be used:
// Linux app setting names cannot hold the hyphens of secmon's function names). The identity, not the
// list, is what enforces the split: a function run by the wrong app lacks the roles to do harm.

@allowed([
  'edge'
  'worker'
])
param role string
param planName string
param appName string
param location string
param tags object = {}
@minLength(1)
@maxLength(32)
@description('Functions host id (AzureFunctionsWebHost__hostid): names the keys and locks of this host in host storage.')
param hostId string

@description('Resource id, client id of the user-assigned identity of this app.')
param identityId string
param identityClientId string

param blobEndpoint string
param queueEndpoint string
param deploymentContainerName string

param appInsightsConnectionString string
@description('Log Analytics workspace receiving the FunctionAppLogs of this app.')
param logAnalyticsWorkspaceId string
param keyVaultName string
param teamsSecretName string

@description('NCRONTAB (6 fields, UTC) for the poll-alerts timer.')
param pollSchedule string
@description('NCRONTAB (6 fields, UTC) for the reconcile-alerts timer (keep it equal to poll.reconcile.schedule).')
param reconcileSchedule string
@description('NCRONTAB (6 fields, UTC) for the sweep timer (retention; keep it equal to retention.schedule).')
param sweepSchedule string
@description('Whole days the audit trail is kept after each day ended: the audit container\'s immutability period.')
param auditRetentionDays int
@description('Comma-separated tenant ids secmon polls.')
param tenants string
@description('Mailbox secmon sends mail as (Graph sendMail).')
param mailSender string
@description('on = rules may close alerts; off = every rule in shadow mode.')
param close string
@description('Path of the YAML config inside the package.')
param configPath string

@description('The Teams bot\'s Microsoft App ID (docs/triage.md). Empty = no bot: no SECMON_BOT_* settings.')
param botAppId string = ''
@description('Entra tenant id of the bot\'s app registration: SECMON_BOT_TENANT_ID.')
param botTenantId string = ''
@description('Key Vault secret holding the bot\'s client secret; the worker\'s SECMON_BOT_SECRET references it.')
param botSecretName string = 'bot-app-secret'
@description('Client id of the triage page\'s app registration: App Service Authentication (Entra) on the edge app. Empty = none.')
param triageAuthClientId string = ''
@description('Entra tenant id of the triage page\'s app registration (the sign-in tenant).')
param triageAuthTenantId string = ''

param maximumInstanceCount int
param instanceMemoryMB int
@description('Always-ready instances for the HTTP function group (0 = scale to zero; edge only).')
param alwaysReadyWebhookInstances int

// The functions each app's host loads; together every function folder, each in one app
// (tests/infra/custom_checks.py, rule APP_SPLIT).
var functionsByRole = {
  edge: [
    'graph-webhook'
    'graph-lifecycle'
    'doorbell'
    'health'
    'health-details'
    'bot-messages'
    'triage-page'
  ]
  worker: [
    'poll-alerts'
    'reconcile-alerts'
    'graph-subscriptions'
    'sweep'
    'respond'
    'deliver'
    'doctor'
  ]
}

var hostFunctionSettings = [for (fn, i) in functionsByRole[role]: {
  name: 'AzureFunctionsJobHost__functions__${i}'
  value: fn
}]

// Settings both apps have.
var commonSettings = [
  // Host storage through the identity (no connection string, no key). No table service: the host's
  // diagnostic-events table is left out rather than granting a table role on the whole account.
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
  { name: 'AzureWebJobsStorage__blobServiceUri', value: blobEndpoint }
  { name: 'AzureWebJobsStorage__queueServiceUri', value: queueEndpoint }
  { name: 'AzureFunctionsWebHost__hostid', value: hostId }
  // App Insights with Entra auth only (the component has local auth disabled).
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identityClientId};Authorization=AAD' }
  // secmon's own settings.
  { name: 'AZURE_CLIENT_ID', value: identityClientId }
  { name: 'SECMON_STORE', value: 'azure' }
  { name: 'SECMON_BLOB_URL', value: blobEndpoint }
  { name: 'SECMON_QUEUE_URL', value: queueEndpoint }
  { name: 'SECMON_CONFIG', value: configPath }
  { name: 'SECMON_POLL_SCHEDULE', value: pollSchedule }
  { name: 'SECMON_RECONCILE_SCHEDULE', value: reconcileSchedule }
  { name: 'SECMON_SWEEP_SCHEDULE', value: sweepSchedule }
  // The sweep keeps the audit trail exactly as long as the container's immutability policy does.
  { name: 'SECMON_AUDIT_RETENTION_DAYS', value: string(auditRetentionDays) }
  { name: 'SECMON_TENANTS', value: tenants }
  { name: 'SECMON_CLOSE', value: close }
  // Not a secret; the edge has it so that a config naming ${SECMON_MAIL_SENDER} loads there too.
  { name: 'SECMON_MAIL_SENDER', value: mailSender }
]

// The worker notifies: the Teams URL from Key Vault.
var workerSettings = [
  { name: 'SECMON_TEAMS_URL', value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${teamsSecretName})' }
]

// The edge never notifies and has no Key Vault role. The config in the package names
// ${SECMON_TEAMS_URL}, so the edge gets a placeholder that cannot be a secret (.invalid, RFC 2606).
var edgeSettings = [
  { name: 'SECMON_TEAMS_URL', value: 'https://teams.invalid/not-on-the-edge' }
]

// The Teams bot (docs/triage.md): its app id and tenant on both apps (the edge checks that inbound
// tokens are for this app id; the worker gets its own token as this app). Its client secret only on
// the worker, which posts and updates the cards; the edge gets a placeholder that cannot be a secret,
// so that a config naming ${SECMON_BOT_SECRET} loads there too.
var botSettings = empty(botAppId) ? [] : [
  { name: 'SECMON_BOT_APP_ID', value: botAppId }
  { name: 'SECMON_BOT_TENANT_ID', value: botTenantId }
]
var workerBotSettings = empty(botAppId) ? [] : [
  { name: 'SECMON_BOT_SECRET', value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${botSecretName})' }
]
var edgeBotSettings = empty(botAppId) ? [] : [
  { name: 'SECMON_BOT_SECRET', value: 'https://bot-secret.invalid/not-on-the-edge' }
]

// The triage page may trust App Service Authentication's X-MS-CLIENT-PRINCIPAL headers only where the
// module is on (it strips client-sent copies); this setting says so, on the edge, exactly when it is.
var authSettings = role == 'edge' && !empty(triageAuthClientId) ? [
  { name: 'SECMON_TRIAGE_APP_SERVICE_AUTH', value: 'on' }
] : []

var appSettings = concat(commonSettings, role == 'worker' ? workerSettings : edgeSettings, botSettings,
  role == 'worker' ? workerBotSettings : edgeBotSettings, authSettings, hostFunctionSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  //checkov:skip=CKV_AZURE_225:Zone redundancy on Flex is regional and costs always-ready instances; a missed poll is caught up by the watermark.
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
}

// Graph gives a webhook 3 seconds to answer a validation request or notification; a cold start of
// the host plus the handler can exceed that, so HTTP functions can be kept warm.
var alwaysReady = role == 'edge' && alwaysReadyWebhookInstances > 0 ? [
  {
    name: 'http'
    instanceCount: alwaysReadyWebhookInstances
  }
] : []

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'secmon-${role}' })
  kind: 'functionapp,linux'
  // Graph change notifications and the doorbell arrive from the internet; the HTTP functions check
  // clientState / HMAC signatures themselves. (checkov's parser fails on 5+ comment lines in a row.)
  //checkov:skip=CKV_AZURE_222:Graph webhooks must reach the app over the public endpoint.
  //checkov:skip=CKV_AZURE_17:Graph does not present client certificates to webhooks.
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    //checkov:skip=CKV_AZURE_212:Scale to zero is the point of Flex Consumption; use alwaysReadyWebhookInstances for warm HTTP.
    //checkov:skip=CKV_AZURE_213:No instance to ping when scaled to zero; liveness is the silence alert in app/alerts.bicep.
    serverFarmId: plan.id
    httpsOnly: true
    // App Service resolves @Microsoft.KeyVault(...) settings with this identity.
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReady
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // No FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION / WEBSITE_RUN_FROM_PACKAGE in
      // the settings above: Flex Consumption rejects them; the runtime is functionAppConfig.runtime.
      appSettings: appSettings
    }
  }
}

// Host and runtime logs to Log Analytics (App Insights has the traces; this keeps the platform's own).
resource appDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: app
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { category: 'FunctionAppLogs', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

// App Service Authentication (Entra ID) for the triage page (`/api/triage/...`, docs/triage.md), on
// the edge only and only when the triage page's app registration is given. AllowAnonymous: the
// authentication module signs people in and injects X-MS-CLIENT-PRINCIPAL, but lets every request
// through, because the Graph webhook, the lifecycle endpoint, the doorbell, the health checks and
// bot-messages are called by machines that carry no Entra session (each checks its own clientState,
// HMAC or Bot Connector token). The page itself redirects to /.auth/login/aad when the header is
// absent. With the module on, App Service strips X-MS-CLIENT-PRINCIPAL* sent by a client; without it
// (standalone, or before this is configured) the header is the caller's to forge, so secmon trusts it
// only when it is told it runs behind App Service Authentication.
// No client secret: the module signs in with the ID token flow (the app registration must issue ID
// tokens), and no token store: the page needs who signed in, not their tokens (a blob token store
// would need a SAS URL setting, which this deployment has none of).
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (role == 'edge' && !empty(triageAuthClientId)) {
  parent: app
  // checkov takes every sites/config for the `web` config (siteConfig); these checks read properties
  // authsettingsV2 does not have, and the site's own are set on the site above.
  //checkov:skip=CKV_AZURE_13:This is the authentication; checkov reads v1 authsettings (properties.enabled), here platform.enabled.
  //checkov:skip=CKV_AZURE_222:siteConfig check; public access is the site's (skipped there with its reason).
  name: 'authsettingsV2'
  //checkov:skip=CKV_AZURE_63:siteConfig check (HTTP logging); not a property of authsettingsV2.
  //checkov:skip=CKV_AZURE_65:siteConfig check (detailed errors); not a property of authsettingsV2.
  //checkov:skip=CKV_AZURE_66:siteConfig check (failed request tracing); not a property of authsettingsV2.
  properties: {
    //checkov:skip=CKV_AZURE_80:siteConfig check (.NET version); a custom handler has none.
    //checkov:skip=CKV_AZURE_88:siteConfig check (Azure Files); Flex deploys from a blob container.
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: triageAuthClientId
          openIdIssuer: 'https://login.microsoftonline.com/${triageAuthTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            triageAuthClientId
            'api://${triageAuthClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
      preserveUrlFragmentsForLogins: false
    }
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
output authEnabled bool = role == 'edge' && !empty(triageAuthClientId)
