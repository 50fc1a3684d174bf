"""The round's files from Numerai: downloaded into a run's folder, or kept per instance and round.

Each file is downloaded when a step first needs it: a run whose predictions all
come from the archive fetches only what the benchmark check reads. A local run
keeps them in its own folder. In queue mode each task predicts
one model, and an instance works through many tasks of the same round one after
another, so the files are kept in a cache folder per round and data version,
downloaded by whichever task needs them first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from shared.numerai_client import NumeraiClient
from shared.storage.container import safe_name

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


class RoundFetcher:
    """The round's files in one folder, each downloaded the first time a step asks for it.

    A file appears under its own name only once complete and checked (see
    NumeraiClient.download), so one that exists needs no second look.
    """

    def __init__(
        self,
        numerai: NumeraiClient,
        directory: Path,
        round_number: int,
        data_version: str,
        lock: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        """`lock` is held while a file is looked for and downloaded (tasks sharing a cache folder)."""
        self._numerai = numerai
        self._directory = directory
        self._round_number = round_number
        self.data_version = data_version
        self._lock = lock

    def file(self, name: str) -> Path:
        """One of the round's files (FEATURES, LIVE, BENCHMARK), downloaded if it is not here yet."""
        with self._lock():
            path = self._directory / name
            if path.is_file():
                log.info(
                    "round %d: %s already here (%s)", self._round_number, name, self._directory
                )
                return path
            self._directory.mkdir(parents=True, exist_ok=True)
            return self._numerai.download(
                name, self._directory, self._round_number, self.data_version
            )

    def files(self, with_benchmarks: bool) -> RoundFiles:
        """What the model workers read: the features, the live data and, for upload pickles, the benchmarks."""
        return RoundFiles(
            self.file(FEATURES),
            self.file(LIVE),
            self.file(BENCHMARK) if with_benchmarks else None,
            self.data_version,
        )


# The round's files of a data version ("v5.2"): a run may need several versions, each in its own folder.
FetcherFor = Callable[[str], RoundFetcher]


def run_fetchers(numerai: NumeraiClient, folder: Path, round_number: int) -> FetcherFor:
    """A local run's fetchers: each data version's files in a folder of its own under `folder`."""
    return lambda version: RoundFetcher(
        numerai, folder / "data" / safe_name(version), round_number, version
    )


class RoundDataCache:
    """The round's files kept on this instance for the tasks that follow, one round at a time."""

    def __init__(self, root: Path) -> None:
        """`root` holds one folder per round and data version."""
        self._root = root

    def fetcher(self, numerai: NumeraiClient, round_number: int, data_version: str) -> RoundFetcher:
        """The round's files, each downloaded only if no earlier task on this instance has it."""
        folder = self._root / f"round-{round_number:d}-{safe_name(data_version)}"
        with _locked(self._root):
            # Under the lock: an older round's folder is removed only when no task is downloading.
            self._remove_other_rounds(round_number)
        return RoundFetcher(
            numerai, folder, round_number, data_version, lambda: _locked(self._root)
        )

    def _remove_other_rounds(self, round_number: int) -> None:
        # A task still reading an older round keeps its open files: on Linux unlink does not stop a reader.
        # The round's other data versions stay: other tasks' models may use them.
        for folder in self._root.glob("round-*"):
            if not folder.name.startswith(f"round-{round_number:d}-"):
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
