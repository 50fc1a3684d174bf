"""Run queue-triggered functions of a FunctionApp locally, the way the Azure Functions host does.

Each worker is one "instance": a separate process, with its own environment and WORK_DIR, that
polls the bound queues and runs one message at a time (host.json `batchSize` 1 and
`newBatchThreshold` 0). The rules follow the host's queue listener and `QueueProcessor`
(azure-webjobs-sdk, Microsoft.Azure.WebJobs.Extensions.Storage.Queues) and the
"Poison messages" section of learn.microsoft.com's queue trigger reference:

- a message is received with an initial invisibility (the host uses 10 minutes) that is renewed
  every half of it while the function runs, so a long function keeps its message;
- success deletes the message;
- an exception on a queue that has a poison queue (`<queue>-poison`; a poison queue has none of
  its own) makes the message visible again after host.json's `visibilityTimeout`, or, once its
  dequeue count has reached `maxDequeueCount`, copies it to the poison queue and deletes it; on a
  poison queue a failed message stays invisible until its invisibility runs out;
- a message received with a dequeue count above `maxDequeueCount` (its earlier holders died
  without finishing) goes to the poison queue without running, and so does a body that is not
  valid base64 when `messageEncoding` is base64;
- an idle listener polls again after a randomised exponential back-off, from 100 ms up to
  `maxPollingInterval`.

A killed instance leaves its message invisible until its invisibility runs out, then another
instance gets it with a higher dequeue count: `QueueHost.kill_worker` reproduces that, and starts
a replacement instance as Azure would.

Usage::

    bindings = {queue: "function_app:model_task", f"{queue}-poison": "function_app:poison_task"}
    with QueueHost(connection_string, bindings, work_root=tmp, environ=settings, workers=2,
                   visibility_seconds=2) as host:
        ...  # send base64 messages to `queue`
        host.wait_until_idle(timeout=30)

Each function is called as the Python worker calls it, with an `azure.functions.queue.QueueMessage`
(the worker's class, which carries the dequeue count) as its only argument. Instances log to
`<work_root>/instance-<n>/worker.log`; their WORK_DIR is `<work_root>/instance-<n>/work`.

Where it differs from the host: an instance runs one message at a time across all its queues
(the host runs a listener per function, so one task and one poison message could overlap), and
a function that kills its process kills the instance, which QueueHost replaces while it waits.

Run as `python -m devkit.queue_host CONFIG` it is one instance (QueueHost starts them so).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.functions.queue import QueueMessage as FunctionMessage
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST_JSON = REPO_ROOT / "host.json"
POISON_SUFFIX = "-poison"
# The host receives every message invisible for 10 minutes and renews that while it runs.
HOST_VISIBILITY_SECONDS = 600
MIN_POLLING_SECONDS = 0.1  # the host's QueuePollingIntervals.Minimum
STATUS_FILE = "status.json"
_POLL_SECONDS = 0.05
_LOG_TAIL_CHARS = 3000
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)$")


class QueueHostError(RuntimeError):
    """The harness was configured in a way it cannot honour, or a wait timed out."""


def parse_timespan(text: str) -> float:
    """Seconds in a host.json TimeSpan such as "00:00:10", "00:00:00.5" or "1.00:00:00"."""
    match = _TIMESPAN.match(text.strip())
    if not match:
        raise QueueHostError(f"host.json TimeSpan {text!r} is not [d.]hh:mm:ss[.fff]")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueSettings:
    """host.json `extensions.queues`, with the host's defaults for what it leaves out."""

    batch_size: int = 16
    # The host's default is batchSize / 2 per vCPU; any value makes more than one at a time.
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    # `visibilityTimeout`: how long a failed message waits; Queue Storage counts whole seconds.
    retry_delay_seconds: float = 0.0
    max_polling_seconds: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Path) -> QueueSettings:
        """Read `extensions.queues` from the host.json at `path`."""
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        defaults = cls()
        settings = cls(
            batch_size=int(queues.get("batchSize", defaults.batch_size)),
            new_batch_threshold=(
                int(queues["newBatchThreshold"]) if "newBatchThreshold" in queues else None
            ),
            max_dequeue_count=int(queues.get("maxDequeueCount", defaults.max_dequeue_count)),
            retry_delay_seconds=parse_timespan(queues.get("visibilityTimeout", "00:00:00")),
            max_polling_seconds=parse_timespan(queues.get("maxPollingInterval", "00:01:00")),
            message_encoding=str(queues.get("messageEncoding", defaults.message_encoding)).lower(),
        )
        settings.check(path)
        return settings

    def check(self, path: Path) -> None:
        """Raise QueueHostError for settings this harness does not reproduce."""
        if self.batch_size != 1 or self.new_batch_threshold != 0:
            raise QueueHostError(
                f"{path}: extensions.queues has batchSize {self.batch_size} and newBatchThreshold "
                f"{self.new_batch_threshold if self.new_batch_threshold is not None else '(unset)'}"
                "; this harness runs one message at a time per instance, which is what batchSize "
                "1 and newBatchThreshold 0 mean: set those two"
            )
        if self.message_encoding not in ("base64", "none"):
            raise QueueHostError(
                f"{path}: extensions.queues.messageEncoding {self.message_encoding!r} is neither "
                "'base64' nor 'none'"
            )
        if self.max_dequeue_count < 1:
            raise QueueHostError(f"{path}: extensions.queues.maxDequeueCount must be at least 1")


@dataclass(frozen=True)
class Busy:
    """A worker handling a message (in its function, or moving it to the poison queue)."""

    slot: int
    pid: int
    instance: str
    queue: str
    message_id: str
    dequeue_count: int
    body: str


class QueueHost:
    """N instances, each a process running the bound functions one message at a time.

    `bindings` maps a queue name to the function that queue triggers, as "module:attribute"
    (attribute: what the FunctionApp's decorators returned). `environ` is laid over this
    process's environment for every instance, and each instance gets its own WORK_DIR.
    `visibility_seconds` is the invisibility on receipt (the host's 10 minutes by default);
    `max_dequeue_count`, `retry_delay_seconds` and `max_polling_seconds` override host.json.
    """

    def __init__(
        self,
        connection_string: str,
        bindings: Mapping[str, str],
        *,
        work_root: Path,
        environ: Mapping[str, str] | None = None,
        workers: int = 2,
        host_json: Path = HOST_JSON,
        visibility_seconds: int = HOST_VISIBILITY_SECONDS,
        max_dequeue_count: int | None = None,
        retry_delay_seconds: float | None = None,
        max_polling_seconds: float | None = None,
    ) -> None:
        overrides = {
            "max_dequeue_count": max_dequeue_count,
            "retry_delay_seconds": retry_delay_seconds,
            "max_polling_seconds": max_polling_seconds,
        }
        self.settings = replace(
            QueueSettings.from_host_json(host_json),
            **{name: value for name, value in overrides.items() if value is not None},
        )
        # Queue Storage counts visibility in whole seconds, and a received message needs one.
        if visibility_seconds < 1 or self.settings.retry_delay_seconds < 0:
            raise QueueHostError("visibility_seconds must be >= 1 and the retry delay >= 0")
        self.connection_string = connection_string
        self.bindings = dict(bindings)
        self.work_root = work_root
        self.environ = dict(environ or {})
        self.workers = workers
        self.visibility_seconds = int(visibility_seconds)
        self._instances: list[_Instance] = []
        self._serial = 0
        self._service = QueueServiceClient.from_connection_string(connection_string)

    def start(self) -> QueueHost:
        """Start the instances."""
        if self._instances:
            raise QueueHostError("the queue host is already running")
        self.work_root.mkdir(parents=True, exist_ok=True)
        try:
            for slot in range(self.workers):
                self._instances.append(self._spawn(slot))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every instance and everything it started; their folders and logs stay."""
        for instance in self._instances:
            instance.kill()
        self._instances = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def busy(self) -> list[Busy]:
        """The workers handling a message right now (running its function, or poisoning it)."""
        found = []
        for instance in self._instances:
            status = instance.status()
            if status.get("state") == "busy" and instance.process.poll() is None:
                found.append(
                    Busy(
                        slot=instance.slot,
                        pid=instance.process.pid,
                        instance=instance.directory.name,
                        queue=status["queue"],
                        message_id=status["message_id"],
                        dequeue_count=status["dequeue_count"],
                        body=status["body"],
                    )
                )
        return found

    def wait_until_busy(self, timeout: float, count: int = 1) -> list[Busy]:
        """Wait until at least `count` workers are handling a message; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._replace_dead_instances()
            busy = self.busy()
            if len(busy) >= count:
                return busy
            time.sleep(_POLL_SECONDS)
        raise QueueHostError(
            f"fewer than {count} workers were busy within {timeout} s\n{self._describe()}"
        )

    def wait_until_idle(self, timeout: float) -> None:
        """Wait until every bound queue is empty (invisible messages count) and no worker is busy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._replace_dead_instances()
            # Workers first, queues second: a message only moves (queue to poison queue) while a
            # worker is busy, so idle workers followed by empty queues cannot miss one in flight.
            if not self.busy() and all(count == 0 for count in self.queue_lengths().values()):
                return
            time.sleep(_POLL_SECONDS)
        raise QueueHostError(f"the queues did not drain within {timeout} s\n{self._describe()}")

    def queue_lengths(self) -> dict[str, int]:
        """Each bound queue's message count, invisible messages included (0 when it is missing)."""
        lengths = {}
        for name in self.bindings:
            try:
                properties = self._service.get_queue_client(name).get_queue_properties()
                lengths[name] = properties.approximate_message_count
            except ResourceNotFoundError:
                lengths[name] = 0
        return lengths

    def kill_worker(self, slot: int) -> None:
        """SIGKILL the instance in `slot` and all its processes; start a new instance there."""
        instance = self._instances[slot]
        log.info("killing instance %s (pid %s)", instance.directory.name, instance.process.pid)
        instance.kill()
        self._instances[slot] = self._spawn(slot)

    def _replace_dead_instances(self) -> None:
        for instance in list(self._instances):
            if instance.process.poll() is not None:
                log.warning(
                    "instance %s exited with code %s; starting another",
                    instance.directory.name,
                    instance.process.returncode,
                )
                instance.kill()
                self._instances[instance.slot] = self._spawn(instance.slot)

    def _spawn(self, slot: int) -> _Instance:
        self._serial += 1
        directory = self.work_root / f"instance-{self._serial}"
        work_dir = directory / "work"
        work_dir.mkdir(parents=True)
        config = directory / "config.json"
        config.write_text(
            json.dumps(
                {
                    "connection_string": self.connection_string,
                    "bindings": self.bindings,
                    "settings": asdict(self.settings),
                    "visibility_seconds": self.visibility_seconds,
                    "status_file": str(directory / STATUS_FILE),
                }
            )
        )
        environment = {**os.environ, **self.environ, "WORK_DIR": str(work_dir)}
        # The child keeps its own copy of the log's descriptor; ours can close at once.
        with open(directory / "worker.log", "ab") as log_file:
            # A session of its own, like a machine of its own: a Ctrl-C for the tests misses it.
            process = subprocess.Popen(
                [sys.executable, "-m", "devkit.queue_host", str(config)],
                cwd=REPO_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("instance %s started (pid %s) in slot %s", directory.name, process.pid, slot)
        return _Instance(slot=slot, directory=directory, process=process)

    def _describe(self) -> str:
        lines = [f"queue lengths: {self.queue_lengths()}", f"busy: {self.busy()}"]
        for instance in self._instances:
            text = (instance.directory / "worker.log").read_text(errors="replace")
            lines.append(f"--- {instance.directory.name} log tail:\n{text[-_LOG_TAIL_CHARS:]}")
        return "\n".join(lines)


@dataclass(eq=False)
class _Instance:
    slot: int
    directory: Path
    process: subprocess.Popen[bytes]

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.directory / STATUS_FILE).read_text())
        except FileNotFoundError:
            return {}

    def kill(self) -> None:
        # Only while unreaped: a reaped pid may already belong to someone else.
        if self.process.poll() is None:
            _kill_tree(self.process.pid)
        self.process.wait()


def _kill_tree(root: int) -> None:
    """SIGKILL `root` and every process descended from it, as when its machine goes away."""
    # Stop first, kill after: a stopped process cannot fork, and its children stay its children
    # (a killed parent's children are handed to init and can no longer be found from `root`).
    # Model workers call setsid, so the process group alone would miss them.
    stopped: set[int] = set()
    while new := (_descendants(root) | {root}) - stopped:
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        stopped |= new
    for pid in stopped:
        _signal(pid, signal.SIGKILL)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name may hold spaces and parentheses; the fields after its last ")" don't.
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found: set[int] = set()
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already gone


# --- One instance (runs in its own process) ---------------------------------------------------


class _Status:
    """What this instance is doing, in a file its QueueHost reads."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def write(self, **fields: object) -> None:
        partial = self._path.with_suffix(".partial")
        partial.write_text(json.dumps(fields))
        os.replace(partial, self._path)  # whole or not at all, for a reader at any moment


class _Renewal:
    """Keeps a message invisible while its function runs, as the host's renewal timer does."""

    def __init__(self, queue: QueueClient, message: QueueMessage, visibility_seconds: int) -> None:
        self._queue = queue
        self._message_id = message.id
        self.pop_receipt: str = message.pop_receipt
        self._visibility = visibility_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        # Halfway to expiring, like the host's timer.
        while not self._stopped.wait(self._visibility / 2):
            try:
                updated = self._queue.update_message(
                    self._message_id, self.pop_receipt, visibility_timeout=self._visibility
                )
            except AzureError as error:
                log.warning("could not keep message %s invisible: %s", self._message_id, error)
                return
            self.pop_receipt = updated.pop_receipt


class _Listener:
    """One bound queue of this instance: receive, run, then delete, release or poison."""

    def __init__(
        self,
        service: QueueServiceClient,
        queue_name: str,
        function: Callable[[FunctionMessage], object],
        settings: QueueSettings,
        visibility_seconds: int,
    ) -> None:
        self.queue = service.get_queue_client(queue_name)
        # The host gives a queue a poison queue unless it is one itself.
        self.poison = (
            None
            if queue_name.endswith(POISON_SUFFIX)
            else service.get_queue_client(queue_name + POISON_SUFFIX)
        )
        self.function = function
        self.settings = settings
        self.visibility = visibility_seconds

    def poll_once(self, status: _Status) -> bool:
        """Receive and handle one message; False when there was none to receive."""
        try:
            message = self.queue.receive_message(visibility_timeout=self.visibility)
        except ResourceNotFoundError:
            return False  # nobody created the queue yet: nothing to do, as for the host
        except AzureError as error:
            log.warning("could not receive from queue %s: %s", self.queue.queue_name, error)
            return False
        if message is None:
            return False
        # Busy from receipt to the end, poison moves included: wait_until_idle relies on it.
        status.write(
            state="busy",
            queue=self.queue.queue_name,
            message_id=message.id,
            dequeue_count=message.dequeue_count,
            body=self._shown(message.content),
        )
        try:
            self._handle(message, status)
        except AzureError:
            log.exception(
                "could not settle message %s on %s; it returns when its invisibility runs out",
                message.id,
                self.queue.queue_name,
            )
        finally:
            status.write(state="idle")
        return True

    def _shown(self, content: str) -> str:
        """The body as busy() reports it from receipt on: decoded, as the function gets it
        (or as it came, when it is not valid base64), so no caller sees it change."""
        try:
            return self._decode(content).decode("utf-8", errors="replace")
        except ValueError:
            return content

    def _handle(self, message: QueueMessage, status: _Status) -> None:
        name, count = self.queue.queue_name, message.dequeue_count
        if count > self.settings.max_dequeue_count:
            log.warning(
                "message %s on %s was dequeued %d times, more than maxDequeueCount %d: "
                "earlier holders never finished it",
                message.id,
                name,
                count,
                self.settings.max_dequeue_count,
            )
            self._to_poison(message, message.pop_receipt)
            return
        try:
            body = self._decode(message.content)
        except ValueError:
            log.warning("message %s on %s is not valid base64", message.id, name)
            self._to_poison(message, message.pop_receipt)
            return
        status.write(
            state="busy",
            queue=name,
            message_id=message.id,
            dequeue_count=count,
            body=body.decode("utf-8", errors="replace"),
        )
        log.info("running message %s from %s (dequeue count %d)", message.id, name, count)
        with _Renewal(self.queue, message, self.visibility) as renewal:
            succeeded = self._run(message, body)
        if succeeded:
            self._delete(message.id, renewal.pop_receipt)
        elif self.poison is None:
            pass  # the host leaves it invisible: no fast loop on a failing poison queue
        elif count >= self.settings.max_dequeue_count:
            self._to_poison(message, renewal.pop_receipt)
        else:
            self._release(message.id, renewal.pop_receipt)

    def _run(self, message: QueueMessage, body: bytes) -> bool:
        try:
            self.function(
                FunctionMessage(
                    id=message.id,
                    body=body,
                    dequeue_count=message.dequeue_count,
                    expiration_time=message.expires_on,
                    insertion_time=message.inserted_on,
                    time_next_visible=message.next_visible_on,
                    pop_receipt=message.pop_receipt,
                )
            )
        except Exception:
            log.exception(
                "function for queue %s failed on message %s (dequeue count %d)",
                self.queue.queue_name,
                message.id,
                message.dequeue_count,
            )
            return False
        log.info("message %s from %s succeeded", message.id, self.queue.queue_name)
        return True

    def _decode(self, content: str) -> bytes:
        if self.settings.message_encoding == "none":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content, validate=True)
        except binascii.Error as error:
            raise ValueError(str(error)) from error

    def _to_poison(self, message: QueueMessage, pop_receipt: str) -> None:
        if self.poison is None:
            return  # a poison queue has no poison queue; the message stays invisible
        log.warning(
            "message %s reached maxDequeueCount %d; moving it to %s",
            message.id,
            self.settings.max_dequeue_count,
            self.poison.queue_name,
        )
        try:
            self.poison.send_message(message.content)
        except ResourceNotFoundError:
            try:
                self.poison.create_queue()
            except ResourceExistsError:
                pass  # another instance created it first
            self.poison.send_message(message.content)
        self._delete(message.id, pop_receipt)

    def _release(self, message_id: str, pop_receipt: str) -> None:
        try:
            self.queue.update_message(
                message_id, pop_receipt, visibility_timeout=int(self.settings.retry_delay_seconds)
            )
        except (ResourceNotFoundError, HttpResponseError) as error:
            log.info(
                "message %s was not released (someone else holds it, or it is gone): %s",
                message_id,
                error,
            )

    def _delete(self, message_id: str, pop_receipt: str) -> None:
        try:
            self.queue.delete_message(message_id, pop_receipt)
        except (ResourceNotFoundError, HttpResponseError) as error:
            log.info(
                "message %s was not deleted (someone else holds it, or it is gone): %s",
                message_id,
                error,
            )


def _load_function(target: str) -> Callable[[FunctionMessage], object]:
    """The user function behind "module:attribute", as the Python worker finds it."""
    module_name, _, attribute = target.partition(":")
    builder = getattr(importlib.import_module(module_name), attribute)
    return builder.build().get_user_function()


class _Backoff:
    """The host's randomised exponential back-off between empty polls."""

    def __init__(self, maximum: float) -> None:
        self._maximum = max(maximum, MIN_POLLING_SECONDS)
        self._delay = MIN_POLLING_SECONDS

    def reset(self) -> None:
        self._delay = MIN_POLLING_SECONDS

    def sleep(self) -> None:
        time.sleep(self._delay * random.uniform(0.8, 1.2))
        self._delay = min(self._delay * 2, self._maximum)


def run_instance(config_path: Path) -> None:
    """One instance's loop: poll the bound queues in turn, one message at a time, forever."""
    config = json.loads(config_path.read_text())
    settings = QueueSettings(**config["settings"])
    service = QueueServiceClient.from_connection_string(config["connection_string"])
    listeners = [
        _Listener(service, queue, _load_function(target), settings, config["visibility_seconds"])
        for queue, target in config["bindings"].items()
    ]
    status = _Status(Path(config["status_file"]))
    status.write(state="idle")
    backoff = _Backoff(settings.max_polling_seconds)
    log.info("instance ready: queues %s", ", ".join(config["bindings"]))
    while True:
        # Every queue gets its turn, so a busy task queue does not starve its poison queue.
        found = [listener.poll_once(status) for listener in listeners]
        if any(found):
            backoff.reset()
        else:
            backoff.sleep()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("azure").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    run_instance(Path(sys.argv[1]))
