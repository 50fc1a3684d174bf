"""The round's files from Numerai: downloaded into a run's folder, or kept per instance and round.

A local run downloads them once into its own folder. In queue mode each task predicts
one model, and an instance works through many tasks of the same round one after
another, so the files are kept in a cache folder per round and data version,
downloaded by whichever task needs them first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.manifest import ModelSpec
from shared.numerai_client import NumeraiClient
from shared.storage import safe_name
from shared.worker.protocol import WorkRequest

log = logging.getLogger(__name__)

FEATURES = "features.json"
LIVE = "live.parquet"
BENCHMARK = "live_benchmark_models.parquet"


@dataclass(frozen=True)
class RoundFiles:
    """The round's files, ready on local disk."""

    features: Path
    live: Path
    benchmark: Path | None
    data_version: str

    def request(self, spec: ModelSpec, model_path: Path, output_dir: Path, batch_rows: int) -> WorkRequest:
        """What a worker needs to predict `spec` for this round."""
        return WorkRequest(spec, model_path, self.live, self.features, self.benchmark, self.data_version,
                           batch_rows, output_dir)


def download_round(numerai: NumeraiClient, directory: Path, round_number: int, data_version: str,
                   with_benchmarks: bool) -> RoundFiles:
    """Download the round's files into `directory`, skipping any already there.

    A file appears under its own name only once complete and checked (see
    NumeraiClient.download), so one that exists needs no second look.
    """
    def fetch(name: str) -> Path:
        path = directory / name
        if path.is_file():
            log.info("round %d: %s already here (%s)", round_number, name, directory)
            return path
        return numerai.download(name, directory, round_number)

    features, live = fetch(FEATURES), fetch(LIVE)
    return RoundFiles(features, live, fetch(BENCHMARK) if with_benchmarks else None, data_version)


class RoundDataCache:
    """The round's files kept on this instance for the tasks that follow, one round at a time."""

    def __init__(self, root: Path) -> None:
        """`root` holds one folder per round and data version."""
        self._root = root

    def files(self, numerai: NumeraiClient, round_number: int, data_version: str,
              with_benchmarks: bool) -> RoundFiles:
        """The round's files, downloaded only if no earlier task on this instance has them."""
        folder = self._root / f"round-{round_number:d}-{safe_name(data_version)}"
        with _locked(self._root):
            # Under the lock: two tasks on one instance download a file once, and
            # an older round's folder is removed only when no task is downloading.
            self._remove_other_rounds(folder)
            folder.mkdir(parents=True, exist_ok=True)
            return download_round(numerai, folder, round_number, data_version, with_benchmarks)

    def _remove_other_rounds(self, keep: Path) -> None:
        # A task still reading an older round keeps its open files: on Linux unlink does not stop a reader.
        for folder in self._root.glob("round-*"):
            if folder != keep:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("removed the cached data of %s", folder.name)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing frees the flock
