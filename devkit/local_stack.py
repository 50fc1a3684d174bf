"""A whole local deployment: Azurite, the Numerai sandbox, a round, models and the settings.

The integration tests and the demo both use it, so they exercise the same
setup a user has in Azure: the manifest and model files in a models container,
the round's files behind the Numerai API, and the app's settings in the
environment.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from azure.storage.blob import BlobServiceClient

from devkit.azurite import Azurite
from devkit.numerai_sandbox import NumeraiSandbox
from devkit.synthetic import SyntheticRound

log = logging.getLogger(__name__)

DATA_VERSION = "v5.3"
# Recognisable fake keys, so that tests can prove they never reach a log or a report.
FAKE_PUBLIC_ID = "FAKE-PUBLIC-ID-3f9c1a"
FAKE_SECRET_KEY = "FAKE-SECRET-KEY-b7e24d90"


class LocalStack:
    """Azurite and the Numerai sandbox running on 127.0.0.1, with helpers to deploy into them."""

    def __init__(self, azurite: Azurite | None = None) -> None:
        # A shared Azurite (tests start one per session) is not stopped by this stack.
        self._own_azurite = azurite is None
        self.azurite = azurite or Azurite()
        self.sandbox = NumeraiSandbox(
            models={}, public_id=FAKE_PUBLIC_ID, secret_key=FAKE_SECRET_KEY
        )
        suffix = uuid.uuid4().hex[:8]
        self.models_container = f"models-{suffix}"
        self.results_container = f"results-{suffix}"
        # The queue mode's task queue; the Functions host names its poison queue `<name>-poison`.
        self.task_queue = f"tasks-{suffix}"

    def start(self) -> LocalStack:
        """Start the services that are not already running."""
        if self._own_azurite:
            self.azurite.start()
        self.sandbox.start()
        return self

    def stop(self) -> None:
        """Stop what this stack started."""
        self.sandbox.stop()
        if self._own_azurite:
            self.azurite.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def blob_service(self) -> BlobServiceClient:
        """A client for the development storage account."""
        return BlobServiceClient.from_connection_string(self.azurite.connection_string)

    def deploy(self, models_dir: Path, round_: SyntheticRound) -> dict:
        """Upload `models.json` and its model files, publish the round and register the models.

        Returns the manifest as a dict.
        """
        manifest = json.loads((models_dir / "models.json").read_text())
        container = self.blob_service.get_container_client(self.models_container)
        if not container.exists():
            container.create_container()
        container.upload_blob(
            "models.json", (models_dir / "models.json").read_bytes(), overwrite=True
        )
        for entry in manifest["models"]:
            if "file" in entry:  # an ensemble has none
                container.upload_blob(
                    entry["file"], (models_dir / entry["file"]).read_bytes(), overwrite=True
                )
            if entry.get("submit", True):  # one that is never submitted need not be a Numerai model
                self.sandbox.models.setdefault(entry["name"], str(uuid.uuid4()))
        self.sandbox.add_dataset_dir(DATA_VERSION, round_.directory)
        log.info(
            "deployed %d models to container %s", len(manifest["models"]), self.models_container
        )
        return manifest

    def environ(self, work_dir: Path) -> dict[str, str]:
        """The app settings that point the app at these services."""
        public_id, secret_key = self.sandbox.credentials
        return {
            "NUMERAI_SCHEDULE": "0 */10 12-13 * * 6",
            "NUMERAI_PUBLIC_ID": public_id,
            "NUMERAI_SECRET_KEY": secret_key,
            "NUMERAI_DATA_VERSION": DATA_VERSION,
            "NUMERAI_API_URL": self.sandbox.url,
            "NUMERAI_TIMEOUT_SECONDS": "10",
            "NUMERAI_RETRIES": "3",
            "NUMERAI_RETRY_DELAY_SECONDS": "0.05",
            "MODELS_STORAGE_CONNECTION_STRING": self.azurite.connection_string,
            "STORAGE_TIMEOUT_SECONDS": "10",
            "MODELS_CONTAINER": self.models_container,
            "RESULTS_CONTAINER": self.results_container,
            "WORK_DIR": str(work_dir),
            # The queue trigger's connection (connection="AzureWebJobsStorage"), as on Azure.
            "AzureWebJobsStorage": self.azurite.connection_string,
            "TASK_QUEUE": self.task_queue,
        }
