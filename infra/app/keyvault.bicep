// The vault for the Numerai API keys. RBAC mode (no access policies) so that
// the app's identity gets read-only Key Vault Secrets User and nothing else.
// The secrets are created here only when their values are supplied (the deploy
// workflow's NUMERAI_* secrets); otherwise azd's postprovision hook
// (infra/hooks/postprovision.sh) asks for them before the app is deployed.

param name string
param location string
param tags object = {}

@secure()
@description('Numerai API key, public part. Empty: create the secret later.')
param numeraiPublicId string = ''

@secure()
@description('Numerai API key, secret part. Empty: create the secret later.')
param numeraiSecretKey string = ''

// Off by default: the vault's name is derived from the azd environment's name, so a
// purge-protected vault would block `azd down --purge` and any new deployment under
// that name for the whole retention period. Once on, it cannot be turned off, and
// the property accepts no `false` (hence null).
@description('Purge protection: deleted secrets and the vault cannot be purged for 90 days.')
param purgeProtection bool = false

// The names the app settings' Key Vault references point at.
var publicIdSecretName = 'numerai-public-id'
var secretKeySecretName = 'numerai-secret-key'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Key Vault references from a Flex Consumption app without VNet integration, and `az keyvault secret set` from the deployer, both use the public endpoint; every call needs an Entra ID token and an RBAC role
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109: public network access is needed without VNet integration; access is RBAC-only
  // checkov:skip=CKV_AZURE_42: recoverable needs purge protection, which is opt-in here (see CKV_AZURE_110); soft delete is on, so a deleted vault or secret can be recovered for 90 days unless purged on purpose
  // checkov:skip=CKV_AZURE_110: purge protection is a parameter (keyVaultPurgeProtection), off by default because it blocks `azd down --purge` and redeploying under the same environment name for 90 days; soft delete still keeps deleted secrets
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
    enablePurgeProtection: purgeProtection ? true : null
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
