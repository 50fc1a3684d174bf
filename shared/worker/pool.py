"""Warm fork servers, kept between runs and queue tasks instead of one started per run (issue #18).

A fork server pays 1 to 1.3 s of imports (pandas, pyarrow) before it forks its
first worker. `WorkerPool` keeps one per process
(one per instance in Azure) and lends it to every run and every queue task.

- A server is keyed by what it preloaded: plain workers come from a server that
  imported only the engine, Keras workers from one that imported TensorFlow too,
  so that no plain worker's memory (and its limit) ever includes TensorFlow. A
  preloaded server is closed as soon as no run uses it: an idle instance does
  not hold TensorFlow's memory beside the models of the next run.
- A server is retired when it has stopped (a model may kill it), when the
  workers' environment has changed, or when it is older than `max_age_seconds`
  or larger than `max_rss_mb`. Those are checked when a run asks for it, never
  while a run uses it: a retired server still in use finishes its workers and
  is closed by its last user.
- `shared_pool()` is closed at interpreter exit, so no server outlives the process.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.errors import PoolClosed
from shared.worker.forkserver import ForkServerClient
from shared.worker.isolation import protect_this_process

log = logging.getLogger(__name__)

# Safety nets, not expected to be reached: an idle server holds only the engine's
# imports (about 150 MiB); memory it gained or a long life's leaks are not carried on.
MAX_AGE_SECONDS = 3600.0
MAX_RSS_MB = 512.0


@dataclass(eq=False)
class _Entry:
    """One server of the pool and who is using it."""

    client: ForkServerClient
    preload: str | None
    environment: dict[str, str]
    started_at: float
    users: int = 0
    retired: bool = False  # out of the pool; its last user closes it


class WorkerPool:
    """Fork servers kept warm between uses, one per preloaded framework (None: plain workers).

    Thread-safe: runs and queue tasks running side by side in one process share
    a server; each gets its workers from it independently.
    """

    def __init__(
        self, max_age_seconds: float = MAX_AGE_SECONDS, max_rss_mb: float = MAX_RSS_MB
    ) -> None:
        self.max_age_seconds = max_age_seconds
        self.max_rss_mb = max_rss_mb
        self._lock = threading.Lock()
        self._entries: dict[str | None, _Entry] = {}
        self._home: Path | None = None  # the servers' working folder and logs, made on first need
        self._serial = itertools.count(1)
        self._closed = False

    @contextmanager
    def lease(self, preload: str | None, environment: dict[str, str]) -> Iterator[ForkServerClient]:
        """A warm server, having imported `preload`, whose workers get `environment`: one run's."""
        entry = self._acquire(preload, environment)
        try:
            yield entry.client
        finally:
            self._release(entry)

    def prestart(self, environment: dict[str, str]) -> None:
        """Start the plain server now, so that its imports overlap with the caller's own work."""
        with self.lease(None, environment):
            pass

    def close(self) -> None:
        """Close every server, waiting for their workers; the pool starts no more."""
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
            home, self._home = self._home, None
        for entry in entries:
            entry.client.close()
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)

    def _acquire(self, preload: str | None, environment: dict[str, str]) -> _Entry:
        stale = None
        with self._lock:
            if self._closed:
                raise PoolClosed("the worker pool is closed: the process is exiting")
            entry = self._entries.get(preload)
            if entry is not None and (reason := self._retire_reason(entry, environment)):
                log.info("retiring the worker server (pid %d): %s", entry.client.pid, reason)
                stale = self._retire(entry)
                entry = None
            if entry is None:
                entry = self._spawn(preload, environment)
            entry.users += 1
        if stale is not None:
            stale.client.close()  # outside the lock: it waits for the server to exit
        return entry

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.users -= 1
            if entry.users == 0 and entry.preload is not None and not entry.retired:
                self._retire(entry)  # no idle TensorFlow beside the next run's models
            done = entry.users == 0 and entry.retired
        if done:
            entry.client.close()

    def _retire_reason(self, entry: _Entry, environment: dict[str, str]) -> str | None:
        """Why `entry` must not serve another run, or None."""
        if not entry.client.alive:
            return "it has stopped"
        if entry.environment != environment:
            return "the workers' environment has changed"
        age = time.monotonic() - entry.started_at
        if age > self.max_age_seconds:
            return f"{age:.0f} s old, over {self.max_age_seconds:g} s"
        rss = entry.client.rss_mb()
        if rss > self.max_rss_mb:
            return f"{rss:.0f} MiB resident, over {self.max_rss_mb:g} MiB"
        return None

    def _retire(self, entry: _Entry) -> _Entry | None:
        """Take `entry` out of the pool (under the lock); returns it if unused, to be closed."""
        entry.retired = True
        if self._entries.get(entry.preload) is entry:
            del self._entries[entry.preload]
        return entry if entry.users == 0 else None

    def _spawn(self, preload: str | None, environment: dict[str, str]) -> _Entry:
        if self._home is None:
            self._home = Path(tempfile.mkdtemp(prefix="numerai-workers-"))
        log_path = self._home / f"forkserver-{next(self._serial)}-{preload or 'plain'}.log"
        protect_this_process()  # it holds the settings: no worker of the same user may read it
        client = ForkServerClient(dict(environment), log_path, preload)
        entry = _Entry(client, preload, dict(environment), time.monotonic())
        self._entries[preload] = entry
        return entry


_shared: WorkerPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process's pool: a process-wide cache of warm fork servers, created on first use.

    It is global mutable state on purpose (a cache: losing it costs only the
    imports again), and closed at interpreter exit so that no server outlives
    the process.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WorkerPool()
            atexit.register(_shared.close)
        return _shared
