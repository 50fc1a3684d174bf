"""What the steps of one run share once its round is known: a local run's, and each queue task's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shared.errors import RunDeadlinePassed
from shared.manifest import ModelSpec
from shared.numerai_client import NumeraiClient
from shared.report import Mode
from shared.settings import Settings
from shared.steps.exactly_once import Submitter
from shared.storage import Results
from shared.storage.client import service_client
from shared.storage.lock import RunLock
from shared.storage.models import ModelStore


@dataclass(frozen=True)
class Services:
    """The clients a run talks through, made from its settings."""

    settings: Settings
    numerai: NumeraiClient
    models: ModelStore
    results: Results

    @classmethod
    def connect(cls, settings: Settings) -> Services:
        """The Numerai client and the two containers' stores (the results container is created if missing).

        One Blob service client serves both containers: in Azure each client holds its own
        managed-identity credential, and with it a token request.
        """
        blobs = service_client(settings)
        return cls(
            settings,
            NumeraiClient(settings),
            ModelStore(blobs, settings.models_container, settings.work_dir / "model-cache"),
            Results.open(blobs, settings.results_container),
        )


@dataclass
class RoundContext:
    """One run's round, mode and limits, for its steps (a queue task's from the run's plan)."""

    services: Services
    mode: Mode
    run_id: str
    round_number: int
    ends_at: float = float("inf")  # time.monotonic() at the run's deadline (RUN_DEADLINE_SECONDS)
    trigger_id: str | None = None  # Numerai's, when its webhook started the run
    entries: dict[str, ModelSpec] = field(
        default_factory=dict
    )  # the manifest's (or plan's), by name
    lock: RunLock | None = None  # what a scheduled run (or task) holds while it may upload

    @property
    def settings(self) -> Settings:
        """The run's settings."""
        return self.services.settings

    @property
    def results(self) -> Results:
        """The results container's stores."""
        return self.services.results

    def data_version(self, spec: ModelSpec) -> str:
        """The data version an entry predicts from: its own, or the run's (NUMERAI_DATA_VERSION)."""
        return spec.data_version or self.settings.data_version

    def check_deadline(self, before: str) -> None:
        """Raise RunDeadlinePassed if the run's deadline has passed."""
        if time.monotonic() > self.ends_at:
            raise RunDeadlinePassed(
                f"the run reached its deadline (RUN_DEADLINE_SECONDS={self.settings.run_deadline_seconds:g}) "
                f"before {before}"
            )

    def confirm_lock(self) -> None:
        """Raise LockLost if this run may no longer upload (a test run holds no lock, and uploads nothing)."""
        if self.lock is not None:
            self.lock.confirm()

    def submitter(self) -> Submitter:
        """The exactly-once submissions of this run's round."""
        return Submitter(
            self.services.numerai,
            self.results.ledger,
            self.round_number,
            self.run_id,
            self.confirm_lock,
            self.trigger_id,
        )
