"""Queue mode across instances: the app's queue functions run in worker processes that behave as
the Functions host does (devkit/queue_host.py), against Azurite and the Numerai sandbox.

Every model submitted once with two instances, the round's data downloaded once per
instance, an instance killed mid-task, and an instance killed by a model on every delivery.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from devkit.local_stack import LocalStack
from devkit.queue_host import QueueHost
from devkit.synthetic import SyntheticRound
from tests.support import MODELS, downloads, fire_timer, line, reports

WORKERS = 2
# Short, so that a killed instance's message comes back within seconds (the host uses 10 minutes).
VISIBILITY_SECONDS = 4


@pytest.fixture
def host(
    deployed: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[QueueHost]:
    monkeypatch.setenv("MODEL_EXECUTION", "queue")
    queue = deployed.task_queue
    bindings = {queue: "function_app:model_task", f"{queue}-poison": "function_app:poison_task"}
    with QueueHost(
        deployed.azurite.connection_string,
        bindings,
        work_root=tmp_path / "instances",
        workers=WORKERS,
        visibility_seconds=VISIBILITY_SECONDS,
        retry_delay_seconds=1,
    ) as running:
        yield running


def submitted(stack: LocalStack) -> Counter[str]:
    return Counter(s.model_name for s in stack.sandbox.submissions)


def test_two_instances_submit_every_model_once_and_download_the_data_once_each(
    deployed: LocalStack,
    host: QueueHost,
) -> None:
    fire_timer()
    host.wait_until_idle(timeout=180)

    [report] = reports(deployed)
    assert report["status"] == "succeeded", report
    assert submitted(deployed) == Counter(MODELS)
    # Four models on two instances: each instance downloads the live data at most once.
    assert 1 <= sum(d.endswith("/live.parquet") for d in downloads(deployed)) <= WORKERS


def test_an_instance_killed_mid_task_gives_its_message_back_and_the_model_is_submitted_once(
    deployed: LocalStack,
    host: QueueHost,
) -> None:
    fire_timer()
    [victim, *_] = host.wait_until_busy(timeout=60)
    host.kill_worker(victim.slot)
    host.wait_until_idle(timeout=240)

    [report] = reports(deployed)
    assert report["status"] == "succeeded", report
    assert submitted(deployed) == Counter(MODELS)
    assert json.loads(victim.body)["model"] in MODELS


def kill_the_instance(live):
    """A model whose every run kills the instance running it, as running out of memory on Flex does."""
    import os
    import signal

    pid = os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"devkit.queue_host" in cmdline.read():
                os.kill(pid, signal.SIGKILL)
                break
        with open(f"/proc/{pid}/stat") as stat:
            pid = int(stat.read().rsplit(")", 1)[1].split()[1])  # its parent
    raise SystemExit(1)


def test_a_model_that_kills_its_instance_every_time_is_poisoned_and_the_report_is_complete(
    deployed: LocalStack,
    host: QueueHost,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
) -> None:
    models = tmp_path / "fleet"
    shutil.copytree(example_models, models)
    manifest = json.loads((models / "models.json").read_text())
    manifest["models"].append(
        {"name": "killer", "file": "killer.pkl", "format": "numerai_pickle", "trust_pickle": True}
    )
    (models / "killer.pkl").write_bytes(cloudpickle.dumps(kill_the_instance))
    (models / "models.json").write_text(json.dumps(manifest))
    deployed.deploy(models, small_round)

    fire_timer()
    host.wait_until_idle(timeout=300)

    [report] = reports(deployed)
    assert report["status"] == "failed"
    assert report["reason"] == "1 of 5 models failed: killer"
    assert (
        "delivered 3 times (host.json maxDequeueCount) and never finished"
        in line(report, "killer")["error"]
    )
    assert submitted(deployed) == Counter(MODELS)
