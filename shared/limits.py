"""What a model's worker may use, as plain data: settings build it without importing worker code."""

from __future__ import annotations

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


@dataclass(frozen=True)
class WorkerLimits:
    """What one worker may use: wall seconds from its start, and memory in MiB.

    `run_ends_at` (time.monotonic()) is the run's own deadline: no worker outlives it.
    """

    seconds: float
    memory_mb: float
    run_ends_at: float | None = None


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
        if text.isdigit():
            return min(int(text), machine) / 2**20
    return machine / 2**20
