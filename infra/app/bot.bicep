// The Azure Bot of the triage buttons (docs/triage.md, "Setup"): a registration of the app
// registration `botAppId` with the Bot Connector, its messaging endpoint on the edge app, and the
// Microsoft Teams channel. main.bicep deploys it only when botAppId is given.
// The bot is single-tenant (new multi-tenant bot registrations are deprecated since 2025-07-31): its
// app registration lives in one Entra tenant, msaAppTenantId. The client secret is not here: the
// Bot Service never needs it (the worker does, through Key Vault), and the edge only checks the Bot
// Connector's tokens, whose audience is the app id.

@minLength(2)
@maxLength(64)
@description('Name of the Azure Bot resource (global, unique across Azure).')
param name string
param tags object = {}

@minLength(1)
@description('Application (client) id of the bot\'s single-tenant app registration (the Microsoft App ID).')
param botAppId string

@description('Entra tenant id of that app registration.')
param botTenantId string

@description('Host name of the edge app; the messaging endpoint is https://<host>/api/bot-messages.')
param edgeHostName string

@allowed([
  'F0'
  'S1'
])
@description('Bot Service pricing tier: F0 (free; standard channels such as Teams are not metered) or S1.')
param sku string = 'F0'

@description('Name shown for the bot in the Azure portal (Teams shows the name of the Teams app manifest).')
param displayName string = 'secmon'

resource bot 'Microsoft.BotService/botServices@2022-09-15' = {
  name: name
  location: 'global'
  tags: tags
  kind: 'azurebot'
  sku: {
    name: sku
  }
  properties: {
    displayName: displayName
    endpoint: 'https://${edgeHostName}/api/bot-messages'
    msaAppId: botAppId
    msaAppType: 'SingleTenant'
    msaAppTenantId: botTenantId
    // No Direct Line / Web Chat keys: the only channel is Teams, authenticated with Entra tokens.
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

// Teams is the channel the cards are posted to and the buttons are clicked in.
resource teams 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: {
      isEnabled: true
      enableCalling: false
    }
  }
}

output name string = bot.name
output endpoint string = bot.properties.endpoint
output appId string = botAppId
