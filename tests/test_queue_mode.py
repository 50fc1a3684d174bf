"""Queue mode (MODEL_EXECUTION=queue) against Azurite's queue and blob services and the Numerai sandbox.

Here the tests deliver the task queue's messages themselves, one at a time in this
process, through the functions in function_app.py; tests/test_queue_scaleout.py runs
them in worker processes that behave as the Functions host does.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage as FunctionMessage
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

import function_app
from devkit.azurite import free_port
from devkit.local_stack import LocalStack
from devkit.synthetic import SyntheticRound
from shared.errors import RunFailed
from shared.executors.queue import fanin
from shared.executors.queue.messages import BadTask, TaskMessage
from shared.executors.queue.plan import FanOutPlan
from shared.report import Execution, Mode, ModelReport, ModelStatus, RunReport, RunStatus
from shared.storage import Results
from shared.storage.archive import Archive
from shared.storage.container import Container
from shared.storage.ledger import Ledger
from shared.storage.lock import Locks
from shared.storage.page import PageStore
from shared.storage.run_records import RunRecords
from shared.triggers import runs_api
from tests.fakes import model as fake_model
from tests.support import (
    MODELS,
    deliver,
    fire_timer,
    line,
    post_test_run,
    reports,
    results,
    task_queue,
    uploads,
)


@pytest.fixture
def queue_mode(deployed: LocalStack, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    monkeypatch.setenv("MODEL_EXECUTION", "queue")
    return deployed


def get(route: str, run_id: str | None = None, params: dict | None = None) -> func.HttpResponse:
    request = func.HttpRequest(
        "GET",
        f"/api/{route}",
        body=b"",
        params=params or {},
        route_params={"run_id": run_id} if run_id else {},
    )
    function = function_app.run if run_id else function_app.runs
    return function.build().get_user_function()(request)


def test_a_scheduled_run_fans_out_and_the_last_task_writes_the_report(
    queue_mode: LocalStack,
) -> None:
    fire_timer()
    [planned] = reports(queue_mode)
    assert planned["status"] == "running" and planned["execution"] == "queue"
    assert uploads(queue_mode) == []  # the timer only planned

    assert deliver(queue_mode) == len(MODELS)

    [report] = reports(queue_mode)
    assert report["status"] == "succeeded", report
    assert {line(report, name)["status"] for name in MODELS} == {"submitted"}
    assert len(uploads(queue_mode)) == len(MODELS)
    assert sorted(s.model_name for s in queue_mode.sandbox.submissions) == sorted(MODELS)


def test_the_test_run_answers_202_and_the_runs_api_follows_it(queue_mode: LocalStack) -> None:
    answer = post_test_run()
    assert answer.status_code == 202
    accepted = json.loads(answer.get_body())
    assert answer.headers["Location"] == accepted["status_url"] == f"/api/runs/{accepted['run_id']}"

    running = json.loads(get("runs", accepted["run_id"]).get_body())
    assert running["finished"] is False
    deliver(queue_mode, limit=1)
    partial = json.loads(get("runs", accepted["run_id"]).get_body())
    assert partial["finished"] is False
    assert sum(m["status"] == "validated" for m in partial["report"]["models"]) == 1

    deliver(queue_mode)
    done = json.loads(get("runs", accepted["run_id"]).get_body())
    assert done["finished"] is True and done["report"]["status"] == "succeeded"
    assert {m["status"] for m in done["report"]["models"]} == {"validated"}
    assert uploads(queue_mode) == []

    listed = json.loads(get("runs").get_body())["runs"]
    assert [r["run_id"] for r in listed] == [accepted["run_id"]]
    assert listed[0]["models"] == {"validated": len(MODELS)}


def deliver_kind(stack: LocalStack, kind: str, poison: bool = False) -> int:
    """Deliver only the visible messages of one kind ("model" or "deadline"); the others stay hidden a minute."""
    queue, done = task_queue(stack, poison), 0
    function = function_app.poison_task if poison else function_app.model_task
    for message in list(queue.receive_messages(max_messages=32, visibility_timeout=60)):
        if json.loads(message.content)["kind"] != kind:
            continue
        function.build().get_user_function()(
            FunctionMessage(
                id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count
            )
        )
        queue.delete_message(message)
        done += 1
    return done


def test_a_failing_model_fails_the_fanned_out_run_and_the_others_are_submitted(
    queue_mode: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = tmp_path / "models"
    shutil.copytree(example_models, broken)
    (broken / "demo_onnx.onnx").write_bytes(b"not an onnx graph")
    queue_mode.deploy(broken, small_round)
    fire_timer()  # plans; the failure is only known when the tasks have run
    deliver(queue_mode)

    [report] = reports(queue_mode)
    assert report["status"] == "failed"
    assert report["reason"] == "1 of 4 models failed: demo_onnx"
    assert line(report, "demo_onnx")["error"].startswith("model 'demo_onnx'")
    assert sorted(s.model_name for s in queue_mode.sandbox.submissions) == sorted(
        set(MODELS) - {"demo_onnx"}
    )
    # The record the failed-run alert looks for (infra/app/alerts.bicep), written by the finishing task.
    [record] = [r for r in caplog.records if getattr(r, "run_status", None) == "failed"]
    assert (
        record.levelname == "ERROR"
        and record.mode == "scheduled"
        and record.run_id == report["run_id"]
    )


def test_two_scheduled_runs_at_once_submit_each_model_once(queue_mode: LocalStack) -> None:
    fire_timer()
    fire_timer()  # a second firing before any task ran: both plan every model
    assert deliver(queue_mode) == 2 * len(MODELS)

    first, second = reports(queue_mode)
    assert sorted(s.model_name for s in queue_mode.sandbox.submissions) == sorted(MODELS)
    assert first["status"] == "succeeded" and second["status"] == "nothing_to_do"
    assert {line(second, name)["status"] for name in MODELS} == {"already_submitted"}


def test_a_run_whose_tasks_never_run_is_reported_failed_at_its_deadline(
    queue_mode: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUN_DEADLINE_SECONDS", "1")
    monkeypatch.setattr("shared.executors.queue.fanout.DEADLINE_GRACE_SECONDS", 1)
    fire_timer()
    time.sleep(2.5)  # the deadline message becomes visible; the model tasks are never delivered
    assert deliver_kind(queue_mode, "deadline") == 1

    [report] = reports(queue_mode)
    assert report["status"] == "failed"
    for name in MODELS:
        assert "no result by the run's deadline" in line(report, name)["error"]
    assert uploads(queue_mode) == []
    # A task delivered after the deadline finds the run finished and changes nothing.
    deliver(queue_mode)
    assert reports(queue_mode) == [report] and uploads(queue_mode) == []


def test_a_poisoned_task_fails_its_model_and_the_run_still_finishes(queue_mode: LocalStack) -> None:
    fire_timer()
    # What the host does after maxDequeueCount failed deliveries: the message moves to <queue>-poison.
    queue = task_queue(queue_mode)
    poison = QueueClient.from_connection_string(
        queue_mode.azurite.connection_string,
        f"{queue_mode.task_queue}-poison",
        message_encode_policy=TextBase64EncodePolicy(),
    )
    poison.create_queue()
    for message in queue.receive_messages(max_messages=32, visibility_timeout=60):
        if json.loads(message.content).get("model") == "demo_onnx":
            poison.send_message(message.content)
            queue.delete_message(message)
        else:
            queue.update_message(message.id, pop_receipt=message.pop_receipt, visibility_timeout=0)

    assert deliver_kind(queue_mode, "model", poison=True) == 1
    deliver(queue_mode)

    [report] = reports(queue_mode)
    assert report["status"] == "failed"
    assert (
        "delivered 3 times (host.json maxDequeueCount) and never finished"
        in line(report, "demo_onnx")["error"]
    )
    assert sorted(s.model_name for s in queue_mode.sandbox.submissions) == sorted(
        set(MODELS) - {"demo_onnx"}
    )


def test_a_message_that_is_not_a_task_is_dropped_with_an_error(
    queue_mode: LocalStack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    function_app.model_task.build().get_user_function()(
        FunctionMessage(id="x", body=b"hello", dequeue_count=1)
    )
    assert "not a task message" in caplog.text


def test_an_unreachable_queue_fails_the_run_with_a_report_naming_it(
    queue_mode: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = queue_mode.azurite.connection_string.replace(
        str(queue_mode.azurite.queue_port), str(free_port())
    )
    monkeypatch.setenv("AzureWebJobsStorage", dead)
    with pytest.raises(RunFailed):
        fire_timer()
    [report] = reports(queue_mode)
    assert report["status"] == "failed"
    assert f"could not send to the task queue '{queue_mode.task_queue}'" in report["reason"]
    assert uploads(queue_mode) == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not a task message"),
        (b'{"kind": "model", "run_id": "r", "round_number": 1}', "not a task message"),  # no model
        (
            b'{"kind": "deadline", "run_id": "r", "round_number": 1, "model": "m"}',
            "not a task message",
        ),
        (
            b'{"kind": "model", "run_id": "r", "round_number": 1, "model": "m", "extra": 1}',
            "not a task message",
        ),
    ],
)
def test_task_messages_that_are_not_ours_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(BadTask, match=why):
        TaskMessage.from_body(body)


def test_the_runs_api_refuses_what_it_cannot_answer(queue_mode: LocalStack) -> None:
    bad_id = get("runs", "../reports/x")
    assert bad_id.status_code == 400 and "not a run id" in json.loads(bad_id.get_body())["error"]
    unknown = get("runs", "20261128T120000123456Z-test-1a2b3c4d")
    assert (
        unknown.status_code == 404
        and "no run 20261128T120000123456Z-test-1a2b3c4d" in unknown.get_body().decode()
    )
    bad_limit = get("runs", params={"limit": "1000"})
    assert (
        bad_limit.status_code == 400
        and "limit must be a whole number from 1 to 100" in bad_limit.get_body().decode()
    )


@pytest.mark.parametrize("limit", ["²", "1²", "١٠"])
def test_a_limit_of_unicode_digits_is_answered_400_not_500(limit: str) -> None:
    answer = runs_api.list_runs({"limit": limit})
    assert answer.status == 400 and "limit must be a whole number" in answer.body


RUN = "20261128T120000123456Z-scheduled-1a2b3c4d"


@pytest.mark.parametrize(
    "fields",
    [
        {"run_id": "a/b"},
        {"run_id": ".."},
        {"run_id": ""},
        {"run_id": 5},
        {"model": "a/b"},
        {"model": ".."},
        {"model": 5},
        {"round_number": "1200"},
        {"round_number": True},
        {"entry_digest": ["x"]},
        {"kind": "deadline", "model": None, "run_id": "../reports/x"},
        {"kind": "run", "run_id": "a/b"},
    ],
)
def test_a_junk_message_is_dropped_with_its_reason_by_the_task_and_the_poison_queue(
    fields: dict, caplog: pytest.LogCaptureFixture
) -> None:
    raw = {"kind": "model", "run_id": RUN, "round_number": 1200, "model": "m", **fields}
    body = json.dumps(raw).encode()
    with pytest.raises(BadTask, match="not a task message"):
        TaskMessage.from_body(body)
    # Neither raises (a raise sends it round again, for ever on the poison queue); both say why.
    for function in (function_app.model_task, function_app.poison_task):
        caplog.clear()
        function.build().get_user_function()(FunctionMessage(id="x", body=body, dequeue_count=1))
        assert "not a task message" in caplog.text and "dropped" in caplog.text


def call_task(message: TaskMessage, dequeue_count: int = 1) -> None:
    function_app.model_task.build().get_user_function()(
        FunctionMessage(id="forged", body=message.to_json().encode(), dequeue_count=dequeue_count)
    )


def test_a_forged_message_with_another_digest_does_not_block_the_planned_model(
    queue_mode: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    fire_timer()
    [planned] = reports(queue_mode)
    call_task(TaskMessage("model", planned["run_id"], 0, "demo_onnx", "0123456789abcdef"))
    assert "not the one its run planned" in caplog.text and "dropped" in caplog.text

    deliver(queue_mode)
    [report] = reports(queue_mode)
    assert report["status"] == "succeeded", report
    assert line(report, "demo_onnx")["status"] == "submitted"


def test_the_runs_api_shows_a_report_of_a_newer_version_as_it_is(
    queue_mode: LocalStack,
) -> None:
    run_id = "20261128T120000123456Z-scheduled-1a2b3c4d"
    newer = {
        **json.loads(RunReport(run_id, Mode.SCHEDULED, "t").to_json()),
        "status": "paused",
        "cost_eur": 0.12,
    }
    newer["models"] = [{**json.loads(ModelReport("m").to_json()), "status": "queued"}]
    results(queue_mode).runs.write_report(run_id, json.dumps(newer))
    results(queue_mode).runs.write_report(RUN.replace("1a2b", "0000"), "{not json")

    listed = get("runs")
    assert listed.status_code == 200, listed.get_body()
    runs = json.loads(listed.get_body())["runs"]
    assert runs[0]["status"] == "paused" and runs[0]["models"] == {"queued": 1}
    assert "not a run report" in runs[1]["error"]
    one = get("runs", run_id)
    assert one.status_code == 200, one.get_body()
    assert json.loads(one.get_body())["report"] == newer


class CountingContainer(Container):
    """The real container, counting the blob reads and listings made through it."""

    reads = 0

    def download_optional(self, name: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().download_optional(name)

    def read(self, name: str, what: str) -> str:
        self.reads += 1
        return super().read(name, what)

    def names(self, prefix: str, what: str) -> list[str]:
        self.reads += 1
        return super().names(prefix, what)


@pytest.mark.parametrize("models", [10, 30])
def test_the_fan_in_reads_in_proportion_to_the_number_of_models(
    stack: LocalStack, models: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanin, "publish", lambda report, results, seconds: None)
    container = CountingContainer(
        Container.ensure(stack.blob_service, stack.results_container).client
    )
    store = Results(*(kind(container) for kind in (Ledger, Archive, RunRecords, PageStore, Locks)))
    specs = [fake_model(f"m{n:02d}") for n in range(models)]
    now = datetime.now(UTC)
    plan = FanOutPlan(
        RUN,
        Mode.SCHEDULED,
        1200,
        "v5.3",
        now.isoformat(),
        (now + timedelta(hours=1)).isoformat(),
        {s.name: s.model_dump(mode="json") for s in specs},
    )
    report = RunReport(RUN, Mode.SCHEDULED, now.isoformat(), execution=Execution.QUEUE)
    report.models = [ModelReport(s.name) for s in specs]
    store.runs.write_report(RUN, report.to_json())

    container.reads = 0
    for spec in specs:  # each task keeps its result, then looks whether the run is complete
        fanin.keep_result(store, plan, ModelReport(spec.name, status=ModelStatus.SUBMITTED))
        finished = fanin.finish_if_complete(store, plan, None)
    assert finished is not None and finished.status is RunStatus.SUCCEEDED
    # One listing per completion, and the results read once by the task that completes the set.
    assert container.reads <= 3 * models, container.reads
