"""Start and stop Azurite (the Storage emulator's Blob and Queue services) for tests, CI and the demo.

Usage::

    with Azurite() as azurite:
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        queues = QueueServiceClient.from_connection_string(azurite.connection_string)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BLOB = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
AZURITE_QUEUE = REPO_ROOT / "node_modules" / ".bin" / "azurite-queue"
HOST = "127.0.0.1"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's published development key: public, identical on every machine, not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0
_STDERR_TAIL_CHARS = 2000


class AzuriteError(RuntimeError):
    """Azurite is not installed, or did not start."""


class _PortTaken(AzuriteError):
    """Another process took the port between choosing it and Azurite binding it."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process can still take it before Azurite binds it; `Azurite.start` retries once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Azurite:
    """Azurite's blob and queue services on 127.0.0.1, each with its data in a fresh temporary folder.

    Each service is its own node process on its own port; one connection string names both.
    """

    def __init__(self) -> None:
        self._blob = _Service("blob")
        self._queue = _Service("queue")

    @property
    def port(self) -> int:
        """The port the blob service listens on."""
        return self._blob.port

    @property
    def queue_port(self) -> int:
        """The port the queue service listens on."""
        return self._queue.port

    @property
    def blob_endpoint(self) -> str:
        """The development account's blob endpoint: http://127.0.0.1:PORT/devstoreaccount1."""
        return f"http://{HOST}:{self.port}/{ACCOUNT_NAME}"

    @property
    def queue_endpoint(self) -> str:
        """The development account's queue endpoint: http://127.0.0.1:PORT/devstoreaccount1."""
        return f"http://{HOST}:{self.queue_port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        """A connection string for the development account's blobs and queues on this Azurite."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.blob_endpoint};"
            f"QueueEndpoint={self.queue_endpoint};"
        )

    @property
    def pid(self) -> int | None:
        """The process id of the running blob service, or None when it is not running."""
        return self._blob.pid

    @property
    def queue_pid(self) -> int | None:
        """The process id of the running queue service, or None when it is not running."""
        return self._queue.pid

    def start(self) -> Azurite:
        """Start both services on free ports and wait until both accept connections."""
        if self._blob.pid is not None or self._queue.pid is not None:
            raise AzuriteError("Azurite is already running")
        for executable in (AZURITE_BLOB, AZURITE_QUEUE):
            if not executable.exists():
                raise AzuriteError(
                    f"Azurite is not installed ({executable} is missing): run `make setup`"
                )
        services = ((self._blob, AZURITE_BLOB), (self._queue, AZURITE_QUEUE))
        try:
            # Both launch before either is awaited: node's start-up is most of the wait.
            for service, executable in services:
                service.launch(executable)
            for service, executable in services:
                service.wait_until_listening(executable)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both services (SIGTERM, then SIGKILL after a grace period) and delete their data."""
        self._queue.stop()
        self._blob.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Service:
    """One Azurite service (`blob` or `queue`): a node process leading its own process group."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._workdir: Path | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise AzuriteError("Azurite is not running: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def wait_until_listening(self, executable: Path) -> None:
        """Wait for the launched service; relaunch it once on another port if its port was taken."""
        try:
            self._wait_until_listening()
        except _PortTaken:
            log.info(
                "the port chosen for Azurite's %s service was taken before it could bind "
                "it; trying another",
                self.name,
            )
            self.stop()
            self.launch(executable)
            self._wait_until_listening()

    def stop(self) -> None:
        if self._process is not None:
            _terminate_group(self._process)
            log.info("Azurite's %s service on port %s stopped", self.name, self._port)
        for stream in (self._stdout, self._stderr):
            if stream is not None:
                stream.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._process = None
        self._port = None
        self._workdir = None
        self._stdout = self._stderr = None

    def launch(self, executable: Path) -> None:
        """Start the service's process on a free port, without waiting for it."""
        self._workdir = Path(tempfile.mkdtemp(prefix=f"azurite-{self.name}-"))
        data_dir = self._workdir / "data"
        data_dir.mkdir()
        # Files, not pipes: nobody drains a pipe while Azurite runs, and a full pipe blocks it.
        self._stdout = open(self._workdir / "stdout.log", "wb")  # noqa: SIM115 - open while Azurite runs
        self._stderr = open(self._workdir / "stderr.log", "wb")  # noqa: SIM115 - closed by __exit__
        self._port = free_port()
        command = [
            str(executable),
            "--location", str(data_dir),
            f"--{self.name}Host", HOST,
            f"--{self.name}Port", str(self._port),
            "--loose",
            "--skipApiVersionCheck",
            "--silent",
            # Telemetry phones home to Application Insights and makes SIGTERM take ~10 s.
            "--disableTelemetry",
        ]  # fmt: skip
        log.info("starting Azurite's %s service on %s:%s", self.name, HOST, self._port)
        # Its own session and process group: stop() signals the group, so node and anything it
        # spawned go together, and a Ctrl-C meant for the test runner does not reach it first.
        self._process = subprocess.Popen(
            command,
            cwd=self._workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=True,
        )

    def _wait_until_listening(self) -> None:
        assert self._process is not None and self._port is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self._stderr_tail()
                if "EADDRINUSE" in tail:
                    raise _PortTaken(tail)
                raise AzuriteError(
                    f"Azurite's {self.name} service exited with code {self._process.returncode} "
                    f"while starting; its stderr ends with:\n{tail}"
                )
            if _accepts_connections(self._port) and self._says_listening():
                log.info("Azurite's %s service is listening on %s:%s", self.name, HOST, self._port)
                return
            time.sleep(0.05)
        raise AzuriteError(
            f"Azurite's {self.name} service did not report listening on {HOST}:{self._port} "
            f"within {START_TIMEOUT_SECONDS:.0f} s; its stderr ends with:\n{self._stderr_tail()}"
        )

    def _says_listening(self) -> bool:
        # A bare TCP connect could reach a process that grabbed the port before Azurite did;
        # Azurite's own "listens on" line proves the listener is this process.
        assert self._workdir is not None
        return b"successfully listens on" in (self._workdir / "stdout.log").read_bytes()

    def _stderr_tail(self) -> str:
        assert self._workdir is not None
        text = (self._workdir / "stderr.log").read_bytes().decode("utf-8", errors="replace")
        return text[-_STDERR_TAIL_CHARS:].strip() or "(empty)"


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _terminate_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group led by `process`; SIGKILL it if it outlives the grace period."""
    # Azurite leads its own group (start_new_session), so its pid is the group id.
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("Azurite (pid %s) outlived SIGTERM; killing it", process.pid)
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # already gone
