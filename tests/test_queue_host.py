"""The queue host harness behaves as the Functions host documents it, against a real Azurite.

The functions are tests/queue_apps.py's; times are shortened (2 s invisibility on receipt, no
delay before a retry, polls at least every 0.5 s).
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient

from devkit.azurite import Azurite
from devkit.queue_host import QueueHost, QueueHostError, QueueSettings, parse_timespan

# Renewed at half of it: 4 s leaves a loaded machine (the suite in two workers) time to renew.
VISIBILITY_SECONDS = 4
HOST_QUEUES = {
    "batchSize": 1,
    "newBatchThreshold": 0,
    "maxDequeueCount": 3,
    "visibilityTimeout": "00:00:10",
    "messageEncoding": "base64",
}
FAST = {"retry_delay_seconds": 0, "max_polling_seconds": 0.5}


@pytest.fixture(autouse=True)
def _no_instance_left_behind(tmp_path: Path) -> Iterator[None]:
    """After each test, no process runs with this test's folder on its command line."""
    yield
    leftovers = [
        cmdline.parent.name
        for cmdline in Path("/proc").glob("[0-9]*/cmdline")
        if str(tmp_path).encode() in _read(cmdline)
    ]
    assert leftovers == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""  # the process ended while we looked


@pytest.fixture
def host_json(tmp_path: Path) -> Path:
    """A host.json with the queue settings issue 11 asks of the app's."""
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"version": "2.0", "extensions": {"queues": HOST_QUEUES}}))
    return path


@pytest.fixture
def queue(azurite: Azurite) -> QueueClient:
    """A fresh, empty task queue (its poison queue is left to the host to create)."""
    client = QueueClient.from_connection_string(
        azurite.connection_string, f"tasks-{uuid.uuid4().hex[:8]}"
    )
    client.create_queue()
    return client


@pytest.fixture
def records(tmp_path: Path) -> Path:
    directory = tmp_path / "records"
    directory.mkdir()
    return directory


def make_host(
    azurite: Azurite,
    queue: QueueClient,
    host_json: Path,
    records: Path,
    tmp_path: Path,
    workers: int = 2,
) -> QueueHost:
    return QueueHost(
        azurite.connection_string,
        {
            queue.queue_name: "tests.queue_apps:task",
            f"{queue.queue_name}-poison": "tests.queue_apps:poison",
        },
        work_root=tmp_path / "instances",
        environ={"TASK_QUEUE": queue.queue_name, "RECORD_DIR": str(records)},
        workers=workers,
        host_json=host_json,
        visibility_seconds=VISIBILITY_SECONDS,
        **FAST,
    )


@pytest.fixture
def host(
    azurite: Azurite, queue: QueueClient, host_json: Path, records: Path, tmp_path: Path
) -> Iterator[QueueHost]:
    with make_host(azurite, queue, host_json, records, tmp_path) as running:
        yield running


def send(queue: QueueClient, **plan: object) -> str:
    body = json.dumps({"name": uuid.uuid4().hex[:6], **plan})
    queue.send_message(base64.b64encode(body.encode()).decode())
    return body


def calls(records: Path) -> list[dict]:
    path = records / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_message_is_run_once_and_deleted(
    host: QueueHost, queue: QueueClient, records: Path
) -> None:
    body = send(queue)

    host.wait_until_idle(timeout=20)

    assert [(c["function"], c["event"], c["body"], c["dequeue_count"]) for c in calls(records)] == [
        ("task", "start", body, 1),
        ("task", "done", body, 1),
    ]
    assert host.queue_lengths() == {queue.queue_name: 0, f"{queue.queue_name}-poison": 0}


def test_a_message_failing_twice_succeeds_on_its_third_delivery(
    host: QueueHost, queue: QueueClient, records: Path
) -> None:
    body = send(queue, fail_times=2)

    host.wait_until_idle(timeout=20)

    assert [(c["event"], c["dequeue_count"]) for c in calls(records) if c["body"] == body] == [
        ("start", 1),
        ("fail", 1),
        ("start", 2),
        ("fail", 2),
        ("start", 3),
        ("done", 3),
    ]
    assert not [c for c in calls(records) if c["function"] == "poison"]


def test_a_message_failing_max_dequeue_count_times_goes_to_the_poison_function(
    host: QueueHost, queue: QueueClient, records: Path
) -> None:
    body = send(queue, fail_times=99)

    host.wait_until_idle(timeout=20)

    task_calls = [c for c in calls(records) if c["function"] == "task"]
    assert [c["dequeue_count"] for c in task_calls if c["event"] == "fail"] == [1, 2, 3]
    poisoned = [c for c in calls(records) if c["function"] == "poison"]
    assert [(c["body"], c["dequeue_count"]) for c in poisoned] == [(body, 1)]


def test_a_message_dequeued_more_than_max_dequeue_count_goes_to_poison_without_running(
    azurite: Azurite, queue: QueueClient, host_json: Path, records: Path, tmp_path: Path
) -> None:
    body = send(queue)
    for _ in range(3):  # three holders that died: each receipt counts
        held = queue.receive_message(visibility_timeout=30)
        queue.update_message(held, visibility_timeout=0)

    with make_host(azurite, queue, host_json, records, tmp_path, workers=1) as host:
        host.wait_until_idle(timeout=20)

    assert [(c["function"], c["body"]) for c in calls(records)] == [("poison", body)]


def test_a_message_that_is_not_base64_goes_to_the_poison_queue_without_running(
    azurite: Azurite, queue: QueueClient, host_json: Path, records: Path, tmp_path: Path
) -> None:
    queue.send_message("{not base64}")
    only_tasks = QueueHost(
        azurite.connection_string,
        {queue.queue_name: "tests.queue_apps:task"},
        work_root=tmp_path / "instances",
        environ={"TASK_QUEUE": queue.queue_name},
        workers=1,
        host_json=host_json,
        visibility_seconds=VISIBILITY_SECONDS,
        **FAST,
    )

    with only_tasks:
        only_tasks.wait_until_idle(timeout=20)

    poison = QueueClient.from_connection_string(
        azurite.connection_string, f"{queue.queue_name}-poison"
    )
    assert [m.content for m in poison.peek_messages(max_messages=5)] == ["{not base64}"]
    assert calls(records) == []


def test_a_killed_worker_s_message_returns_after_its_invisibility_and_another_completes_it(
    host: QueueHost, queue: QueueClient, records: Path
) -> None:
    body = send(queue, hang_first=True)
    [busy] = host.wait_until_busy(timeout=20)
    hanging = _wait_for(lambda: [c for c in calls(records) if c["event"] == "hanging"])

    host.kill_worker(busy.slot)
    host.wait_until_idle(timeout=20)

    assert not alive(busy.pid) and not alive(hanging[0]["child"])  # its whole tree went
    [done] = [c for c in calls(records) if c["event"] == "done"]
    assert (done["body"], done["dequeue_count"]) == (body, 2)
    assert done["work_dir"] != hanging[0]["work_dir"]  # another instance
    assert len(host.busy()) == 0 and len(os.listdir(host.work_root)) == 3  # a replacement


def test_two_workers_run_two_messages_at_once(
    host: QueueHost, queue: QueueClient, records: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first, second = send(queue, gate=str(gate)), send(queue, gate=str(gate))

    busy = host.wait_until_busy(timeout=20, count=2)
    gate.touch()
    host.wait_until_idle(timeout=20)

    assert sorted(b.body for b in busy) == sorted([first, second])
    assert len({b.pid for b in busy}) == 2
    done = [c for c in calls(records) if c["event"] == "done"]
    assert sorted(c["body"] for c in done) == sorted([first, second])
    assert len({c["work_dir"] for c in done}) == 2


def test_a_function_longer_than_the_invisibility_keeps_its_message(
    host: QueueHost, queue: QueueClient, records: Path
) -> None:
    body = send(queue, seconds=VISIBILITY_SECONDS * 1.5)  # renewed twice meanwhile

    host.wait_until_idle(timeout=20)

    assert [(c["event"], c["dequeue_count"]) for c in calls(records) if c["body"] == body] == [
        ("start", 1),
        ("done", 1),
    ]


def test_stop_leaves_no_process_behind(
    azurite: Azurite, queue: QueueClient, host_json: Path, records: Path, tmp_path: Path
) -> None:
    host = make_host(azurite, queue, host_json, records, tmp_path).start()
    send(queue, hang_first=True)
    host.wait_until_busy(timeout=20)
    hanging = _wait_for(lambda: [c for c in calls(records) if c["event"] == "hanging"])
    pids = [instance.process.pid for instance in host._instances]

    host.stop()

    # SIGKILL acts at once, but a loaded machine may take a moment to tear a process down.
    leftover = [*pids, hanging[0]["child"]]
    _wait_for(lambda: [True] if not any(alive(pid) for pid in leftover) else [], timeout=10)


# --- Settings ------------------------------------------------------------------------------


def test_settings_come_from_host_json_with_the_host_s_defaults(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text(
        json.dumps(
            {
                "extensions": {
                    "queues": {
                        "batchSize": 1,
                        "newBatchThreshold": 0,
                        "visibilityTimeout": "00:00:10",
                    }
                }
            }
        )
    )

    settings = QueueSettings.from_host_json(path)

    assert settings == QueueSettings(
        batch_size=1,
        new_batch_threshold=0,
        max_dequeue_count=5,
        retry_delay_seconds=10.0,
        max_polling_seconds=60.0,
        message_encoding="base64",
    )
    assert parse_timespan("1.02:03:04.5") == 86400 + 2 * 3600 + 3 * 60 + 4.5


def test_settings_that_run_several_messages_per_instance_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"version": "2.0"}))

    with pytest.raises(QueueHostError, match="batchSize 16 and newBatchThreshold \\(unset\\)"):
        QueueSettings.from_host_json(path)


def _wait_for(probe: Callable[[], list[dict]], timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.02)
    raise AssertionError(f"nothing within {timeout} s")
