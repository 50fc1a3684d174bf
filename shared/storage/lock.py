"""One scheduled run at a time: a lease on a blob in the results container.

Timers can fire twice (a scale-out, a restart, a past-due catch-up). The lease
is short and renewed in the background while the run works, so a process
that is killed frees the lock within `lease_seconds`. A run that finds the lock
held waits that long before giving up: the holder may be a run that just died.
A run that loses its lease (renewals slower than the lease, a broken lease) must
stop before its next upload; `confirm` tells it.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Self

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobClient, BlobLeaseClient

from shared.errors import LockLost, RunLocked, StorageError
from shared.storage.container import Container, segment

log = logging.getLogger(__name__)


class RunLock:
    """A blob lease held for as long as the `with` block runs."""

    def __init__(
        self,
        blob: BlobClient,
        lease_seconds: int,
        wait_seconds: float = 0.0,
        poll_seconds: float = 1.0,
    ) -> None:
        """`wait_seconds`: how long to keep trying while another run holds the lock."""
        self._blob = blob
        self._lease_seconds = lease_seconds
        self._wait_seconds = wait_seconds
        self._poll_seconds = poll_seconds
        self._lease: BlobLeaseClient | None = None
        self._lost: str | None = None  # why the lease ended, once it has
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> Self:
        deadline = time.monotonic() + self._wait_seconds
        self._ensure_blob()
        while not self._try_acquire():
            if time.monotonic() >= deadline:
                raise RunLocked(
                    f"another run held the lock '{self._blob.blob_name}' for all of the "
                    f"{self._wait_seconds:.0f} s this run waited, so it is alive and working; "
                    "this run did nothing"
                )
            time.sleep(self._poll_seconds)
        self._renewer = threading.Thread(target=self._keep_renewing, name="run-lock", daemon=True)
        self._renewer.start()
        return self

    def confirm(self) -> None:
        """Renew the lease now; raise LockLost unless this run still holds it.

        A renewal that fails for any reason counts: a run that cannot show it holds the
        lock must not upload.
        """
        failure = self._lost or self._renew()
        if failure is not None:
            raise LockLost(
                f"this run could not confirm its lock '{self._blob.blob_name}' ({failure}); "
                "another run may be working on the round, so this run uploads nothing more"
            )

    def _try_acquire(self) -> bool:
        try:
            self._lease = self._blob.acquire_lease(lease_duration=self._lease_seconds)
        except HttpResponseError as exc:
            if exc.error_code == "LeaseAlreadyPresent":
                return False
            raise StorageError(
                f"could not take the lock '{self._blob.blob_name}': {exc.reason}"
            ) from None
        except AzureError as exc:
            raise StorageError(
                f"could not take the lock '{self._blob.blob_name}': {type(exc).__name__}"
            ) from None
        return True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            if self._lease is not None:
                self._lease.release()
        except AzureError as error:  # it expires by itself within lease_seconds
            log.warning(
                "could not release the lock '%s': %s", self._blob.blob_name, type(error).__name__
            )

    def _ensure_blob(self) -> None:
        try:
            self._blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass  # exists already, perhaps leased: acquiring will tell
        except AzureError as exc:
            raise StorageError(
                f"could not take the lock '{self._blob.blob_name}': {type(exc).__name__}"
            ) from None

    def _keep_renewing(self) -> None:
        # Renew at a third of the lease, so one failed renewal still leaves time for another.
        while self._lost is None and not self._stop.wait(self._lease_seconds / 3):
            self._renew()

    def _renew(self) -> str | None:
        """Renew the lease; None if renewed, else why not (and remember a lease that is gone)."""
        assert self._lease is not None  # only called while the lock is held
        try:
            self._lease.renew()
        except HttpResponseError as exc:
            reason = str(exc.error_code or type(exc).__name__)
            if exc.error_code in _LEASE_GONE:
                self._lost = f"the lease is gone: {reason}"
        except AzureError as exc:
            reason = type(exc).__name__
        else:
            return None
        log.error(
            "the lock '%s' could not be renewed (%s); another run may start, so this run "
            "uploads only while it can renew",
            self._blob.blob_name,
            reason,
        )
        return reason


# What Blob Storage answers when the lease is no longer this run's: it expired and
# another run took it, or it was broken.
_LEASE_GONE = frozenset(
    {
        "LeaseIdMismatchWithLeaseOperation",
        "LeaseIsBrokenAndCannotBeRenewed",
        "LeaseNotPresentWithLeaseOperation",
        "LeaseLost",
        "LeaseIsBreakingAndCannotBeAcquired",
    }
)


class Locks:
    """Leases on `locks/<name>` blobs: one scheduled run, or one model's task, at a time."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def lock(self, name: str, lease_seconds: int, wait_seconds: float = 0.0) -> RunLock:
        """A lock, held through a lease on the blob `locks/<name>`, for one holder at a time."""
        blob = self._container.client.get_blob_client(f"locks/{segment(name, 'lock name')}")
        return RunLock(blob, lease_seconds, wait_seconds)
