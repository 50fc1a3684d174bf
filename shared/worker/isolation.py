"""Keeping model code out of reach of every process that holds a secret (issue #21).

A worker's own environment is clean, but Linux lets a process read the
environment and memory (`/proc/<pid>/environ`, `/proc/<pid>/mem`) of any
process of the same user that is dumpable, and of any process at all when it
has CAP_SYS_PTRACE (root has). Up a worker's parents are the run's process and
the Functions host, both holding the settings. So:

- The fork server puts its workers in a user namespace (`enter_user_namespace`)
  and a PID namespace (`isolate_children`) of their own, with a minimal init as
  their pid 1; each worker mounts a /proc of that namespace (`confine_worker`),
  where no process above the fork server exists: not the run's process, not
  the host; the run's other workers' folders are covered for it. A worker is
  left with no capability at all (so it cannot unmount that /proc, nor pass
  the kernel's ptrace checks) and not dumpable (other workers cannot read it).
  This needs no root: unprivileged user namespaces are enough.
- Where namespaces are refused (a sysctl, a seccomp profile), the workers
  still lose every capability and the run's process makes itself non-dumpable
  (`protect_this_process`): a worker then cannot read the run's process or
  the fork server, but it can read any dumpable process of the same user,
  such as the host. The run logs a warning saying so.

Linux only, through libc: Python 3.11 has no `unshare`, `mount` or `capset`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.errors import IsolationError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
# Elsewhere (macOS, for the demo) workers run as plain forks and the run says so once.
LINUX = sys.platform.startswith("linux")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class Confinement:
    """What a fork server could do to keep its workers from the processes above it."""

    namespaces: bool
    reason: str = ""  # why not, when not
    init_pid: int = 0  # the namespace's pid 1, a child of the server

    def describe(self) -> str:
        """One line for the server's reply: `namespaces`, or `none <reason>`."""
        return "namespaces" if self.namespaces else f"none {self.reason}"

    @classmethod
    def parse(cls, text: str) -> Confinement:
        """The confinement a server described with `describe`."""
        kind, _, reason = text.partition(" ")
        return cls(namespaces=kind == "namespaces", reason=reason)


def _call(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def enter_user_namespace() -> str:
    """Move this process into a user namespace of its own (same user inside); why not, or "".

    Called first thing by the fork server: the kernel refuses a new user
    namespace to a process that already runs threads, as the engine's imports
    start some. It is first tried in a throwaway child, all the way to the
    worker's own /proc, so that a refusal leaves this process as it was.
    """
    if not LINUX:
        return f"worker isolation needs Linux; this is {sys.platform}"
    problem = _namespaces_problem()
    if not problem:
        _enter(CLONE_NEWUSER)
    return problem


def isolate_children(problem: str) -> Confinement:
    """Put every child this process forks from now on in a new PID namespace, with an init as its pid 1.

    `problem` is what `enter_user_namespace` said. Called once by the fork
    server before its first worker; afterwards this process can start no thread
    (the kernel refuses threads to a process whose children live in another PID
    namespace): frameworks are imported before.
    """
    if problem:
        return Confinement(namespaces=False, reason=problem)
    try:
        _call(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
    except OSError as exc:
        # Not seen (the trial did the same): the workers still lose their capabilities.
        return Confinement(namespaces=False, reason=str(exc))
    init_pid = os.fork()  # the first child is the namespace's pid 1
    if init_pid == 0:
        _be_init()
    return Confinement(namespaces=True, init_pid=init_pid)


def _namespaces_problem() -> str:
    """Why the namespaces cannot be had here, or "": tried in a throwaway child, as a worker would."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _enter(CLONE_NEWUSER | CLONE_NEWPID)
            inner = os.fork()
            if inner == 0:
                code = 1
                try:
                    _mount_own_proc()
                    code = 0
                finally:
                    os._exit(code)
            code = os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1])
            if code:
                raise OSError(0, "mounting a /proc of the new PID namespace was refused")
        except OSError as exc:
            os.write(2, f"{exc.strerror or exc}\n".encode())
            code = 1
        finally:
            os._exit(code)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0:
        return ""
    return "the kernel refused new user and PID namespaces (see the fork server's log)"


def _enter(flags: int) -> None:
    """Unshare `flags`, a new user namespace among them, mapping this user to itself."""
    uid, gid = os.geteuid(), os.getegid()
    _call(_libc.unshare(flags), "unshare(CLONE_NEWUSER)")
    # The same user inside as outside: files are reached exactly as before.
    _call(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")  # own /proc files
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def _be_init() -> None:
    """The namespace's pid 1: reap orphaned processes until the fork server ends, then end it all."""
    try:
        # When pid 1 ends, the kernel kills everything in its namespace: no worker outlives its server.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.closerange(0, 1 << 20)  # not the server's pipes: its replies end with it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        while True:
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
            signal.sigwaitinfo({signal.SIGCHLD})
    finally:
        os._exit(0)


def _mount_own_proc() -> None:
    """A mount namespace of this process's own, with a /proc showing only its PID namespace."""
    _call(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _call(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private")
    _call(
        _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
        "mounting /proc",
    )


def confine_worker(confinement: Confinement, folder: Path, inputs: list[Path]) -> None:
    """In a forked worker, before any model code: its own /proc, its own folder, no capability, not dumpable.

    `folder` is the worker's own; the folders beside it (the run's other
    workers') are hidden, unless one of `inputs` (the files it reads) lies among
    them. Raises IsolationError when any step fails: a worker that might see or
    read the processes above it must not run a model.
    """
    if not LINUX:
        return
    try:
        if confinement.namespaces:
            _mount_own_proc()
            if not any(folder.parent in path.parents for path in inputs):
                _hide_beside(folder)
        _drop_capabilities()
        # No setuid program can give a capability back; other workers cannot read this one.
        _call(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _call(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
    except OSError as exc:
        raise IsolationError(
            f"the worker could not be isolated from the app's other processes ({exc}); "
            "the model was not run"
        ) from exc


def _hide_beside(folder: Path) -> None:
    """Cover `folder`'s parent with an empty file system, and put `folder` back in it (this worker only)."""
    own = os.open(folder, os.O_PATH | os.O_DIRECTORY)
    try:
        parent = bytes(folder.parent)
        _call(_libc.mount(b"tmpfs", parent, b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755"), "tmpfs")
        folder.mkdir()
        # Through the descriptor: its path is under the cover now.
        source = f"/proc/self/fd/{own}".encode()
        _call(
            _libc.mount(source, bytes(folder), None, MS_BIND, None), "binding the worker's folder"
        )
    finally:
        os.close(own)


def _drop_capabilities() -> None:
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # all zero: nothing effective, permitted or inheritable
    _call(_libc.capset(ctypes.byref(header), data), "capset")


def protect_this_process() -> None:
    """Make the calling process (the run's, holding the settings) unreadable to its workers.

    Non-dumpable: a process of the same user without CAP_SYS_PTRACE, as every
    worker is, cannot read its environment or memory. What a namespace hides
    needs no such protection; this covers servers that could not have one.
    """
    if not LINUX:
        return
    _call(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
