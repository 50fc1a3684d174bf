// One Key Vault secret. A module of its own so that keyvault.bicep can create
// each secret only when its value is supplied.

param vaultName string
param name string

@secure()
param value string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: Numerai API keys do not expire; an expiry date here would only make Key Vault refuse the key to the app on that date
  parent: vault
  name: name
  properties: {
    value: value
    contentType: 'text/plain'
  }
}
