// Data-plane roles of secmon's two identities, each scoped to the containers and queues it needs and
// never to the storage account (docs/deploy.md, "Identities"). Management roles such as Owner grant
// no data access. Role ids: built-in role definitions; assignment names are deterministic guids.
//  - edge: the internet-facing HTTP functions (graph-webhook, graph-lifecycle, doorbell, health);
//  - worker: the timers and the queue triggers (poll-alerts, graph-subscriptions, respond, deliver).
// Graph app roles are granted to the worker only (app/graph-permissions.bicep).

param edgePrincipalId string
param workerPrincipalId string
@description('Functions host ids (AzureFunctionsWebHost__hostid of each app): each host reads only its own keys.')
param edgeHostId string
param workerHostId string
param storageName string
param edgeDeploymentContainerName string
param workerDeploymentContainerName string
param appInsightsName string
param keyVaultName string
@description('Object id of the deploying user (azd sets AZURE_PRINCIPAL_ID); empty = no deployer role.')
param deployerPrincipalId string = ''

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
}

// ABAC conditions (conditionVersion 2.0) on blob data actions.
var blobPath = '@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path]'
var blobAction = 'Microsoft.Storage/storageAccounts/blobServices/containers/blobs'
// Every blob data action that writes or deletes, or bypasses ACLs (runAsSuperUser, move: hierarchical namespaces).
var notWriting = '!(ActionMatches{\'${blobAction}/write\'}) AND !(ActionMatches{\'${blobAction}/add/action\'}) AND !(ActionMatches{\'${blobAction}/delete\'}) AND !(ActionMatches{\'${blobAction}/tags/write\'}) AND !(ActionMatches{\'${blobAction}/move/action\'}) AND !(ActionMatches{\'${blobAction}/runAsSuperUser/action\'}) AND !(ActionMatches{\'${blobAction}/deleteBlobVersion/action\'}) AND !(ActionMatches{\'${blobAction}/permanentDelete/action\'})'
var notReadingOne = '!(ActionMatches{\'${blobAction}/read\'} AND NOT SubOperationMatches{\'Blob.List\'})'
// The edge writes only subscription records (lifecycle marks), doorbell claims and used triage links
// (kv/triage-link/: the triage page's single-use mark) in secmon-state.
var edgeStateCondition = '((${notWriting}) OR (${blobPath} StringStartsWith \'kv/subscriptions/\' OR ${blobPath} StringStartsWith \'claim/doorbell/\' OR ${blobPath} StringStartsWith \'kv/triage-link/\'))'
// A host reads and writes only its own keys in azure-webjobs-secrets (<host id>/...).
var edgeSecretsCondition = '((${notWriting} AND ${notReadingOne}) OR (${blobPath} StringStartsWith \'${edgeHostId}/\'))'
var workerSecretsCondition = '((${notWriting} AND ${notReadingOne}) OR (${blobPath} StringStartsWith \'${workerHostId}/\'))'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource edgeDeploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: edgeDeploymentContainerName
}

resource workerDeploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: workerDeploymentContainerName
}

resource hostsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'azure-webjobs-hosts'
}

resource secretsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'azure-webjobs-secrets'
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'secmon-state'
}

resource auditContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'secmon-audit'
}

resource alertsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: 'alerts'
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: 'alerts-poison'
}

resource deliveriesQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: 'deliveries'
}

resource deliveriesPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: 'deliveries-poison'
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// ---- edge ------------------------------------------------------------------------------------

// Flex deploys the edge app's package from this container.
resource edgeDeployment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(edgeDeploymentContainer.id, edgePrincipalId, roles.storageBlobDataOwner)
  scope: edgeDeploymentContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: edgePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Host storage: the host lease and locks.
resource edgeHosts 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostsContainer.id, edgePrincipalId, roles.storageBlobDataOwner)
  scope: hostsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: edgePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Host storage: the edge's own function keys only.
resource edgeSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secretsContainer.id, edgePrincipalId, roles.storageBlobDataOwner)
  scope: secretsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: edgePrincipalId
    principalType: 'ServicePrincipal'
    conditionVersion: '2.0'
    condition: edgeSecretsCondition
  }
}

// secmon-state: reads subscription records and health; writes only lifecycle marks and doorbell claims.
resource edgeState 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateContainer.id, edgePrincipalId, roles.storageBlobDataContributor)
  scope: stateContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: edgePrincipalId
    principalType: 'ServicePrincipal'
    conditionVersion: '2.0'
    condition: edgeStateCondition
  }
}

// Rings the bell: "poll tenant X now" on the alerts queue; it cannot read or delete messages.
resource edgeAlertsSend 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(alertsQueue.id, edgePrincipalId, roles.storageQueueDataMessageSender)
  scope: alertsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: edgePrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource edgeMetrics 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, edgePrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: edgePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- worker ----------------------------------------------------------------------------------

resource workerDeployment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workerDeploymentContainer.id, workerPrincipalId, roles.storageBlobDataOwner)
  scope: workerDeploymentContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Host storage: leases, timer singletons and schedule status.
resource workerHosts 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostsContainer.id, workerPrincipalId, roles.storageBlobDataOwner)
  scope: hostsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workerSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secretsContainer.id, workerPrincipalId, roles.storageBlobDataOwner)
  scope: secretsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    conditionVersion: '2.0'
    condition: workerSecretsCondition
  }
}

// secmon's state: watermarks, claims, breaker counters, audit heads.
resource workerState 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateContainer.id, workerPrincipalId, roles.storageBlobDataContributor)
  scope: stateContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The audit trail: appends records; the container's immutability policy refuses every overwrite or
// delete inside the retention period, whoever asks.
resource workerAudit 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(auditContainer.id, workerPrincipalId, roles.storageBlobDataContributor)
  scope: auditContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The queue trigger (receive, delete), polls queued by respond, poison moves.
resource workerAlerts 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(alertsQueue.id, workerPrincipalId, roles.storageQueueDataContributor)
  scope: alertsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workerPoison 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(poisonQueue.id, workerPrincipalId, roles.storageQueueDataContributor)
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The deliver trigger (receive, delete), deliveries queued by respond and put back with a delay, poison moves.
resource workerDeliveries 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deliveriesQueue.id, workerPrincipalId, roles.storageQueueDataContributor)
  scope: deliveriesQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workerDeliveriesPoison 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deliveriesPoisonQueue.id, workerPrincipalId, roles.storageQueueDataContributor)
  scope: deliveriesPoisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workerMetrics 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, workerPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Resolves the SECMON_TEAMS_URL Key Vault reference; the edge has no Key Vault role.
resource workerSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, workerPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Lets the deployer write or rotate the Teams secret (az keyvault secret set). principalType is left
// out because the deployer may be a user or a CI service principal.
resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: deployerPrincipalId
  }
}
