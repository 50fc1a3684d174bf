"""One blob container and the few operations every store builds on, with errors turned into ours.

Each store (ledger, archive, run records, page, locks) keeps its own kind of blob
in a container; this class is what they share: writing, creating only once,
reading what may be absent, and StorageError messages that name the container and
blob, never a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import (
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
    StorageErrorCode,
    StorageStreamDownloader,
)

from shared.errors import StorageError

JSON = ContentSettings(content_type="application/json")
CSV = ContentSettings(content_type="text/csv")
HTML = ContentSettings(content_type="text/html; charset=utf-8")
_MAX_REASON_CHARS = 300


class Container:
    """A blob container of the results account, created on first use if it does not exist."""

    def __init__(self, client: ContainerClient) -> None:
        self.client = client
        self.name = client.container_name

    @classmethod
    def ensure(cls, service: BlobServiceClient, name: str) -> Container:
        """The container, created if it does not exist (Azurite; in Azure the template makes it)."""
        container = cls(service.get_container_client(name))
        with container.errors(None, "reach", "container"):
            # Check first: an identity with a container-scoped role may read but not create.
            if not container.client.exists():
                try:
                    container.client.create_container()
                except ResourceExistsError:
                    pass  # another instance created it a moment ago
        return container

    @contextmanager
    def errors(self, blob_name: str | None, action: str, what: str) -> Iterator[None]:
        """Turn the SDK's errors into StorageError naming the container and blob, never a secret."""
        where = f"container '{self.name}'"
        try:
            yield
        except ResourceNotFoundError as exc:
            if blob_name is None or exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
                raise StorageError(f"{where} not found in the storage account") from exc
            raise StorageError(f"{what} '{blob_name}' not found in {where}") from exc
        except AzureError as exc:
            subject = where if blob_name is None else f"{what} '{blob_name}' ({where})"
            raise StorageError(
                f"could not {action} {subject}: {reason(exc, self.client.primary_hostname)}"
            ) from exc

    def upload(
        self,
        name: str,
        text: str,
        content: ContentSettings,
        what: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Write (or replace) a text blob."""
        with self.errors(name, "write", what):
            self.client.upload_blob(
                name, text, overwrite=True, content_settings=content, metadata=metadata
            )

    def create(self, name: str, text: str, what: str, content: ContentSettings = JSON) -> bool:
        """Write a blob (JSON unless told) only if it does not exist yet; True if this call wrote it."""
        with self.errors(name, "write", what):
            try:
                self.client.upload_blob(name, text, overwrite=False, content_settings=content)
            except ResourceExistsError:
                return False
        return True

    def replace_if_unchanged(
        self, name: str, text: str, etag: str, what: str, content: ContentSettings = JSON
    ) -> bool:
        """Replace a blob (JSON unless told) only if it is still the version `etag` names; False if another
        writer was first."""
        with self.errors(name, "write", what):
            try:
                self.client.upload_blob(
                    name,
                    text,
                    overwrite=True,
                    content_settings=content,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                return False
        return True

    def etag_optional(self, name: str, what: str) -> str | None:
        """A blob's ETag, or None if it does not exist."""
        with self.errors(name, "read", what):
            try:
                return self.client.get_blob_client(name).get_blob_properties().etag
            except ResourceNotFoundError:
                return None

    def read(self, name: str, what: str) -> str:
        """A text blob that must exist; StorageError if it does not."""
        with self.errors(name, "read", what):
            return self.client.download_blob(name, encoding="utf-8").readall()

    def read_optional(self, name: str, what: str) -> str | None:
        """A text blob, or None if it does not exist."""
        with self.errors(name, "read", what):
            download = self.download_optional(name)
            return None if download is None else download.readall()

    def download_optional(self, name: str) -> StorageStreamDownloader[str] | None:
        """A text blob's download, or None if it does not exist (a missing container still raises)."""
        try:
            return self.client.download_blob(name, encoding="utf-8")
        except ResourceNotFoundError as exc:
            if exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
                raise
            return None

    def delete_optional(self, name: str, what: str) -> None:
        """Delete a blob; one that is already gone is fine."""
        with self.errors(name, "delete", what):
            try:
                self.client.delete_blob(name)
            except ResourceNotFoundError as exc:
                if exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
                    raise

    def names(self, prefix: str, what: str) -> list[str]:
        """The names of the blobs under `prefix`."""
        with self.errors(prefix, "list", what):
            return [blob.name for blob in self.client.list_blobs(name_starts_with=prefix)]

    def read_head(self, blob_name: str, max_bytes: int) -> tuple[str, bool]:
        """A blob's first `max_bytes` bytes as text, and whether the blob was longer."""
        check_blob_name(blob_name)
        with self.errors(blob_name, "read", "blob"):
            # One byte more than is kept tells whether anything was left out.
            data = self.client.download_blob(blob_name, offset=0, length=max_bytes + 1).readall()
        return data[:max_bytes].decode("utf-8", errors="replace"), len(data) > max_bytes


def reason(exc: AzureError, host: str | None = None) -> str:
    """The first line of an SDK error (the rest is request ids and raw XML), with a hint for 403
    and for a refused connection to a local endpoint (`host`, the account's endpoint)."""
    lines = str(exc.message or type(exc).__name__).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:_MAX_REASON_CHARS]
    if getattr(exc, "status_code", None) == 403:
        text += " (check that the app's identity has a Storage Blob Data role on the account)"
    if isinstance(exc, ServiceRequestError) and is_local_endpoint(host) and "refused" in str(exc):
        text += f" (nothing answers at {host} on this machine: {AZURITE_HINT})"
    return text


# What to do when the local storage endpoint refuses: nothing listens there yet.
AZURITE_HINT = (
    "start Azurite first, with `make local-stack` (Azurite, the Numerai sandbox and example "
    "models) or `npx azurite --location .work/azurite`"
)


def is_local_endpoint(host: str | None) -> bool:
    """Whether a storage endpoint (`host[:port][/account]`, as the SDK names it) is this machine."""
    return urlsplit(f"//{host or ''}").hostname in {"127.0.0.1", "localhost", "::1"}


def check_blob_name(name: str) -> None:
    """Refuse a blob name that is empty, absolute or climbs out of its folder."""
    if not name or name.startswith("/") or ".." in name:
        raise StorageError(f"refusing blob name {name!r}: it is empty, starts with '/' or has '..'")


def segment(value: str, what: str) -> str:
    """A value that must form exactly one segment of a blob name."""
    if not value or "/" in value or ".." in value:
        raise StorageError(f"refusing {what} {value!r}: it is empty or has '/' or '..'")
    return value


def safe_name(text: str) -> str:
    """`text` with anything but letters, digits, '.', '_' and '-' replaced: safe in a file or blob name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)
