"""The models container: the manifest and the model files, cached on the instance by ETag."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, BlobProperties, BlobServiceClient, StorageErrorCode

from shared.errors import StorageError
from shared.storage.container import Container, check_blob_name, safe_name

log = logging.getLogger(__name__)

# Texts read whole into memory (the manifest): a few KB in practice.
MAX_TEXT_BYTES = 1024 * 1024


class ModelStore:
    """Reads the manifest and model files from the models container."""

    def __init__(self, service: BlobServiceClient, container: str, cache_dir: Path) -> None:
        """`cache_dir` keeps downloaded model files between runs on a warm instance."""
        self._container = Container(service.get_container_client(container))
        self._cache_dir = cache_dir

    def read_text(self, blob_name: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
        """Return a blob's content as text (UTF-8; a byte-order mark is dropped).

        A blob over `max_bytes` is refused by its size, before any of it is downloaded.
        """
        check_blob_name(blob_name)
        blob = self._container.client.get_blob_client(blob_name)
        where = f"blob '{blob_name}' in container '{self._container.name}'"
        with self._container.errors(blob_name, "read", "blob"):
            properties = blob.get_blob_properties()
            if properties.size > max_bytes:
                raise StorageError(
                    f"{where} is {properties.size} bytes; at most {max_bytes} are read"
                )
            # The condition keeps a larger blob uploaded since the size check from being read.
            data = blob.download_blob(
                etag=properties.etag, match_condition=MatchConditions.IfNotModified
            ).readall()
        try:
            # utf-8-sig: editors on Windows often save JSON with a BOM, which json.loads rejects.
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise StorageError(f"{where} is not UTF-8 text") from None

    def read_text_and_etag(self, blob_name: str) -> tuple[str, str] | None:
        """A text blob and its ETag, to replace it only if unchanged; None if it does not exist."""
        properties = self.properties(blob_name)
        if properties is None:
            return None
        return self.read_text(blob_name), properties.etag

    def write_text(self, blob_name: str, text: str, etag: str | None) -> bool:
        """Write a JSON text blob if it is still the version `etag` names (None: if it does not
        exist yet); False if another writer was first."""
        check_blob_name(blob_name)
        if etag is None:
            return self._container.create(blob_name, text, "blob")
        return self._container.replace_if_unchanged(blob_name, text, etag, "blob")

    def upload_file(self, blob_name: str, path: Path) -> BlobProperties:
        """Upload a local model file as `blob_name`, replacing any; returns the new blob's properties."""
        check_blob_name(blob_name)
        blob = self._container.client.get_blob_client(blob_name)
        with self._container.errors(blob_name, "upload", "model file"), path.open("rb") as data:
            blob.upload_blob(data, overwrite=True)
            return blob.get_blob_properties()

    def properties(self, blob_name: str) -> BlobProperties | None:
        """A blob's size, ETag and last-modified time; None if it does not exist."""
        check_blob_name(blob_name)
        blob = self._container.client.get_blob_client(blob_name)
        with self._container.errors(blob_name, "read", "blob"):
            try:
                return blob.get_blob_properties()
            except ResourceNotFoundError as exc:
                if exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
                    raise
                return None

    def delete(self, blob_name: str) -> None:
        """Delete a model file; one already gone is fine."""
        check_blob_name(blob_name)
        self._container.delete_optional(blob_name, "model file")

    def ensure_container(self) -> None:
        """Create the models container if it does not exist (Azurite; in Azure the template makes it)."""
        with self._container.errors(None, "reach", "container"):
            if not self._container.client.exists():
                try:
                    self._container.client.create_container()
                except ResourceExistsError:
                    pass  # another command created it a moment ago

    def etag(self, blob_name: str) -> str:
        """The model file's current ETag (one HEAD request), without downloading it."""
        check_blob_name(blob_name)
        with self._container.errors(blob_name, "read", "model file"):
            return self._container.client.get_blob_client(blob_name).get_blob_properties().etag

    def fetch(self, blob_name: str) -> Path:
        """Return a local copy of a model file, downloading it only if its ETag changed.

        The copy lives at `cache_dir/<blob>/<etag>/<basename>`; older versions are deleted.
        """
        check_blob_name(blob_name)
        blob = self._container.client.get_blob_client(blob_name)
        with self._container.errors(blob_name, "download", "model file"):
            try:
                path = self._fetch_current(blob)
            except ResourceModifiedError:
                # Replaced between our HEAD and our GET: fetch the new version instead.
                path = self._fetch_current(blob)
        _remove_other_versions(path.parent)
        return path

    def _fetch_current(self, blob: BlobClient) -> Path:
        etag = blob.get_blob_properties().etag
        target = self._cache_dir / _cache_key(blob.blob_name) / safe_name(etag.strip('"'))
        target /= PurePosixPath(blob.blob_name).name
        if target.is_file():
            log.info("model file '%s' unchanged (ETag %s): cached copy", blob.blob_name, etag)
            return target
        # The condition makes the bytes we save belong to the ETag we file them under.
        download = blob.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, download.readinto)
        except OSError as exc:
            raise StorageError(
                f"could not save model file '{blob.blob_name}' to the local cache "
                f"{self._cache_dir}: {exc.strerror or exc}"
            ) from exc
        log.info("downloaded model file '%s' (ETag %s)", blob.blob_name, etag)
        return target


def _cache_key(blob_name: str) -> str:
    # Readable, yet unique: "a/b.pkl" and "a_b.pkl" read alike, their hashes do not.
    digest = hashlib.sha256(blob_name.encode()).hexdigest()[:12]
    return f"{safe_name(blob_name)[:100]}-{digest}"


def _write_atomically(target: Path, write_into: Callable[[IO[bytes]], object]) -> None:
    """Write via a temporary file in the same folder, so `target` is never seen half-written."""
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as temp:
            write_into(temp)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _remove_other_versions(current: Path) -> None:
    # Safe while another thread still reads an old copy: on Linux an open file outlives unlink.
    for version in current.parent.iterdir():
        if version != current:
            shutil.rmtree(version, ignore_errors=True)
            log.info("removed outdated cached model version %s", version)
