// Azure deployment of the Numerai submitter, for `azd up` (see azure.yaml).
// Subscription scope, as Microsoft's Flex Consumption azd templates: the
// resource group is created here and every resource lives in a module under app/.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the resource group name and a unique suffix for every resource.')
param environmentName string

// The regions of Microsoft's Flex Consumption azd templates (Azure-Samples/
// functions-quickstart-python-azd-timer and durable-functions-quickstart-python-azd,
// infra/main.bicep), without eastus2euap, an early-access canary region. Elsewhere the
// plan cannot be created. Microsoft's current list: `az functionapp
// list-flexconsumption-locations` (learn.microsoft.com/azure/azure-functions/flex-consumption-how-to).
@minLength(1)
@description('Region for every resource; one that offers Flex Consumption.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying user or service principal (azd sets AZURE_PRINCIPAL_ID): may upload models and set the Numerai keys. Empty: no grants.')
param principalId string = ''

@description('NCRONTAB schedule of the timer, UTC; the default fires every 10 minutes of Saturday 12:00-13:50, and `0 */10 12-13 * * 2-6` submits every round; a firing with every model submitted does nothing. The missed-run alert reads it too: change it here, not in the portal.')
param schedule string = '0 */10 12-13 * * 6'

// Computed from the schedule by infra/hooks/schedule_weekdays.py, which azd runs
// before every provisioning (azure.yaml) and which refuses a schedule the alert
// cannot follow. The defaults are the default schedule's: `azd up` checks parameters
// before it runs the preprovision hook (Azure/azure-dev#5806), so without them a first
// `azd up` stops to ask, and `azd up --no-prompt` fails; the hook then sets the real values.
@minLength(1)
@description('Weekdays the schedule fires on, 0 = Sunday, comma-separated (NUMERAI_SCHEDULE_WEEKDAYS, set by the preprovision hook).')
param scheduleWeekdays string = '6'

@description('The first firing of a due day, HH:MM:SS UTC (NUMERAI_SCHEDULE_FIRST_RUN, set by the preprovision hook).')
param scheduleFirstRun string = '12:00:00'

@description('Numerai data version to download.')
param dataVersion string = 'v5.3'

// Flex Consumption offers 512, 2048 and 4096 MB. 512 cannot run the app: `import
// tensorflow` alone takes about 670 MiB (measured), and the Keras format loads it.
// Microsoft's canonical Flex Bicep allows the same two (Azure-Samples/
// azure-functions-flex-consumption-samples, IaC/bicep/main.bicep).
@description('Memory per instance in MB: 2048 is enough for LightGBM and small Keras models; 4096 is for large models. 512 is not offered: TensorFlow alone needs more.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Python version of the Function App: the one setting for it (PYTHON_VERSION in the azd environment, default in main.parameters.json). The Numerai hosted runner offers all three; 3.11 is its default.')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string

// "The lowest maximum scale is currently 40" (learn.microsoft.com/azure/azure-functions/
// flex-consumption-plan, Considerations); Microsoft's canonical Flex Bicep uses the same
// bounds and default (Azure-Samples/azure-functions-flex-consumption-samples, IaC/bicep/main.bicep).
// An upper bound only: the timer runs on one instance, and in queue mode each model task on
// one (host.json's batchSize 1), so it also caps the models running at once; billing is per execution.
@description('Upper bound on Function App instances; Flex Consumption accepts 40 to 1000.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Where the models run: `local`, every model on the timer\'s instance; `queue`, one queue message per model, each on an instance of its own (README, "Scaling out: queue mode").')
@allowed([
  'local'
  'queue'
])
param modelExecution string = 'local'

// Queue names: 3 to 63 lowercase letters, digits and hyphens. The host names the poison
// queue `<name>-poison`, and poison_task is queue-triggered too, so a message that fails
// there three times goes to `<name>-poison-poison`: 14 characters more, so 49 at most.
@description('Name of queue mode\'s task queue in the host storage account; its poison queue is `<name>-poison`.')
@minLength(3)
@maxLength(49)
param taskQueueName string = 'model-tasks'

// Flex Consumption keeps always-ready instances per scale group or function
// (`function:<name>`), billed while idle (learn.microsoft.com/azure/azure-functions/
// flex-consumption-plan, "Always ready instances"). 0 starts model_task's instances on demand.
// At most 40, Flex's lowest maximumInstanceCount, so the count never exceeds the app's maximum.
@description('Always-ready instances for the queue-triggered model_task function; billed while idle. 0: on demand only.')
@minValue(0)
@maxValue(40)
param modelTaskAlwaysReady int = 0

@secure()
@description('Numerai API key, public part. Empty: set the secret later with `az keyvault secret set`.')
param numeraiPublicId string = ''

@secure()
@description('Numerai API key, secret part. Empty: set the secret later with `az keyvault secret set`.')
param numeraiSecretKey string = ''

@description('Key Vault purge protection. Off by default: the vault name is derived from the environment name, and a purge-protected vault blocks `azd down --purge` and a new deployment under the same name for 90 days.')
param keyVaultPurgeProtection bool = false

@description('Email address for alerts; empty creates the action group without receivers.')
param alertEmail string = ''

@description('Minutes after a scheduled run is due before a missing success raises the missed-run alert.')
@minValue(30)
@maxValue(240)
param missedRunGraceMinutes int = 60

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-api-${resourceToken}'
var modelsContainerName = 'models'
var resultsContainerName = 'results'
// One container per app for the Flex deployment package, named as in Microsoft's templates.
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-api-${resourceToken}'
    location: location
    tags: tags
  }
}

// The Functions host's account: host storage and the deployment package.
module hostStorage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    containerNames: [
      deploymentContainerName
    ]
    queueNames: [
      taskQueueName
      '${taskQueueName}-poison'
    ]
  }
}

// The app's data, in an account of its own so that the app's identity can be
// given read-only access to the models (see app/rbac.bicep).
module dataStorage 'app/storage.bicep' = {
  name: 'data-storage'
  scope: rg
  params: {
    name: 'stdata${resourceToken}'
    location: location
    tags: tags
    containerNames: [
      modelsContainerName
      resultsContainerName
    ]
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    numeraiPublicId: numeraiPublicId
    numeraiSecretKey: numeraiSecretKey
    purgeProtection: keyVaultPurgeProtection
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    hostStorageAccountName: hostStorage.outputs.name
    dataStorageAccountName: dataStorage.outputs.name
    modelsContainerName: modelsContainerName
    resultsContainerName: resultsContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    identityPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
  }
}

module function 'app/function.bicep' = {
  name: 'function'
  scope: rg
  // The host reads storage and Key Vault at its first start: grant first.
  dependsOn: [
    rbac
  ]
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    hostStorageAccountName: hostStorage.outputs.name
    dataStorageAccountName: dataStorage.outputs.name
    deploymentContainerName: deploymentContainerName
    modelsContainerName: modelsContainerName
    resultsContainerName: resultsContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    publicIdSecretName: keyVault.outputs.publicIdSecretName
    secretKeySecretName: keyVault.outputs.secretKeySecretName
    schedule: schedule
    dataVersion: dataVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    pythonVersion: pythonVersion
    modelExecution: modelExecution
    taskQueueName: taskQueueName
    modelTaskAlwaysReady: modelTaskAlwaysReady
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    alertEmail: alertEmail
    schedule: schedule
    scheduleWeekdays: scheduleWeekdays
    scheduleFirstRun: scheduleFirstRun
    missedRunGraceMinutes: missedRunGraceMinutes
  }
}

// Read by azd (deploy target, environment values) and by the README's setup steps.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = function.outputs.name
output AZURE_FUNCTION_APP_ID string = function.outputs.id
// The app's Python, for azd's predeploy hook: a package built for another is refused before upload.
output AZURE_FUNCTION_PYTHON_VERSION string = pythonVersion
output SERVICE_API_NAME string = function.outputs.name
output SERVICE_API_URI string = function.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = hostStorage.outputs.name
output DATA_STORAGE_ACCOUNT_NAME string = dataStorage.outputs.name
output MODELS_STORAGE_ACCOUNT_URL string = dataStorage.outputs.blobEndpoint
output MODELS_CONTAINER string = modelsContainerName
output RESULTS_CONTAINER string = resultsContainerName
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
