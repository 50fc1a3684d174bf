// One storage account with its blob containers (and queues, if any). main.bicep makes two: one for the
// Functions host and the deployment package, one for the app's data (models and
// results). Two, because the host needs Storage Blob Data Owner on its whole
// account, which would otherwise include write access to the models.
// Shared keys are off, so every caller (host, app, deployer, azd) authenticates
// with Microsoft Entra ID and needs a role assignment.

param name string
param location string
param tags object = {}

@description('Blob containers to create in the account.')
@minLength(1)
param containerNames array

// The host's account holds queue mode's task queue and its poison queue (main.bicep):
// the queue trigger's connection is AzureWebJobsStorage. Created here rather than left to
// the first sender, so that the poison-queue trigger has a queue to listen on from the start.
@description('Queues to create in the account; none by default.')
param queueNames array = []

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches storage over its public endpoint; access is identity-only (shared keys off), so a network deny would only lock out the host and azd
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: the public endpoint is required without VNet integration and every request must carry an Entra ID token
  // checkov:skip=CKV_AZURE_206: locally redundant storage as in Microsoft's Flex templates; the models can be re-uploaded and lost results are not worth geo-redundancy's cost
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    supportsHttpsTrafficOnly: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // A deleted model, report or ledger entry can be restored for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

// Every StorageV2 account has its `default` queue service: declaring it changes nothing.
resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
