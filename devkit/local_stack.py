"""A whole local deployment: Azurite, the Numerai sandbox, a round, models and the settings.

The integration tests and the demo both use it, so they exercise the same
setup a user has in Azure: the manifest and model files in a models container,
the round's files behind the Numerai API, and the app's settings in the
environment.

For people, to try the command line and the HTTP functions on this machine:

    python -m devkit.local_stack            # or: make local-stack

starts both services on 127.0.0.1 with a small round and three example models,
writes a local.settings.json that points the app at them, prints how to use it,
and runs until Ctrl-C, when it stops what it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from azure.storage.blob import BlobServiceClient

from devkit.azurite import Azurite
from devkit.numerai_sandbox import NumeraiSandbox
from devkit.synthetic import SyntheticRound, write_round

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


REPO = Path(__file__).resolve().parent.parent
# Quick to train (no Keras): the stack is ready in seconds.
EXAMPLE_PLAN = [
    ("demo_lightgbm", "lightgbm", "medium"),
    ("demo_onnx", "onnx", "small"),
    ("demo_upload", "numerai_pickle", "medium"),
]


def local_settings(environ: dict[str, str]) -> dict:
    """A local.settings.json for `func start` and `python -m shared … --settings`."""
    return {"IsEncrypted": False, "Values": {"FUNCTIONS_WORKER_RUNTIME": "python", **environ}}


def main(argv: list[str] | None = None) -> int:
    """Run the stack until SIGINT or SIGTERM; exit code 0 when it stopped cleanly."""
    parser = argparse.ArgumentParser(
        prog="python -m devkit.local_stack", description=__doc__.split("\n\n")[2].strip()
    )
    parser.add_argument("--work", type=Path, default=REPO / ".work" / "local-stack")
    parser.add_argument(
        "--settings-out",
        type=Path,
        default=None,
        help="where to write the settings (default: <work>/local.settings.json)",
    )
    parser.add_argument("--rows", type=int, default=2000, help="rows of the round (default 2000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings_path = args.settings_out or args.work / "local.settings.json"
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    from devkit.example_models import write_example_models  # training libraries: only here

    round_ = write_round(args.work / "round", rows=args.rows, n_features=120, seed=3)
    write_example_models(args.work / "models", round_.feature_sets, EXAMPLE_PLAN)
    with LocalStack() as stack:
        stack.deploy(args.work / "models", round_)
        environ = stack.environ(args.work / "app")
        settings_path.parent.mkdir(parents=True, exist_ok=True)
        settings_path.write_text(json.dumps(local_settings(environ), indent=2))
        print(_usage(stack, settings_path), flush=True)
        stop.wait()
    print("Stopped Azurite and the Numerai sandbox.", flush=True)
    return 0


def _usage(stack: LocalStack, settings_path: Path) -> str:
    return f"""Azurite (Blob and Queue Storage) on {stack.azurite.blob_endpoint}
Numerai API sandbox on {stack.sandbox.url}, round 1200 open, its own keys
Models container {stack.models_container}: models.json and {len(EXAMPLE_PLAN)} example models

Settings for the app: {settings_path}
  python -m shared run --test-mode --settings {settings_path}
  python -m shared run --submit --settings {settings_path}    # "uploads" to the sandbox
  cp {settings_path} local.settings.json && func start         # the HTTP functions, then:
  curl -X POST http://localhost:7071/api/test-run

Ready. Ctrl-C stops both services."""


if __name__ == "__main__":
    raise SystemExit(main())
