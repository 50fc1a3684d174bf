"""The Blob service client: a connection string locally (Azurite), the managed identity in Azure.

Locally the app talks to Azurite through a connection string; in Azure it uses an account URL
and the Function App's managed identity, so no account key exists in its settings.
"""

from __future__ import annotations

from azure.storage.blob import BlobServiceClient, ExponentialRetry

from shared.errors import StorageError
from shared.settings import Settings

CONNECTION_STRING_SETTING = "MODELS_STORAGE_CONNECTION_STRING"
ACCOUNT_URL_SETTING = "MODELS_STORAGE_ACCOUNT_URL"


def service_client(settings: Settings) -> BlobServiceClient:
    """The Blob service client the settings describe."""
    return blob_service_client(
        connection_string=settings.storage_connection_string,
        account_url=settings.storage_account_url,
        managed_identity_client_id=settings.managed_identity_client_id,
        timeout_seconds=settings.storage_timeout_seconds,
    )


def blob_service_client(
    *,
    connection_string: str | None,
    account_url: str | None,
    managed_identity_client_id: str | None,
    timeout_seconds: float,
) -> BlobServiceClient:
    """Build the Blob service client from exactly one of a connection string or an account URL.

    `timeout_seconds` bounds connecting and each socket read (not a whole download), and
    retries are few and short, so a dead endpoint fails a run in seconds, not minutes.
    """
    if bool(connection_string) == bool(account_url):
        state = "both are set" if connection_string else "neither is set"
        raise StorageError(
            f"set exactly one of {CONNECTION_STRING_SETTING} (local development, e.g. Azurite) "
            f"or {ACCOUNT_URL_SETTING} (in Azure, with the managed identity); {state}"
        )
    options = client_options(timeout_seconds)
    if connection_string:
        try:
            return BlobServiceClient.from_connection_string(connection_string, **options)
        except ValueError:
            # `from None`: the original error may quote the string, and the string holds a key.
            raise StorageError(
                f"{CONNECTION_STRING_SETTING} is not a valid storage connection string"
            ) from None
    assert account_url  # the check above leaves only this case
    from azure.identity import DefaultAzureCredential  # heavy import, only needed in Azure

    credential = DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id)
    try:
        return BlobServiceClient(account_url, credential=credential, **options)
    except ValueError:
        raise StorageError(
            f"{ACCOUNT_URL_SETTING} is not a valid account URL; "
            "expected https://<account>.blob.core.windows.net"
        ) from None


def client_options(timeout_seconds: float) -> dict[str, object]:
    """Timeouts and a short retry policy for a storage client (blob or queue)."""
    # The storage SDK ignores azure-core's retry_backoff_factor: its own ExponentialRetry
    # defaults to 15 s + 3**n back-offs (about 84 s over 3 retries), so configure it here.
    # Sleeps are about 3, 5 and 9 s. A refused or timed-out connection is retried only once:
    # it almost always means a wrong URL, DNS or firewall, which waiting does not fix.
    retry = ExponentialRetry(
        initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1, retry_connect=1
    )
    return {
        "connection_timeout": timeout_seconds,
        "read_timeout": timeout_seconds,
        "retry_policy": retry,
    }
