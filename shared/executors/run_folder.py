"""Each run's work folder, `WORK_DIR/rounds/<run id>`, and the removal of those that killed runs left.

Runs can share an instance (a scheduled run and an HTTP test run at once), so a
folder goes only when no live run holds it: each run holds an exclusive flock
on a lock file in its folder for as long as it works, and the kernel drops that
lock when the process dies, however it dies. Making a folder and sweeping stale
ones both hold a lock on the parent, so a sweep never meets a folder that is
made but not locked yet.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".in-use.lock"
_SWEEP_LOCK = ".sweep.lock"


@contextmanager
def run_folder(root: Path, run_id: str) -> Iterator[Path]:
    """A new folder `root/run_id`, held for this run while the block runs, and removed after it."""
    root.mkdir(parents=True, exist_ok=True)
    with _sweep_lock(root):
        folder = root / run_id
        folder.mkdir()
        held = _lock(folder / LOCK_FILE)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(held)


def remove_stale_folders(root: Path) -> None:
    """Remove the folders under `root` that no live run holds: left by killed runs, or by versions without locks.

    Never raises: a folder that cannot be removed is logged and left for a later run.
    """
    if not root.is_dir():
        return
    try:
        with _sweep_lock(root):
            for folder in root.iterdir():
                if folder.is_dir() and _unheld(folder):
                    log.warning(
                        "removing the work folder %s, left by a run that stopped without cleaning up",
                        folder,
                    )
                    shutil.rmtree(folder, ignore_errors=True)
    except OSError as exc:
        log.warning("could not remove the stale work folders in %s: %s", root, exc)


@contextmanager
def _sweep_lock(root: Path) -> Iterator[None]:
    held = _lock(root / _SWEEP_LOCK)
    try:
        yield
    finally:
        os.close(held)


def _lock(path: Path) -> int:
    """An open descriptor of `path` holding its exclusive flock (waiting for it if need be)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _unheld(folder: Path) -> bool:
    try:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)  # run ids are unique: no run takes this folder up again
    return True
