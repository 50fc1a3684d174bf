"""Blob Storage: the models container in, and the results container's stores, one per kind of record.

`Results` bundles the stores of the results container so that a run opens the
container once; each step takes only the store it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from azure.storage.blob import BlobServiceClient

from shared.settings import Settings
from shared.storage.archive import Archive
from shared.storage.client import service_client
from shared.storage.container import Container
from shared.storage.ledger import Ledger
from shared.storage.lock import Locks
from shared.storage.page import PageStore
from shared.storage.run_records import RunRecords


@dataclass(frozen=True)
class Results:
    """The results container's stores."""

    ledger: Ledger
    archive: Archive
    runs: RunRecords
    page: PageStore
    locks: Locks

    @classmethod
    def open(cls, service: BlobServiceClient, container: str) -> Results:
        """The stores of `container`, created if it does not exist."""
        opened = Container.ensure(service, container)
        return cls(
            Ledger(opened), Archive(opened), RunRecords(opened), PageStore(opened), Locks(opened)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Results:
        """The stores of the results container the settings name."""
        return cls.open(service_client(settings), settings.results_container)
