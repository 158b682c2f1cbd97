// Log Analytics workspace + workspace-based Application Insights.
// Local (instrumentation-key) auth is disabled: telemetry is only accepted with an Entra token,
// which the Functions host gets from the managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING)
// once the identity has Monitoring Metrics Publisher on this component (see app/rbac.bicep).

param logAnalyticsName string
param appInsightsName string
param location string
param tags object = {}
@description('Days Log Analytics keeps data (30 is the free retention).')
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
// The connection string is not a secret once local auth is disabled: it only says where to send
// telemetry, and ingestion requires an Entra token.
output connectionString string = appInsights.properties.ConnectionString
output workspaceId string = workspace.id
