// Storage account used three ways, all through managed identities (shared keys are disabled):
//  - Functions host storage (AzureWebJobsStorage__*): containers azure-webjobs-hosts (locks, timer
//    status) and azure-webjobs-secrets (function keys); the queue trigger reads queue alerts;
//  - one Flex Consumption deployment container per function app (edge, worker);
//  - secmon's own state: containers secmon-state / secmon-audit, queues alerts / alerts-poison and deliveries /
//    deliveries-poison.
// Every container and queue is declared here so that app/rbac.bicep can scope each role to the
// containers and queues an identity needs, never to the account.

param name string
param location string
param tags object = {}
@description('Blob containers the Flex Consumption platform deploys each app from (one per app).')
param edgeDeploymentContainerName string
param workerDeploymentContainerName string
@minValue(1)
@maxValue(146000)
@description('Days each audit blob is immutable (time-based retention on secmon-audit): no one, secmon included, can delete or overwrite it before.')
param auditRetentionDays int = 400
@description('Log Analytics workspace receiving the blob and queue service logs.')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    // No VNet integration by default: the Functions host, secmon and the Flex deployment service
    // reach this account over its public endpoint, with Entra tokens only (no keys, no SAS).
    //checkov:skip=CKV_AZURE_35:Public endpoint needed without VNet integration; access is Entra-only (shared key disabled).
    //checkov:skip=CKV_AZURE_59:Public endpoint needed without VNet integration; access is Entra-only (shared key disabled).
    //checkov:skip=CKV_AZURE_206:LRS on purpose: state is small and rebuildable (watermarks overlap); no geo-replication cost.
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource edgeDeploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: edgeDeploymentContainerName
  properties: { publicAccess: 'None' }
}

resource workerDeploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: workerDeploymentContainerName
  properties: { publicAccess: 'None' }
}

// The Functions host creates these on first start; declared here so roles can be scoped to them.
resource hostsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'azure-webjobs-hosts'
  properties: { publicAccess: 'None' }
}

resource secretsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'azure-webjobs-secrets'
  properties: { publicAccess: 'None' }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'secmon-state'
  properties: { publicAccess: 'None' }
}

resource auditContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'secmon-audit'
  properties: { publicAccess: 'None' }
}

// Time-based retention (WORM) on the audit trail. Protected append writes let secmon keep appending
// records to its append blobs while nothing already written can be changed or deleted before
// auditRetentionDays. Deployed unlocked; lock it once verified (docs/deploy.md) so that not even a
// subscription owner can shorten it.
resource auditImmutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = {
  parent: auditContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: auditRetentionDays
    allowProtectedAppendWrites: true
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource alertsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'alerts'
}

// Where the host moves a message after maxDequeueCount failed tries.
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'alerts-poison'
}

// One message per receiver of a decided alert (and per route update): the deliver function's queue.
resource deliveriesQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'deliveries'
}

resource deliveriesPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'deliveries-poison'
}

// Every read, write and delete on blobs and queues, with the caller's identity, to Log Analytics.
resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { category: 'StorageRead', enabled: true }
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
    metrics: [
      { category: 'Transaction', enabled: true }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { category: 'StorageRead', enabled: true }
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
    metrics: [
      { category: 'Transaction', enabled: true }
    ]
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output auditRetentionDays int = auditRetentionDays
