#!/bin/sh
# azd's postprovision hook (azure.yaml): before the app's code is deployed, make sure
# the Numerai keys are in Key Vault and that the Function App has resolved its Key
# Vault references to them.
#
# Why: App Service caches Key Vault references, refetches them every 24 hours, and a
# restart is not documented to refetch them; "to force resolution", Microsoft documents
# a POST to config/configreferences/appsettings/refresh
# (learn.microsoft.com/azure/app-service/app-service-key-vault-references, rotation).
#
# A missing key is asked for when azd runs interactively; otherwise (CI) the hook fails,
# naming the secret. New role assignments (the deployer's Key Vault Secrets Officer, the
# app's Key Vault Secrets User) can take minutes to apply, so each step is retried.
# Unverified against Azure: nothing was deployed from the machine this was written on.
set -eu

vault=${AZURE_KEY_VAULT_NAME:?run azd provision: AZURE_KEY_VAULT_NAME is not set}
app_id=${AZURE_FUNCTION_APP_ID:?run azd provision: AZURE_FUNCTION_APP_ID is not set}
refs="https://management.azure.com${app_id}/config/configreferences/appsettings"
api="api-version=2022-03-01"
tries=${HOOK_TRIES:-30}
pause=${HOOK_PAUSE_SECONDS:-20}

# Runs "$@" until it succeeds, up to $tries times, $pause seconds apart.
retry() {
    attempt=1
    until "$@"; do
        [ "$attempt" -lt "$tries" ] || return 1
        attempt=$((attempt + 1))
        sleep "$pause"
    done
}

# Reads one key without echoing it, from the terminal azd runs the hook in.
ask() {
    printf 'Numerai API key, %s (from numer.ai, account settings; not shown): ' "$1" >&2
    stty -echo
    IFS= read -r value || value=
    stty echo
    printf '\n' >&2
    [ -n "$value" ] || { echo "error: no value given for $1" >&2; exit 1; }
    printf '%s' "$value"
}

existing=$(retry az keyvault secret list --vault-name "$vault" --query "[].name" --output tsv) || {
    echo "error: cannot list the secrets of Key Vault $vault; you need Key Vault Secrets Officer on it" >&2
    exit 1
}
for secret in numerai-public-id numerai-secret-key; do
    if printf '%s\n' "$existing" | grep -qx "$secret"; then
        continue
    fi
    if [ ! -t 0 ]; then
        echo "error: Key Vault $vault has no secret $secret, and azd is not running interactively." >&2
        echo "Set it with: az keyvault secret set --vault-name $vault --name $secret --value <key>" >&2
        echo "(or give NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY to azd provision), then provision again." >&2
        exit 1
    fi
    # Through a file only this user can read (mktemp makes it 0600): a --value argument
    # would show the key to anyone listing the machine's processes.
    keyfile=$(mktemp)
    trap 'rm -f "$keyfile"' EXIT
    ask "$secret" > "$keyfile"
    retry az keyvault secret set --vault-name "$vault" --name "$secret" --file "$keyfile" \
        --encoding utf-8 --output none || {
        echo "error: cannot set $secret in Key Vault $vault" >&2
        exit 1
    }
    rm -f "$keyfile"
done

# Resolved: every reference of the app (the two NUMERAI_* settings) reports "Resolved".
resolved() {
    az rest --method post --url "$refs/refresh?$api" --output none &&
    unresolved=$(az rest --method get --url "$refs?$api" \
        --query "length(value[?properties.status != 'Resolved'])" --output tsv) &&
    [ "$unresolved" = 0 ]
}
if ! retry resolved; then
    echo "error: the Function App has not resolved its Key Vault references; see" >&2
    echo "az rest --method get --url '$refs?$api'" >&2
    exit 1
fi
echo "Numerai keys are in Key Vault $vault and the Function App has resolved them."
