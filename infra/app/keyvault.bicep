// The vault for the Numerai API keys. RBAC mode (no access policies) so that
// the app's identity gets read-only Key Vault Secrets User and nothing else.
// The secrets are created here only when their values are supplied; otherwise
// the deployer sets them later with `az keyvault secret set`.

param name string
param location string
param tags object = {}

@secure()
@description('Numerai API key, public part. Empty: create the secret later.')
param numeraiPublicId string = ''

@secure()
@description('Numerai API key, secret part. Empty: create the secret later.')
param numeraiSecretKey string = ''

// The names the app settings' Key Vault references point at.
var publicIdSecretName = 'numerai-public-id'
var secretKeySecretName = 'numerai-secret-key'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Key Vault references from a Flex Consumption app without VNet integration, and `az keyvault secret set` from the deployer, both use the public endpoint; every call needs an Entra ID token and an RBAC role
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109: public network access is needed without VNet integration; access is RBAC-only
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

module publicIdSecret 'secret.bicep' = if (!empty(numeraiPublicId)) {
  name: 'secret-numerai-public-id'
  params: {
    vaultName: vault.name
    name: publicIdSecretName
    value: numeraiPublicId
  }
}

module secretKeySecret 'secret.bicep' = if (!empty(numeraiSecretKey)) {
  name: 'secret-numerai-secret-key'
  params: {
    vaultName: vault.name
    name: secretKeySecretName
    value: numeraiSecretKey
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
output publicIdSecretName string = publicIdSecretName
output secretKeySecretName string = secretKeySecretName
