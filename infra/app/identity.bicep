// The one identity the Function App runs as. User-assigned rather than
// system-assigned so that its role assignments can be granted before the app
// exists: the host then starts with storage, Key Vault and telemetry access.

param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
