"""The fork server: one clean process with the engine imported, forking a worker per model.

Starting a fresh interpreter per model would pay for pandas and pyarrow every
time: 1 to 1.3 s here (3 s while the engine also imported numerai-tools). Instead the
run's process starts `python -m shared.worker` once (and keeps it for later
runs, see pool.py), with an environment that holds no secret; it imports the
engine and then forks one worker per model,
which starts at once, shares the imported libraries copy-on-write and has a
process group of its own. Frameworks (LightGBM, onnxruntime, …) are imported
by each worker, after the fork, so that a framework one model needs is no
other model's cost; only a framework whose import takes seconds (TensorFlow)
is imported by a server of its own, when the first worker that needs it is
asked for.
The server never runs a framework itself: forking a process whose framework
threads are running would be unsafe.
A worker's stdout and stderr are a pipe that the server's loop drains into the
worker's log, within its limit (output.py): what a model prints never reaches
the protocol, nor the run's process whole.

The protocol is lines on the server's stdin and stdout:
- run's process → server: `<module to import first, or -> <request file>`
- server → run's process: first `isolation namespaces` or `isolation none <why>`
  (see isolation.py), then for each worker `started <pid> <request file>`, then
  `exited <pid> <exit code> <peak KiB>` (a negative exit code is the signal that
  ended the worker; the peak is the kernel's ru_maxrss for the reaped worker,
  exact however briefly it lived, which sampling /proc from outside is not).
"""

from __future__ import annotations

import faulthandler
import importlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from shared.errors import IsolationError, ServerGone
from shared.worker.isolation import (
    Confinement,
    confine_worker,
    enter_user_namespace,
    isolate_children,
)
from shared.worker.output import CappedLog
from shared.worker.protocol import LOG_FILE, PHASE_FILE, ModelOutcome, Phase, WorkRequest

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05


def serve(preload: str | None = None, commands: int = 0, replies: int = 1) -> int:
    """The server's loop: fork a worker per request line, report starts and exits, until its input closes.

    `preload` is a framework to import before anything is forked. `commands` and
    `replies` are file descriptors (stdin and stdout): read raw, since a buffered
    reader would hold lines that `select` no longer sees. The same loop drains each
    running worker's output into its log.
    """
    problem = enter_user_namespace()  # before the imports start threads
    from shared.worker import engine  # noqa: F401  the imports the workers share

    faulthandler.enable()
    if preload is not None:
        _preload(preload)
    # After this, no thread can start in this process: every import came first.
    confinement = isolate_children(problem)
    _reply(replies, f"isolation {confinement.describe()}")
    pending = b""
    open_input = True
    outputs: dict[int, CappedLog] = {}  # by worker pid, until it is reaped
    while open_input or outputs:
        watched = [commands] if open_input else []
        watched += [output.reader for output in outputs.values() if output.open]
        readable = select.select(watched, [], [], POLL_SECONDS)[0]
        for output in outputs.values():
            if output.reader in readable:
                output.drain()
        if commands in readable:
            chunk = os.read(commands, 65536)
            open_input = bool(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in filter(None, (raw.decode().strip() for raw in lines)):
                module, _, request_file = line.partition(" ")
                if module != "-":
                    _preload(module)
                # The request sits in the worker's output folder (WorkRequest.write), as does its log.
                output = CappedLog(Path(request_file).parent / LOG_FILE)
                pid = _fork_worker(Path(request_file), output, list(outputs.values()), confinement)
                outputs[pid] = output
                _reply(replies, f"started {pid} {request_file}")
        _reap(replies, outputs, confinement.init_pid)
    return 0


def _preload(module: str) -> None:
    """Import a framework for the workers to come; a failure is theirs to report, on their own import."""
    try:
        importlib.import_module(module)
    except Exception:  # whatever the framework raises
        log.exception(
            "could not import %s before forking; its workers will import it themselves", module
        )


def _reply(replies: int, line: str) -> None:
    # One write of a short line: never interleaved with another.
    os.write(replies, f"{line}\n".encode())


def _reap(replies: int, outputs: dict[int, CappedLog], init_pid: int) -> None:
    """Report every worker that has exited, once its output is in its log."""
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == init_pid:
            # Its namespace, and every worker in it, ended with it; no worker can be forked there.
            raise SystemExit("the workers' init process was killed; the server stops")
        output = outputs.pop(pid, None)
        if output is not None:
            output.close()
        # ru_maxrss (KiB on Linux) covers the worker and the children it reaped itself.
        _reply(replies, f"exited {pid} {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")


def _fork_worker(
    request_file: Path, output: CappedLog, others: list[CappedLog], confinement: Confinement
) -> int:
    pid = os.fork()
    if pid:
        os.close(output.writer)  # the worker's now: the pipe ends when it and its children do
        return pid
    code = 1
    try:
        for descriptor in (fd for each in (output, *others) for fd in each.inherited()):
            os.close(descriptor)
        code = _worker(request_file, output.writer, confinement)
    finally:
        os._exit(code)  # never back into the server's loop


def _worker(request_file: Path, output: int, confinement: Confinement) -> int:
    """Inside the forked worker: a process group of its own, its output to `output`, its
    confinement, the engine, the outcome."""
    from shared.worker.engine import run_model

    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    # Over the protocol pipes, so that nothing a model prints can be taken for a reply.
    os.dup2(null, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)  # stderr, logging and faulthandler write to descriptor 2
    os.close(output)
    os.close(null)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    request = WorkRequest.read(request_file)
    # The server's folder is shared by every run it serves: whatever a model writes
    # to relative paths stays in its own folder, which goes with its run.
    os.chdir(request.output_dir)
    _home_in(request.output_dir)
    try:
        inputs = [request.model_path, request.live_path, request.features_path]
        inputs += [request.benchmark_path] if request.benchmark_path else []
        confine_worker(confinement, request.output_dir.absolute(), inputs)
    except IsolationError as exc:
        ModelOutcome(name=request.spec.name, error=f"model '{request.spec.name}': {exc}").write(
            request.output_dir
        )
        return 1
    phase_file = request.output_dir / PHASE_FILE

    def enter(phase: Phase) -> None:
        phase_file.write_text(phase.value)

    outcome = run_model(request, enter)
    outcome.write(request.output_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


def _home_in(folder: Path) -> None:
    """Point the worker's temporary files and home at its own folder, so its disk limit counts them.

    tempfile read TMPDIR once, in the server, and would keep its answer.
    """
    scratch = folder / "tmp"
    scratch.mkdir(exist_ok=True)
    for name in ("TMPDIR", "TEMP", "TMP"):
        os.environ[name] = str(scratch)
    os.environ["HOME"] = str(folder)
    tempfile.tempdir = str(scratch)


@dataclass(eq=False)
class _Server:
    """One fork server process and what it has said."""

    process: subprocess.Popen
    confinement: Confinement | None = None  # once the server has said
    started: dict[str, int] = field(default_factory=dict)
    exits: dict[int, Exit] = field(default_factory=dict)
    gone: bool = False


@dataclass(frozen=True)
class Exit:
    """How a worker ended: its exit code (negative: the signal) and its peak resident memory."""

    code: int
    peak_mb: float


@dataclass(frozen=True)
class Worker:
    """A worker forked by one fork server: its pid, and the server that will report its exit."""

    pid: int
    server: _Server


class ForkServerClient:
    """The run's side of the fork server: start it, ask for workers, learn how they exited.

    A reader thread per server turns its replies into two tables (started
    workers, exits) that the threads supervising each worker wait on. A
    server that dies (a model may kill it) fails the workers it had; the next
    request starts another, so the models still to run are not lost with it.
    The server runs in the log's folder.
    """

    def __init__(
        self, environment: dict[str, str], log_path: Path, preload: str | None = None
    ) -> None:
        self.log_path = log_path
        self._environment = environment
        self._preload = preload
        self._changed = threading.Condition()
        self._server = self._spawn()

    def start(self, request_file: Path, preload: str | None = None) -> Worker:
        """Have a server fork a worker for `request_file`, importing `preload` first."""
        key = str(request_file)
        with self._changed:
            if self._server.gone:
                log.warning(
                    "the worker server stopped; starting another for the models still to run"
                )
                self._server = self._spawn()
            server = self._server
            assert server.process.stdin is not None
            try:
                server.process.stdin.write(f"{preload or '-'} {key}\n")
                server.process.stdin.flush()
            except OSError:  # its end of the pipe is closed: it has exited
                raise ServerGone(self._tail()) from None
            self._changed.wait_for(lambda: key in server.started or server.gone)
            if key not in server.started:
                raise ServerGone(self._tail())
            return Worker(server.started.pop(key), server)

    def exit(self, worker: Worker, timeout: float) -> Exit | None:
        """How the worker ended, once it has; None while it runs."""
        server = worker.server
        with self._changed:
            self._changed.wait_for(lambda: worker.pid in server.exits or server.gone, timeout)
            if worker.pid in server.exits:
                return server.exits.pop(worker.pid)
            if server.gone:
                raise ServerGone(self._tail())
            return None

    def confinement(self) -> Confinement:
        """How the current server keeps its workers from the processes above it (waits for it to say)."""
        server = self._server
        with self._changed:
            self._changed.wait_for(lambda: server.confinement is not None or server.gone)
            if server.confinement is None:
                raise ServerGone(self._tail())
            return server.confinement

    @property
    def pid(self) -> int:
        """The current server's process id."""
        return self._server.process.pid

    @property
    def alive(self) -> bool:
        """Whether the current server is still running and answering."""
        if self._server.gone or self._server.process.poll() is not None:
            return False
        try:
            # A killed server can be a zombie before it can be reaped (its threads still exiting).
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def rss_mb(self) -> float:
        """The current server's resident memory, in MiB (0 once it has exited)."""
        try:
            return psutil.Process(self.pid).memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    def close(self) -> None:
        """Ask the server to finish (it waits for its workers) and make sure it has."""
        process = self._server.process
        try:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _spawn(self) -> _Server:
        # A run started without site-packages (-S, as the package test runs the unzipped app)
        # gives its server none either: PYTHONPATH already carries the run's whole path.
        no_site = ["-S"] if sys.flags.no_site else []
        preload = [self._preload] if self._preload else []
        # -P: no folder of the server's own on the import path (`-m` would put its working
        # folder first); the app comes from PYTHONPATH, as everything else.
        with self.log_path.open("ab") as server_log:
            process = subprocess.Popen(
                [sys.executable, *no_site, "-P", "-m", "shared.worker", *preload],
                env=self._environment,
                cwd=self.log_path.parent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=server_log,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        server = _Server(process)
        threading.Thread(
            target=self._read_replies, args=(server,), name="forkserver-replies", daemon=True
        ).start()
        return server

    def _read_replies(self, server: _Server) -> None:
        assert server.process.stdout is not None
        for line in server.process.stdout:
            kind, number, *rest = line.rstrip("\n").split(" ", 2)
            with self._changed:
                if kind == "isolation":
                    server.confinement = Confinement.parse(" ".join([number, *rest]))
                elif kind == "started":
                    server.started[rest[0]] = int(number)
                elif kind == "exited":
                    code, peak_kib = rest[0].split(" ")
                    server.exits[int(number)] = Exit(int(code), int(peak_kib) / 1024)
                self._changed.notify_all()
        with self._changed:
            server.gone = True
            self._changed.notify_all()

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "the worker server stopped"
        return "the worker server stopped" + (f": {lines[-1][:300]}" if lines else "")
