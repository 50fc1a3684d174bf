"""What a model prints: kept within MODEL_LOG_LIMIT_BYTES on disk, and read back by its tail only.

A worker's stdout and stderr are one pipe, which its fork server drains into the
worker's log (`CappedLog`): the first half of the limit is written as it comes,
the last half is kept in the server's memory and written after it, behind a
marker that says how many bytes were dropped in between, once the worker has
exited. So a model that prints gigabytes costs a bounded file, and the run's
process reads no more than TAIL_READ_BYTES of it (`last_lines`).

A pipe, not a limit on the file (RLIMIT_FSIZE would also limit every file the
model writes), and drained by the server, not by a thread in the worker: a
model's native code can write while holding the GIL, which would starve a
reader thread of its own and block the model on a full pipe for good. The
server never blocks on a pipe; a model that writes faster than it reads waits,
and one whose server died gets EPIPE. A killed worker's output is drained when
it is reaped: whatever it wrote is in the pipe by then.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import deque
from pathlib import Path

from shared.limits import MODEL_LOG_LIMIT_BYTES
from shared.redaction import redact

log = logging.getLogger(__name__)

# One read of a pipe; also its size where the system allows (the default 64 KiB means more reads).
CHUNK_BYTES = 2**20
# The most a server takes from one pipe in one turn of its loop, so that one chatty worker
# does not hold up the others' pipes, or the server's replies.
DRAIN_BYTES = 4 * CHUNK_BYTES
MARKER_BYTES = 256  # room kept for the marker, so the file stays within the limit
# What the run's process reads and shows of a worker's log: the last lines, from its last bytes.
TAIL_READ_BYTES = 64 * 1024
TAIL_LINES = 20
TAIL_CHARS = 4096
LINE_CHARS = 1000  # so that one long line does not crowd out the others


class CappedLog:
    """One worker's output: the pipe it writes to, and its log file within `limit` bytes.

    The fork server makes one per worker before forking it, hands the worker
    `writer`, calls `drain` whenever `reader` is readable and `close` once the
    worker is reaped.
    """

    def __init__(self, path: Path, limit: int = MODEL_LOG_LIMIT_BYTES) -> None:
        self.reader, self.writer = os.pipe()
        os.set_blocking(self.reader, False)
        try:
            fcntl.fcntl(self.reader, fcntl.F_SETPIPE_SZ, CHUNK_BYTES)
        except OSError:
            pass  # over the user's pipe allowance: the default size works, with more reads
        self.path = path
        self.open = True  # until every writer has closed the pipe
        self._file: int | None = _open_log(path)
        self._head_limit = limit // 2
        self._head_left = self._head_limit
        self._tail_limit = limit - self._head_limit - MARKER_BYTES
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self._dropped = 0

    def inherited(self) -> tuple[int, ...]:
        """The descriptors a worker forked later must close: no worker sees another's output."""
        return (self.reader,) if self._file is None else (self.reader, self._file)

    def drain(self, most: int = DRAIN_BYTES) -> None:
        """Take what the pipe holds, up to `most` bytes, without waiting for more."""
        while most > 0 and self.open:
            try:
                chunk = os.read(self.reader, min(most, CHUNK_BYTES))
            except BlockingIOError:
                return
            if not chunk:
                self.open = False  # every writer is gone
                return
            most -= len(chunk)
            self._keep(chunk)

    def close(self) -> None:
        """Once the worker is reaped: take what it left in the pipe, write the tail, close."""
        self.drain()
        tail = b"".join(self._tail)
        cut = max(0, len(tail) - self._tail_limit)
        dropped = self._dropped + cut
        if dropped:
            self._write(
                f"\n[{dropped:,} bytes of output dropped here: the log keeps the first "
                f"{self._head_limit / 2**20:.1f} MiB and the last {self._tail_limit / 2**20:.1f} "
                "MiB of what was printed]\n".encode()
            )
        self._write(tail[cut:])
        os.close(self.reader)
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _keep(self, chunk: bytes) -> None:
        if self._head_left:
            head = chunk[: self._head_left]
            self._write(head)
            self._head_left -= len(head)
            chunk = chunk[len(head) :]
        if not chunk:
            return
        self._tail.append(chunk)
        self._tail_bytes += len(chunk)
        # Whole chunks that are no longer among the last _tail_limit bytes; close() cuts the rest.
        while self._tail_bytes - len(self._tail[0]) >= self._tail_limit:
            oldest = self._tail.popleft()
            self._tail_bytes -= len(oldest)
            self._dropped += len(oldest)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._file is not None:
            try:
                view = view[os.write(self._file, view) :]
            except OSError as exc:  # a full disk: the model's output is not worth the server
                log.warning("stopped writing %s: %s", self.path, exc)
                os.close(self._file)
                self._file = None


def _open_log(path: Path) -> int | None:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:  # its folder is gone: the worker fails on it too, and says so
        log.warning("cannot write %s: %s", path, exc)
        return None


def last_lines(path: Path) -> list[str]:
    """The last lines of a worker's log, redacted: at most TAIL_LINES, TAIL_CHARS characters in all.

    Reads no more than the file's last TAIL_READ_BYTES, however large it is.
    """
    try:
        with path.open("rb") as file:
            start = max(0, file.seek(0, os.SEEK_END) - TAIL_READ_BYTES)
            file.seek(start)
            data = file.read(TAIL_READ_BYTES)
    except OSError:
        return []
    lines = [_shorten(line) for line in data.decode(errors="replace").splitlines()]
    if start and len(lines) > 1:
        lines = lines[1:]  # begins mid-line
    kept: list[str] = []
    room = TAIL_CHARS
    for line in reversed(lines[-TAIL_LINES:]):
        room -= len(line)
        if room < 0:
            break
        kept.append(line)
    return [redact(line) for line in reversed(kept)]


def _shorten(line: str) -> str:
    return line if len(line) <= LINE_CHARS else f"{line[: LINE_CHARS - 1]}…"
