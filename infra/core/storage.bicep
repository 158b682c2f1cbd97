// Storage account used three ways, all through the managed identity (shared keys are disabled):
//  - Functions host storage (AzureWebJobsStorage__*): leases, timer singletons, queue triggers;
//  - the Flex Consumption deployment container holding the zip package;
//  - secmon's own state: blob containers secmon-state / secmon-audit, queues alerts / alerts-poison.

param name string
param location string
param tags object = {}
@description('Blob container the Flex Consumption platform deploys the package from.')
param deploymentContainerName string
@description('Blob containers secmon itself uses.')
param containerNames array = [
  'secmon-state'
  'secmon-audit'
]
@description('Queues secmon itself uses (the respond function triggers on the first; the host moves poison messages to the second).')
param queueNames array = [
  'alerts'
  'alerts-poison'
]

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

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in containerNames: {
  parent: blobService
  name: c
  properties: { publicAccess: 'None' }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queueNames: {
  parent: queueService
  name: q
}]

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
