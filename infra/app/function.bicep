// The Function App on a Flex Consumption (FC1) plan, Linux, Python 3.11, 3.12 or 3.13
// (main.bicep's pythonVersion).
// Everything reaches its dependencies through the one user-assigned identity:
// the host's storage, the deployment package, Key Vault references and
// Application Insights. No connection string or key is stored in the app.

param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity, for the host and DefaultAzureCredential.')
param identityClientId string

@description('The Functions host\'s storage account, which holds the deployment package.')
param hostStorageAccountName string
param deploymentContainerName string

@description('The storage account with the models and results containers.')
param dataStorageAccountName string
param modelsContainerName string
param resultsContainerName string
param applicationInsightsName string
param keyVaultName string
param publicIdSecretName string
param secretKeySecretName string

@description('NCRONTAB schedule of the timer, UTC.')
param schedule string

@description('Numerai data version to download.')
param dataVersion string

@description('Memory per instance in MB; 4096 for large models. Not 512: `import tensorflow` alone takes about 670 MiB (see main.bicep).')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Python version of the Function App; requirements.txt pins each one to the Numerai hosted runner.')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string

@description('Upper bound on instances of the whole app; the timer runs on one, the rest serve test runs and, in queue mode, one model each. Flex Consumption\'s lowest maximum is 40 (see main.bicep).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Where the models run: local (on the timer\'s instance) or queue (one message per model).')
@allowed([
  'local'
  'queue'
])
param modelExecution string = 'local'

@description('Queue mode\'s task queue in the host storage account (created by storage.bicep, with `<name>-poison`).')
param taskQueueName string

@description('Always-ready instances of the queue-triggered model_task function; 0 starts them on demand.')
@minValue(0)
@maxValue(40)
param modelTaskAlwaysReady int = 0

// The queue-triggered function of function_app.py that runs one model. On Flex
// Consumption every function other than HTTP, Blob (Event Grid) and Durable ones scales in
// instances of its own, and always-ready counts are set per `function:<name>`
// (learn.microsoft.com/azure/azure-functions/flex-consumption-plan, "Per-function scaling";
// flex-consumption-how-to, "Set always ready instance counts").
var modelTaskFunctionName = 'model_task'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

resource dataStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataStorageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// ===== App settings: everything the Functions host and shared/settings.py read =====
// The two local-only settings of shared/settings.py (the sandbox API URL and the
// storage connection string) never belong here; nor does the worker runtime
// setting, which Flex Consumption takes from functionAppConfig.runtime instead.
var appSettings = {
  // The job (shared/settings.py)
  NUMERAI_SCHEDULE: schedule
  NUMERAI_PUBLIC_ID: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${publicIdSecretName})'
  NUMERAI_SECRET_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${secretKeySecretName})'
  NUMERAI_DATA_VERSION: dataVersion
  NUMERAI_TIMEOUT_SECONDS: '60'
  NUMERAI_DOWNLOAD_TIMEOUT_SECONDS: '300'
  NUMERAI_RETRIES: '4'
  NUMERAI_RETRY_DELAY_SECONDS: '2'
  NUMERAI_FORCE_RESUBMIT: 'false'
  MODELS_STORAGE_ACCOUNT_URL: dataStorage.properties.primaryEndpoints.blob
  AZURE_CLIENT_ID: identityClientId
  STORAGE_TIMEOUT_SECONDS: '30'
  MODELS_CONTAINER: modelsContainerName
  RESULTS_CONTAINER: resultsContainerName
  MANIFEST_BLOB: 'models.json'
  BATCH_ROWS: '2000'
  MODEL_TIME_LIMIT_SECONDS: '600'
  RUN_DEADLINE_SECONDS: '1500'
  SUBMIT_LATE: 'false'
  // Empty: each model's data version's main benchmark column (v5.3: v53_lgbm_ender20).
  BENCHMARK_MODEL: ''
  // A model's worker may use three quarters of the instance; the host and the run keep the rest.
  MODEL_MEMORY_LIMIT_MB: string(instanceMemoryMB * 3 / 4)
  // Empty: half of WORK_DIR's free disk when the models start, shared by MAX_PARALLEL_MODELS.
  MODEL_DISK_LIMIT_MB: ''
  MAX_PARALLEL_MODELS: '1'
  WORK_DIR: '/tmp/numerai-submitter'
  // Queue mode: the trigger and the app's sender both reach the queue through the
  // AzureWebJobsStorage__* settings below, with the identity's Storage Queue Data Contributor.
  MODEL_EXECUTION: modelExecution
  TASK_QUEUE: taskQueueName
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString

  // The Functions host
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // TensorFlow's protobuf must win over the worker's own copy (Python < 3.13).
  PYTHON_ISOLATE_WORKER_DEPENDENCIES: '1'
}
// ===== End of app settings =====

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: a weekly batch job; a zone outage delays one run (the timer catches up past-due runs and the missed-run alert says so), which does not justify zone-redundant Flex capacity
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_78: Flex Consumption has no FTP endpoint and does not accept siteConfig.ftpsState; FTP publishing credentials are turned off below
  // checkov:skip=CKV_AZURE_222: the keyed HTTP test run is called from the deployer's machine and there is no VNet to call it from
  // checkov:skip=CKV_AZURE_17: the HTTP test run is authorised by a function key; requiring client certificates would break the documented curl call
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero per invocation; the timer needs no standby instance to fail over to
  // checkov:skip=CKV_AZURE_213: no long-lived instance to probe: Flex Consumption starts instances per invocation and scales back to zero
  name: name
  location: location
  // azd finds the resource to deploy the `api` service to by this tag.
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      // Flex offers no per-function maximum: maximumInstanceCount bounds the whole app, and
      // a queue function's instances follow its queue's length divided by host.json's
      // batchSize (target-based scaling). `triggers` takes HTTP concurrency only; queue
      // concurrency per instance is host.json's batchSize + newBatchThreshold.
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: (modelTaskAlwaysReady > 0) ? [
          {
            name: 'function:${modelTaskFunctionName}'
            instanceCount: modelTaskAlwaysReady
          }
        ] : []
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Publishing is by Entra ID only (azd, the deploy workflow): no FTP, no
// user name and password for the SCM site.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output id string = functionApp.id
output uri string = 'https://${functionApp.properties.defaultHostName}'
