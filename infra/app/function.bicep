// The secmon function app on a Flex Consumption (FC1, Linux) plan, runtime 'custom' (custom handler:
// the package's host.json starts ./secmon serve). Everything authenticates with the user-assigned
// identity: host storage, the deployment container, App Insights ingestion and Key Vault references.

param planName string
param appName string
param location string
param tags object = {}

@description('Resource id, client id of the user-assigned identity.')
param identityId string
param identityClientId string

param blobEndpoint string
param queueEndpoint string
param tableEndpoint string
param deploymentContainerName string

param appInsightsConnectionString string
param keyVaultName string
param teamsSecretName string

@description('NCRONTAB (6 fields, UTC) for the poll-alerts timer.')
param pollSchedule string
@description('NCRONTAB (6 fields, UTC) for the reconcile-alerts timer (keep it equal to poll.reconcile.schedule).')
param reconcileSchedule string
@description('Comma-separated tenant ids secmon polls.')
param tenants string
@description('Mailbox secmon sends mail as (Graph sendMail).')
param mailSender string
@description('on = rules may close alerts; off = every rule in shadow mode.')
param close string
@description('Path of the YAML config inside the package.')
param configPath string

param maximumInstanceCount int
param instanceMemoryMB int
@description('Always-ready instances for the HTTP function group (0 = scale to zero).')
param alwaysReadyWebhookInstances int

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
var alwaysReady = alwaysReadyWebhookInstances > 0 ? [
  {
    name: 'http'
    instanceCount: alwaysReadyWebhookInstances
  }
] : []

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'secmon' })
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
      // No FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION / WEBSITE_RUN_FROM_PACKAGE here:
      // Flex Consumption rejects them; the runtime is functionAppConfig.runtime.
      appSettings: [
        // Host storage through the identity (no connection string, no key).
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
        { name: 'AzureWebJobsStorage__blobServiceUri', value: blobEndpoint }
        { name: 'AzureWebJobsStorage__queueServiceUri', value: queueEndpoint }
        { name: 'AzureWebJobsStorage__tableServiceUri', value: tableEndpoint }
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
        { name: 'SECMON_TENANTS', value: tenants }
        { name: 'SECMON_MAIL_SENDER', value: mailSender }
        { name: 'SECMON_CLOSE', value: close }
        { name: 'SECMON_TEAMS_URL', value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${teamsSecretName})' }
      ]
    }
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
