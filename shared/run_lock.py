"""One scheduled run at a time: a lease on a blob in the results container.

Timers can fire twice (a scale-out, a restart, a past-due catch-up). The lease
is short and renewed in the background while the run works, so a process
that is killed frees the lock within `lease_seconds`.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobClient, BlobLeaseClient

from shared.errors import StorageError, SubmitterError

log = logging.getLogger(__name__)


class RunLocked(SubmitterError):
    """Another run holds the lock."""


class RunLock:
    """A blob lease held for as long as the `with` block runs."""

    def __init__(self, blob: BlobClient, lease_seconds: int) -> None:
        self._blob = blob
        self._lease_seconds = lease_seconds
        self._lease: BlobLeaseClient | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        try:
            self._ensure_blob()
            self._lease = self._blob.acquire_lease(lease_duration=self._lease_seconds)
        except HttpResponseError as exc:
            if exc.error_code == "LeaseAlreadyPresent":
                raise RunLocked(
                    f"another run holds the lock '{self._blob.blob_name}'; this run did nothing"
                ) from None
            raise StorageError(f"could not take the lock '{self._blob.blob_name}': {exc.reason}") from None
        except AzureError as exc:
            raise StorageError(f"could not take the lock '{self._blob.blob_name}': {type(exc).__name__}") from None
        self._renewer = threading.Thread(target=self._keep_renewing, name="run-lock", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            if self._lease is not None:
                self._lease.release()
        except AzureError as error:  # it expires by itself within lease_seconds
            log.warning("could not release the lock '%s': %s", self._blob.blob_name, type(error).__name__)

    def _ensure_blob(self) -> None:
        try:
            self._blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass  # exists already, perhaps leased: acquiring will tell

    def _keep_renewing(self) -> None:
        # Renew at a third of the lease, so one failed renewal still leaves time for another.
        while not self._stop.wait(self._lease_seconds / 3):
            try:
                self._lease.renew()
            except AzureError as exc:
                log.error("the lock '%s' could not be renewed (%s); another run may start",
                          self._blob.blob_name, type(exc).__name__)
