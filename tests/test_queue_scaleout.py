"""Queue mode across instances: the app's queue functions run in worker processes that behave as
the Functions host does (devkit/queue_host.py), against Azurite and the Numerai sandbox.

Every model submitted once with two instances, the round's data downloaded once per
instance, an instance killed mid-task, and an instance killed by a model on every delivery.
"""

from __future__ import annotations

import json
import shutil
import time
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


def ranked(live):
    """A good model: only its instance's death makes it fail."""
    return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)


def wait_killing_each_instance_that_runs(
    host: QueueHost, queue: str, model: str, timeout: float
) -> None:
    """`host.wait_until_idle`, killing every instance as it starts `model`'s task: as running out
    of memory on Flex does. (A model cannot kill its instance itself: no process above its
    fork server is visible to it, see shared/worker/isolation.py.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = host.busy()
        for worker in busy:
            if (
                worker.queue == queue  # not its poison message, which the report needs
                and _model_of(worker.body) == model
                and worker.dequeue_count <= host.settings.max_dequeue_count  # not being poisoned
            ):
                host.kill_worker(worker.slot)
        if not busy and all(count == 0 for count in host.queue_lengths().values()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the queues did not drain within {timeout} s")


def _model_of(body: str) -> str | None:
    try:
        return json.loads(body).get("model")
    except ValueError:
        return None  # still base64: the instance has not decoded it yet


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
    (models / "killer.pkl").write_bytes(cloudpickle.dumps(ranked))
    (models / "models.json").write_text(json.dumps(manifest))
    deployed.deploy(models, small_round)

    fire_timer()
    wait_killing_each_instance_that_runs(host, deployed.task_queue, "killer", timeout=300)

    [report] = reports(deployed)
    assert report["status"] == "failed"
    assert report["reason"] == "1 of 5 models failed: killer"
    assert (
        "delivered 3 times (host.json maxDequeueCount) and never finished"
        in line(report, "killer")["error"]
    )
    assert submitted(deployed) == Counter(MODELS)
