// User-assigned managed identity: the one identity secmon runs as.
// The Functions host uses it for host storage and the deployment container, App Service uses it
// for Key Vault references, and secmon's own ManagedIdentityCredential picks it by client id
// (AZURE_CLIENT_ID) for Graph, blobs and queues.

param name string
param location string
param tags object = {}

resource uami 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = uami.id
output name string = uami.name
output clientId string = uami.properties.clientId
output principalId string = uami.properties.principalId
