extension microsoftGraphV1

// Grants Microsoft Graph application permissions (app roles) to secmon's managed identity.
// The deployer needs AppRoleAssignment.ReadWrite.All + Application.Read.All in Entra ID; in practice
// a Privileged Role Administrator (see docs/deploy.md). Mail.Send as an application can send as ANY
// mailbox until it is scoped with Exchange RBAC for Applications (docs/deploy.md).

@description('Object (principal) id of the managed identity receiving the app roles.')
param principalId string

@description('Graph application permissions secmon needs.')
param appRoleNames array = [
  'SecurityAlert.ReadWrite.All' // list alerts_v2, PATCH status/classification, add comments
  'Mail.Send' // e-mail notifications via /users/{sender}/sendMail
]

// Microsoft Graph's service principal in this tenant (well-known app id).
resource graphSp 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

// Role ids are looked up by name rather than hard-coded: published ids for SecurityAlert.ReadWrite.All disagree.
resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for roleName in appRoleNames: {
  principalId: principalId
  resourceId: graphSp.id
  appRoleId: filter(graphSp.appRoles, r => r.value == roleName)[0].id
}]
