"""What a model's worker may use, as plain data: settings build it without importing worker code."""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import psutil

# A share of the instance for the workers; the rest is the host's and the run's.
MEMORY_SHARE = 0.8
# What a model prints is kept for a person to read (its start and its end, see
# shared/worker/forkserver.py), never parsed: 16 MiB holds tens of thousands of lines of
# training chatter, and bounds the disk a worker's log takes whatever the model prints. A
# constant, not a setting: no one needs more of it, and less saves nothing that matters.
MODEL_LOG_LIMIT_BYTES = 16 * 2**20
# A share of WORK_DIR's free disk for the workers: the rest keeps room for the run's upload
# CSVs, the next round's downloads and the host.
DISK_SHARE = 0.5
# However large the disk, no model needs more scratch than this by default.
DISK_CAP_MB = 10240.0


@dataclass(frozen=True)
class WorkerLimits:
    """What one worker may use: wall seconds from its start, and memory in MiB.

    `run_ends_at` (time.monotonic()) is the run's own deadline: no worker outlives it.
    """

    seconds: float
    memory_mb: float
    run_ends_at: float | None = None
    # MiB its folder (its TMPDIR and HOME included) may hold; None: no limit.
    disk_mb: float | None = None
    disk_default: bool = False  # disk_mb is a share of the free space, MODEL_DISK_LIMIT_MB unset


def default_memory_limit_mb(max_parallel: int) -> float:
    """A worker's share of the instance's memory when MODEL_MEMORY_LIMIT_MB is not set."""
    return round(instance_memory_mb() * MEMORY_SHARE / max_parallel)


def instance_memory_mb() -> float:
    """The memory this instance may use: its cgroup's limit where one is set, else the machine's."""
    machine = psutil.virtual_memory().total
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        limit = whole_number(text)
        if limit is not None:
            return min(limit, machine) / 2**20
    return machine / 2**20


def default_disk_limit_mb(free_bytes: int, max_parallel: int) -> float:
    """A worker's share of the free disk when MODEL_DISK_LIMIT_MB is not set, in MiB."""
    return round(min(free_bytes / 2**20 * DISK_SHARE / max_parallel, DISK_CAP_MB), 1)


def free_disk_bytes(path: Path) -> int:
    """The bytes free on the filesystem of `path`, or of its nearest existing parent."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return shutil.disk_usage(Path.cwd()).free


def folder_bytes(root: Path, max_entries: int | None = None, leave_out: Path | None = None) -> int:
    """The disk space the files under `root` take (allocated blocks, so sparse files count what they use).

    Symbolic links are not followed, and `leave_out` is not counted. With `max_entries`, the
    walk stops after that many entries and counts what it saw: cheap enough to repeat every poll.
    """
    total, seen, stack = 0, 0, [root]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue  # removed meanwhile, or not a folder
        with entries:
            for entry in entries:
                seen += 1
                if max_entries is not None and seen > max_entries:
                    return total
                if leave_out is not None and entry.path == str(leave_out):
                    continue
                try:
                    status = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += status.st_blocks * 512
                if stat.S_ISDIR(status.st_mode):
                    stack.append(Path(entry.path))
    return total


def whole_number(text: str) -> int | None:
    """`text` as a whole number if it is ASCII digits only, else None.

    Not str.isdigit(): it accepts digits such as '²' that int() refuses.
    """
    return int(text) if re.fullmatch(r"[0-9]+", text) else None
