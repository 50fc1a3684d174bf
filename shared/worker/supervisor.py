"""Running each model in a worker process of its own, within its time and memory limits.

The run's process (the Functions host's Python worker) imports no ML framework:
it borrows a warm fork server (`python -m shared.worker`, kept by `pool`) with an
environment that holds no secret, has it fork one worker per model, watches each worker's
memory, disk and time, and turns whatever happens (an outcome, a crash, a limit)
into a `ModelOutcome` a participant can read. A model that segfaults, runs out
of memory, fills the disk or hangs fails alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Self

import shared
from shared.errors import ServerGone
from shared.limits import WorkerLimits, folder_bytes, free_disk_bytes, instance_memory_mb
from shared.manifest import PICKLE_FORMATS, ModelFormat
from shared.worker.forkserver import ForkServerClient, Worker
from shared.worker.output import last_lines
from shared.worker.pool import WorkerPool, shared_pool
from shared.worker.protocol import LOG_FILE, PHASE_FILE, ModelOutcome, Phase, WorkRequest

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Entries of a worker's folder counted per look: a model that makes more files is counted in
# part while it runs, and in full once it exits.
DISK_WALK_ENTRIES = 10_000
# A look at the folder waits this many times its own duration after the last one: a folder of
# many files (10,000 take 150 ms to walk here) costs the supervisor at most a tenth of a core.
DISK_LOOK_SPACING = 10
# Passed through to workers; everything else (keys, connection strings, the
# managed identity's endpoint and header) stays in the run's process.
SAFE_VARIABLES = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OMP_NUM_THREADS",
)
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGABRT, signal.SIGFPE}
# Frameworks whose import takes seconds (TensorFlow: 5 s here): a fork server of
# their own imports each once, before it forks the first worker that needs it,
# instead of every such worker importing it; no plain worker is forked from it.
PRELOADED = {ModelFormat.KERAS: "keras"}


def run_workers(
    requests: list[WorkRequest], limits: WorkerLimits, max_parallel: int = 1
) -> list[ModelOutcome]:
    """Run every request in a worker of its own, `max_parallel` at a time; outcomes in request order.

    The workers come from the process's warm fork servers (`shared_pool()`).
    """
    return run_workers_in(shared_pool(), requests, limits, max_parallel)


def run_workers_in(
    pool: WorkerPool, requests: list[WorkRequest], limits: WorkerLimits, max_parallel: int = 1
) -> list[ModelOutcome]:
    """`run_workers` with the servers of `pool`."""
    if not requests:
        return []
    # Models of preloaded frameworks last: their server (and TensorFlow's memory) is started
    # only when the plain models are done, and closed when this run no longer needs it.
    order = sorted(range(len(requests)), key=lambda index: requests[index].spec.format in PRELOADED)
    with _Servers(pool) as servers:

        def run(index: int) -> ModelOutcome:
            request = requests[index]
            return run_worker(request, limits, servers.get(PRELOADED.get(request.spec.format)))

        with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="model") as threads:
            outcomes = dict(zip(order, threads.map(run, order)))
    return [outcomes[index] for index in range(len(requests))]


class _Servers:
    """One run's servers, leased from the pool on first need and given back when the run ends."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._environment = worker_environment()
        self._lock = threading.Lock()  # the run's model threads ask side by side
        self._leases = ExitStack()
        self._servers: dict[str | None, ForkServerClient] = {}

    def get(self, preload: str | None) -> ForkServerClient:
        """The server for workers that need `preload` imported first (None: plain workers)."""
        with self._lock:
            if preload not in self._servers:
                lease = self._pool.lease(preload, self._environment)
                server = self._servers[preload] = self._leases.enter_context(lease)
                _warn_if_unconfined(server)
            return self._servers[preload]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._leases.close()


def _warn_if_unconfined(server: ForkServerClient) -> None:
    """Say, once per run and server, when models can see the processes above the fork server."""
    try:
        confinement = server.confinement()
    except ServerGone:
        return  # its workers' outcomes say so
    if not confinement.namespaces:
        log.warning(
            "models are not fully isolated: %s. Each model runs with no capability and cannot "
            "read this run's process, but it can read the environment (the settings, Numerai "
            "keys included) of any other process of this user that it can see, such as the "
            "Functions host: allow unprivileged user namespaces (see docs/security.md)",
            confinement.reason,
        )


def run_worker(
    request: WorkRequest, limits: WorkerLimits, server: ForkServerClient
) -> ModelOutcome:
    """Run one model in a worker forked by `server`; its outcome, whatever became of the worker."""
    name = request.spec.name
    request.output_dir.mkdir(parents=True, exist_ok=True)
    free_before = free_disk_bytes(request.output_dir)
    started = time.monotonic()
    watch = _Watch(request, limits)
    try:
        watch.worker = server.start(request.write().absolute(), PRELOADED.get(request.spec.format))
        watch.until_exit(server)
    except ServerGone as exc:
        if watch.worker is not None:
            _kill_group(watch.worker.pid)  # orphaned by its server: nobody else would end it
        # What the worker printed before its server died is on disk, but for the tail it kept.
        output = last_lines(request.output_dir / LOG_FILE)
        return ModelOutcome(name=name, error=f"model '{name}': {exc}", output=output)
    outcome = ModelOutcome.read(request.output_dir) or ModelOutcome(name=name)
    if watch.stopped_for is not None or (outcome.error is None and not outcome.ok):
        outcome.fail(_explain(request, limits, watch))
    outcome.peak_memory_mb = round(watch.peak_mb, 1)
    outcome.output = last_lines(request.output_dir / LOG_FILE)
    _relay_output(outcome)
    # Everything the run needs of it is read: what the model wrote goes now, not with the run,
    # so that the next model and the uploads find the space. Its log, bounded apart, stays
    # with the run's folder for a person to read.
    _remove_all_but(request.output_dir, LOG_FILE)
    left = free_before - free_disk_bytes(request.output_dir) - folder_bytes(request.output_dir)
    outcome.disk_left_mb = round(max(left, 0) / 2**20, 1)
    log.info(
        "model %s: worker finished in %.2f s, peak %.0f MiB, its folder %.1f MiB, %.1f MiB left elsewhere",
        name,
        time.monotonic() - started,
        watch.peak_mb,
        watch.disk_mb,
        outcome.disk_left_mb,
    )
    return outcome


def worker_environment() -> dict[str, str]:
    """The environment a worker gets: no secrets, and the run's import path."""
    environment = {name: os.environ[name] for name in SAFE_VARIABLES if name in os.environ}
    app_root = str(Path(shared.__file__).resolve().parent.parent)
    # The Functions host adds .python_packages through the path; the worker needs the same.
    paths = [app_root, *(p for p in sys.path if p and Path(p).is_dir())]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["PYTHONUNBUFFERED"] = "1"
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"  # TensorFlow's banner is not the model's news
    return environment


class _Watch:
    """Follows one worker until it exits, stopping it at its limits."""

    def __init__(self, request: WorkRequest, limits: WorkerLimits) -> None:
        self.request = request
        self.limits = limits
        self.peak_mb = 0.0  # sampled while it runs (for the limit), then exact once it has exited
        self.disk_mb = 0.0  # what its folder held at the last look
        self._next_disk_look = 0.0  # time.monotonic() of the next look at its folder
        self.worker: Worker | None = None
        self.exit_code: int | None = None
        self.stopped_for: str | None = None  # "time", "memory", "disk" or "run deadline"

    @property
    def phase(self) -> Phase:
        """The last phase the worker entered."""
        try:
            return Phase((self.request.output_dir / PHASE_FILE).read_text())
        except (OSError, ValueError):
            return Phase.STARTING

    def until_exit(self, server: ForkServerClient) -> None:
        """Wait for `worker` to exit, stopping it if it outgrows its limits."""
        assert self.worker is not None
        pid = self.worker.pid
        deadline = time.monotonic() + self.limits.seconds
        run_ends_at = self.limits.run_ends_at or float("inf")
        while (ended := server.exit(self.worker, POLL_SECONDS)) is None:
            self.peak_mb = max(self.peak_mb, _tree_rss_mb(pid))
            if self.peak_mb > self.limits.memory_mb:
                self.stopped_for = "memory"
            elif self._disk_look_due() and self._over_disk(DISK_WALK_ENTRIES):
                self.stopped_for = "disk"
            elif time.monotonic() > deadline:
                self.stopped_for = "time"
            elif time.monotonic() > run_ends_at:
                self.stopped_for = "run deadline"
            else:
                continue
            _kill_group(pid)
        self.exit_code = ended.code
        # Sampling misses a worker that lives less than a poll, and the top of any peak; the
        # kernel's figure does not. The sampled sum still counts grandchildren running side by side.
        self.peak_mb = max(self.peak_mb, ended.peak_mb)
        # Its files outlive it: a model that wrote too much between two looks is caught now.
        if self.stopped_for is None and self._over_disk(None):
            self.stopped_for = "disk"

    def _disk_look_due(self) -> bool:
        return time.monotonic() >= self._next_disk_look

    def _over_disk(self, max_entries: int | None) -> bool:
        """Whether the worker's folder holds more than its disk limit (counting `max_entries` at most)."""
        if self.limits.disk_mb is None:
            return False
        started = time.monotonic()
        # The app bounds the worker's log itself (MODEL_LOG_LIMIT_BYTES): what it printed is not
        # what it wrote.
        log_file = self.request.output_dir / LOG_FILE
        self.disk_mb = folder_bytes(self.request.output_dir, max_entries, log_file) / 2**20
        ended = time.monotonic()
        self._next_disk_look = ended + (ended - started) * DISK_LOOK_SPACING
        return self.disk_mb > self.limits.disk_mb


def _remove_all_but(folder: Path, kept: str) -> None:
    """Remove everything in `folder` except its entry `kept`; what cannot be removed goes with the run."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name == kept:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with suppress(OSError):
                os.unlink(entry.path)


def _kill_group(pid: int) -> None:
    """End a worker and anything it started (it leads its own process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from the kernel's per-thread child lists.

    Cheap enough to call every poll: psutil's children() reads every process
    on the machine to find them, which cost the models measurable CPU.
    """
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            threads = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue  # exited
        for thread in threads:
            try:
                queue.extend(
                    int(child)
                    for child in Path(f"/proc/{current}/task/{thread}/children").read_text().split()
                )
            except OSError:
                continue
    return found


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    total = 0
    for member in process_tree(pid):
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return total * PAGE_BYTES / 2**20


def _explain(request: WorkRequest, limits: WorkerLimits, watch: _Watch) -> str:
    """Why a worker gave no usable outcome, in a participant's terms."""
    name, phase, stopped_for = request.spec.name, watch.phase.value, watch.stopped_for
    if stopped_for == "time":
        return (
            f"model '{name}': stopped after its limit of {limits.seconds:g} s while {phase}; "
            "raise MODEL_TIME_LIMIT_SECONDS if it needs more"
        )
    if stopped_for == "run deadline":
        return (
            f"model '{name}': stopped while {phase} because the run reached its deadline "
            "(RUN_DEADLINE_SECONDS); the models that finished are archived"
        )
    if stopped_for == "memory":
        return (
            f"model '{name}': used more than MODEL_MEMORY_LIMIT_MB={limits.memory_mb:g} MiB while "
            f"{phase} and was stopped; raise the limit on an instance with more memory, or make "
            "the model smaller"
        )
    if stopped_for == "disk":
        limit = (
            f"its share of the free disk, {limits.disk_mb:g} MiB (MODEL_DISK_LIMIT_MB is unset: "
            "half of WORK_DIR's free space when the models started, ÷ MAX_PARALLEL_MODELS)"
            if limits.disk_default
            else f"MODEL_DISK_LIMIT_MB={limits.disk_mb:g} MiB"
        )
        return (
            f"model '{name}': wrote more than {limit} to its folder while {phase} and was "
            "stopped; its files are removed. Raise the limit if the model needs the space, or "
            "make it write less"
        )
    code = watch.exit_code
    if code is not None and code < 0:
        sig = signal.Signals(-code)
        if sig in _CRASH_SIGNALS:
            cause = (
                "a pickle built on another Python version does this"
                if request.spec.format in PICKLE_FORMATS
                else "a model file written by an incompatible library version can do this"
            )
            return (
                f"model '{name}': the worker crashed with {sig.name} while {phase}; {cause} — "
                f"this app runs Python {sys.version_info.major}.{sys.version_info.minor}"
            )
        if sig is signal.SIGKILL:
            return (
                f"model '{name}': the worker was killed (SIGKILL) while {phase}, most likely by "
                f"the system for lack of memory; this instance has {instance_memory_mb():.0f} MiB"
            )
        return f"model '{name}': the worker was ended by {sig.name} while {phase}"
    return f"model '{name}': the worker exited with code {code} while {phase} without a result"


def _relay_output(outcome: ModelOutcome) -> None:
    """Pass the last lines the model printed on to the run's log, as Numerai's runner shows them."""
    if not outcome.output:
        return
    text = "\n".join(outcome.output)
    if outcome.ok:
        log.info("model %s: the last lines it printed:\n%s", outcome.name, text)
    else:
        log.warning("model %s: last lines of its worker's log:\n%s", outcome.name, text)
