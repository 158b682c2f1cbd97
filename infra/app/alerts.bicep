// "secmon is silent" alert: a log search alert on Application Insights that fires when no trace
// containing 'poll succeeded' arrived in the last noPollAlertMinutes. A monitor that stops polling
// (bad deploy, lost Graph permission, expired identity, crash loop) is itself an incident.

param name string
param location string
param tags object = {}
param appInsightsId string
@description('Minutes without a successful poll before the alert fires (one of the window sizes log alerts accept).')
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
param noPollAlertMinutes int = 30
@description('E-mail address notified when the alert fires; empty = no action group (the alert still shows in Azure Monitor).')
param alertEmail string = ''

// The message secmon logs after each successful poll (kept in sync with src/intake).
var pollSucceededMessage = 'poll succeeded'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${name}-ag'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'secmon'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource noPoll 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: name
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'secmon: no successful poll for ${noPollAlertMinutes} minutes'
    description: 'No trace containing "${pollSucceededMessage}" reached Application Insights within the window: secmon is not polling Microsoft Graph.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT${noPollAlertMinutes}M'
    criteria: {
      allOf: [
        {
          // Zero matching rows in the window = count 0 < 1 = fire.
          query: 'traces | where message contains "${pollSucceededMessage}"'
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        actionGroup.id
      ]
    }
  }
}

output alertRuleName string = noPoll.name
